"""Safe YAML reading and pydantic validation with messages written for users.

Both the audit config and the concept sets are YAML validated by pydantic
models; this module turns parse and validation failures into one
:class:`~audit.errors.ConfigError` (or a subclass) whose message names the
file, the line/column or the field path, and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from audit.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path, *, error: type[ConfigError] = ConfigError) -> Any:
    """Parse a YAML file with ``yaml.safe_load`` (no Python objects are built).

    Raises ``error`` naming the file, and the line and column of a syntax error.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise error(f"{path}: file not found. Check the path (relative paths resolve "
                    f"against the current folder).") from exc
    except IsADirectoryError as exc:
        raise error(f"{path}: is a folder, expected a YAML file.") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a UTF-8 text file; save it as UTF-8 YAML.") from exc
    return parse_yaml(text, source=str(path), error=error)


def parse_yaml(text: str, *, source: str, error: type[ConfigError] = ConfigError) -> Any:
    """Parse YAML text; ``source`` names it in messages."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        problem = exc.problem or str(exc)
        raise error(f"{source}: malformed YAML at {where}: {problem}. "
                    f"Fix the YAML syntax there (indentation, colons, quotes).") from exc
    except yaml.YAMLError as exc:
        raise error(f"{source}: malformed YAML: {exc}.") from exc


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def describe_validation_error(exc: ValidationError, *, source: str) -> list[str]:
    """One line per problem: ``source: field.path: message, got VALUE``."""
    lines = []
    for err in exc.errors():
        # Model-level validators put no location; union branches add type tags.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        kind = err["type"]
        if not loc:  # a model-level check; it may report several problems, one a line
            lines.extend(f"{source}: {line}" for line in msg.splitlines())
            continue
        if kind == "extra_forbidden":
            msg = "unknown key (check its spelling; unknown keys are not ignored)"
            lines.append(f"{source}: {_field_path(loc)}: {msg}")
            continue
        if kind == "missing":
            lines.append(f"{source}: {_field_path(loc)}: required field is missing")
            continue
        got = err.get("input")
        got_text = "" if isinstance(got, (dict, list)) or got is None else f", got {got!r}"
        lines.append(f"{source}: {_field_path(loc)}: {msg}{got_text}")
    return lines


def validate(model: type[M], data: Any, *, source: str,
             error: type[ConfigError] = ConfigError, context: dict[str, Any] | None = None) -> M:
    """Validate ``data`` against ``model``; every problem goes into one error."""
    if data is None:
        raise error(f"{source}: the file is empty; see the README for an example.")
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping of keys to values at the top level, "
                    f"got {type(data).__name__}.")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        lines = describe_validation_error(exc, source=source)
        raise error("\n".join(lines)) from exc
