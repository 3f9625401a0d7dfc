"""Safe YAML reading and pydantic validation with messages written for users.

Both the audit config and the concept sets are YAML validated by pydantic
models; this module turns parse and validation failures into one
:class:`~audit.errors.ConfigError` (or a subclass) whose message names the
file, the line/column or the field path, and the fix.

Configs and concept sets travel between people, so reading one is bounded: a file
holds at most :data:`MAX_YAML_BYTES`, its aliases (``*name``) may repeat at most
:data:`MAX_ALIAS_VALUES` values in all (an alias bomb of a few hundred bytes would
otherwise expand to gigabytes wherever the values are copied), and it may nest only
as deep as the parser can recurse.
"""

from __future__ import annotations

import difflib
import re
import types
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from audit.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: The largest config or concept set read, in bytes (the bundled ones are a few KiB).
MAX_YAML_BYTES = 1 << 20
#: How many values aliases (``*name``) may add to a file in all, counted as written out:
#: merge keys (``<<: *base``) in real files add tens; a bomb nesting nine aliases of the
#: level below in each of nine levels adds 9**9 (387 million) in 700 bytes.
MAX_ALIAS_VALUES = 10_000


def read_yaml(path: Path, *, error: type[ConfigError] = ConfigError) -> Any:
    """Parse a YAML file with a safe loader (no Python objects are built).

    Raises ``error`` naming the file, and the line and column of a syntax error; a file
    over :data:`MAX_YAML_BYTES` is refused unread (only that much plus one byte is read,
    so a device or a pipe cannot fill the memory either).
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError as exc:
        raise error(f"{path}: file not found. Check the path (relative paths resolve "
                    f"against the current folder).") from exc
    except IsADirectoryError as exc:
        raise error(f"{path}: is a folder, expected a YAML file.") from exc
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc}).") from exc
    _check_size(len(data), source=str(path), error=error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not a UTF-8 text file; save it as UTF-8 YAML.") from exc
    return parse_yaml(text, source=str(path), error=error)


def _check_size(n_bytes: int, *, source: str, error: type[ConfigError]) -> None:
    if n_bytes > MAX_YAML_BYTES:
        raise error(f"{source}: larger than {MAX_YAML_BYTES // (1 << 20)} MiB, the most a "
                    f"config or concept set may be (real ones are a few KiB). Check that this "
                    f"is the right file; keep long lists (labels, image ids) in CSV files.")


class _AliasBomb(yaml.YAMLError):
    """The aliases of a document expand to more than :data:`MAX_ALIAS_VALUES` values."""

    def __init__(self, extra: int) -> None:
        super().__init__(f"aliases expand to {extra} more values")
        self.extra = extra


def _alias_values(root: yaml.Node) -> int:
    """How many values the aliases of a composed document add when written out.

    The composer makes an alias the very node of its anchor, so the document is a graph;
    each node's written-out size (itself and everything under it) is computed once, without
    recursion, and the total is compared with the count of distinct nodes. A node that
    contains itself (an alias inside its own anchor) counts once; validation reports it.
    """
    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    size: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            size[key] = 1 + sum(size.get(id(child), 1) for child in children(node))
        elif key not in size and key not in open_:
            open_.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children(node))
    return size[id(root)] - len(size)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (the second would
    silently replace the first), and a document whose aliases expand to more than
    :data:`MAX_ALIAS_VALUES` values."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"the key {key!r} is given twice (first at line {first.start_mark.line + 1}); "
                    f"the second would silently replace the first", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_document(self, node: yaml.Node) -> Any:
        extra = _alias_values(node)  # before any value is built
        if extra > MAX_ALIAS_VALUES:
            raise _AliasBomb(extra)
        return super().construct_document(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _UniqueKeyLoader.construct_mapping)


def parse_yaml(text: str, *, source: str, error: type[ConfigError] = ConfigError) -> Any:
    """Parse YAML text safely (no Python objects); ``source`` names it in messages.

    A key given twice in one mapping is an error, not a silent replacement. The text is
    bounded like a file (:func:`read_yaml`): size, aliases and nesting.
    """
    # (a character takes at most 4 bytes in UTF-8: encode only when the count could matter)
    _check_size(len(text) if len(text) * 4 <= MAX_YAML_BYTES else len(text.encode("utf-8")),
                source=source, error=error)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _AliasBomb as exc:
        raise error(f"{source}: its aliases (*name) repeat {exc.extra:,} values when written "
                    f"out, more than the {MAX_ALIAS_VALUES:,} allowed: anchors that repeat "
                    f"other anchors multiply (a YAML 'billion laughs' bomb). Write the values "
                    f"out or use fewer aliases (merge keys such as '<<: *base' are fine)."
                    ) from exc
    except RecursionError as exc:
        raise error(f"{source}: the YAML nests too deeply (hundreds of levels of lists or "
                    f"mappings inside each other) to be read; a config needs a few. Check "
                    f"the file.") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        problem = exc.problem or str(exc)
        ctx, ctx_mark = exc.context, exc.context_mark
        if ctx and ctx_mark is not None and (mark is None or ctx_mark.line != mark.line):
            problem += f" ({ctx} that starts at line {ctx_mark.line + 1}, column " \
                       f"{ctx_mark.column + 1})"
        if "'\\t'" in problem:
            problem += "; YAML indents with spaces, never tabs"
        fix = "Fix the YAML syntax there (indentation, colons, quotes)."
        if "is given twice" in problem:
            fix = "Keep one of them."
        elif "could not determine a constructor" in problem:
            fix = ("Remove the '!' tag: files are read with safe loading, which builds no "
                   "Python objects.")
        raise error(f"{source}: malformed YAML at {where}: {problem}. {fix}") from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        before = text[:exc.position]
        where = f"line {before.count(chr(10)) + 1}, column {len(before.rpartition(chr(10))[2]) + 1}"
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise error(f"{source}: malformed YAML at {where}: {exc.reason} (character U+{char:04X}). "
                    f"Remove it, or save the file as plain UTF-8 text.") from exc
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise error(f"{source}: malformed YAML: {detail}.") from exc


class _Key(str):
    """A key of a free-form mapping (not a field name): shown as ``['key']``."""

    __slots__ = ()


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, _Key) or not re.fullmatch(r"[A-Za-z0-9_\-]+", str(item)):
            parts.append(f"[{str(item)!r}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """Strip ``Annotated`` and ``Optional``; return the bare type and its metadata."""
    meta: list[Any] = []
    while True:
        if get_origin(tp) is Annotated:
            tp, *extra = get_args(tp)
            for item in extra:  # Annotated[int, Field(ge=1)] holds its bounds in a FieldInfo
                meta.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif _is_union(tp) and sum(a is not type(None) for a in get_args(tp)) == 1:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp, meta


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tag_of(member: Any) -> str | None:
    """The ``type`` literal of a member of a discriminated union, if it has one."""
    member, _ = _unwrap(member)
    field = member.model_fields.get("type") if _is_model(member) else None
    if field is not None and get_origin(field.annotation) is Literal:
        return str(get_args(field.annotation)[0])
    return None


@dataclass
class _Where:
    """Where an error points in the model: path for users, type and constraints there."""

    path: list[Any] = dc_field(default_factory=list)
    tp: Any = None             # the type expected at ``path`` (None: unknown)
    meta: list[Any] = dc_field(default_factory=list)   # constraints (Ge, Lt, ...)
    parent: Any = None         # the type holding ``path[-1]``
    branch: bool = False       # the error is one branch of a union
    union_path: list[Any] = dc_field(default_factory=list)  # where that union is


def _locate(model: Any, loc: tuple[Any, ...]) -> _Where:
    """Follow a pydantic error location through ``model``, dropping union branch labels."""
    where = _Where(tp=model)
    for item in loc:
        if isinstance(item, str) and (item.startswith("function-") or item == "[key]"):
            continue
        tp, extra = _unwrap(where.tp)
        if _is_union(tp) and isinstance(item, str):  # a branch label, not a key
            where.branch, where.union_path = True, list(where.path)
            members = [m for m in get_args(tp) if _tag_of(m) == item]
            where.tp = _unwrap(members[0])[0] if members else None
            continue
        where.parent = tp
        where.path.append(item)
        if _is_model(tp) and isinstance(item, str) and item in tp.model_fields:
            field = tp.model_fields[item]
            where.tp, where.meta = field.annotation, list(field.metadata)
        elif get_origin(tp) in (list, tuple) and isinstance(item, int):
            args = [a for a in get_args(tp) if a is not Ellipsis]
            where.tp = args[min(item, len(args) - 1)] if args else None
            where.meta = []
        elif get_origin(tp) is dict and len(get_args(tp)) == 2:
            where.path[-1] = _Key(item)
            where.tp, where.meta = get_args(tp)[1], []
        else:
            where.tp, where.meta = None, []
    where.tp, extra = _unwrap(where.tp)
    where.meta = where.meta + extra
    return where


_PATTERNS = {
    r"^[A-Za-z][A-Za-z0-9_\-]*$": "must start with a letter and hold only letters, digits, "
                                  "'_' and '-'",
    r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$": "must start with a letter or digit and hold only "
                                     "letters, digits, '_', '.' and '-'",
}
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
_NUMBER_KINDS = {"int_type": "an integer", "int_parsing": "an integer",
                 "int_from_float": "an integer", "float_type": "a number",
                 "float_parsing": "a number", "finite_number": "a finite number",
                 "greater_than": None, "greater_than_equal": None, "less_than": None,
                 "less_than_equal": None}
_TYPE_KINDS = {"bool_type", "bool_parsing", "string_type", "list_type", "tuple_type",
               "dict_type", "model_type", "model_attributes_type", "path_type",
               "literal_error", "string_pattern_mismatch", "string_too_short",
               "union_tag_invalid", *_NUMBER_KINDS}


def _bounds(meta: list[Any], ctx: dict[str, Any]) -> str:
    parts = [f"{sym} {getattr(m, key)}" for m in meta for key, sym in _BOUNDS
             if getattr(m, key, None) is not None]
    if not parts:
        parts = [f"{sym} {ctx[key]}" for key, sym in _BOUNDS if key in ctx]
    return " and ".join(parts)


def _or_list(text: str) -> str:
    """``'a', 'b', 'c'`` -> ``'a', 'b' or 'c'``."""
    head, sep, last = text.rpartition(", ")
    return f"{head} or {last}" if sep else text


def _got(value: Any, kind: str) -> str:
    if kind not in _TYPE_KINDS:
        return "" if isinstance(value, (dict, list)) or value is None else f", got {value!r}"
    if value is None:
        return ", got an empty value"
    if isinstance(value, dict):
        return ", got a mapping"
    if isinstance(value, (list, tuple)):
        return f", got a list {value!r}" if len(repr(value)) < 60 else ", got a list"
    return f", got {value!r}"


def _message(err: Any, where: _Where) -> str:
    """The user-facing text of one pydantic error (without location and value)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    value = err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in _NUMBER_KINDS:
        noun = _NUMBER_KINDS[kind] or ("an integer" if where.tp is int else "a number")
        bounds = _bounds(where.meta, ctx)
        return f"must be {noun}" + (f" {bounds}" if bounds else "")
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind == "string_type":
        hint = ""
        if isinstance(value, bool):
            hint = (" (YAML reads yes, no, on, off, true and false as true/false: put the "
                    "text in quotes, e.g. \"no\")")
        elif isinstance(value, (int, float)):
            hint = " (put it in quotes to make it text)"
        return "must be text" + hint
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        return ("must be one of " if " or " in expected else "must be ") + expected
    if kind in ("list_type", "tuple_type", "set_type"):
        return "must be a list, e.g. [a, b]"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "must be a mapping of keys to values (indented 'key: value' lines or {key: value})"
    if kind == "path_type":
        return "must be a file or folder path (text)"
    if kind in ("too_short", "too_long"):
        bound = ("at least", ctx.get("min_length")) if kind == "too_short" else (
            "at most", ctx.get("max_length"))
        return f"must have {bound[0]} {bound[1]} item(s), got {ctx.get('actual_length')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return _PATTERNS.get(pattern, f"must match the pattern {pattern}")
    if kind == "union_tag_invalid":
        return f"must be one of {_or_list(str(ctx.get('expected_tags', '')))}"
    if kind == "union_tag_not_found":
        tags = [t for t in (_tag_of(m) for m in get_args(where.tp)) if t] if _is_union(
            where.tp) else []
        key = str(ctx.get("discriminator", "'type'"))
        choices = f" (one of {_or_list(', '.join(map(repr, tags)))})" if tags else ""
        return f"needs a {key} key{choices}"
    if kind == "recursion_loop":
        return "refers to itself (a YAML alias inside its own anchor); write the value out"
    return msg.replace("Input should be ", "must be ")


def describe_validation_error(exc: ValidationError, *, source: str,
                              model: type[BaseModel] | None = None) -> list[str]:
    """One line per problem: ``source: field.path: message, got VALUE``.

    With ``model`` (the model that was validated), messages use the field's type and
    constraints (``must be an integer >= 1, got 'ten'``), union branch labels are
    dropped from paths, and misspelled keys get the closest known key.
    """
    errors = exc.errors()
    locs = [tuple(e["loc"]) for e in errors]
    wheres = [_locate(model, loc) for loc in locs]
    # Where a union branch failed deeper inside (layers: [1] fails as a list of text),
    # the other branches' complaints about the whole value are noise.
    deep_unions = {_field_path(w.union_path) for w in wheres
                   if w.branch and len(w.path) > len(w.union_path)}
    lines: list[str] = []
    unions: dict[str, tuple[int, str]] = {}  # path -> (line index, got) of a union's error
    for err, loc, where in zip(errors, locs, wheres, strict=True):
        kind, ctx = err["type"], err.get("ctx") or {}
        # A list whose items all failed also reports "too short": noise, drop it.
        if kind == "too_short" and any(o[:len(loc)] == loc and len(o) > len(loc)
                                       for o in locs):
            continue
        path = _field_path(where.path)
        if where.branch and path in deep_unions and where.path == where.union_path:
            continue
        if not where.path:  # a model-level check; it may report several problems, one a line
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.extend(f"{source}: {line}" for line in msg.splitlines())
            continue
        if kind == "extra_forbidden":
            known = list(where.parent.model_fields) if _is_model(where.parent) else []
            close = difflib.get_close_matches(str(where.path[-1]), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            lines.append(f"{source}: {path}: unknown key ({hint}check its spelling; unknown "
                         f"keys are not ignored)")
        elif kind == "missing" and isinstance(where.path[-1], int) and get_origin(
                where.parent) is tuple:  # a fixed-length tuple given too few items
            n = len([a for a in get_args(where.parent) if a is not Ellipsis])
            value = err.get("input")
            got = f", got {len(value)}" if isinstance(value, (list, tuple)) else ""
            lines.append(f"{source}: {_field_path(where.path[:-1])}: must be a list of {n} "
                         f"items{got}")
        elif kind == "missing":
            lines.append(f"{source}: {path}: required field is missing")
        elif kind == "invalid_key":
            lines.append(f"{source}: {_field_path(where.path[:-1])}: the key "
                         f"{err.get('input')!r} is not text; keys are names (put it in quotes "
                         f"if it is one)")
        elif kind == "union_tag_invalid":
            key = str(ctx.get("discriminator", "'type'")).strip("'")
            lines.append(f"{source}: {path}.{key}: {_message(err, where)}, got "
                         f"{ctx.get('tag')!r}")
        elif where.branch and path in unions:  # another branch of the same union: "A or B"
            i, got = unions[path]
            head = lines[i].removesuffix(got)
            lines[i] = f"{head} or {_message(err, where).removeprefix('must be ')}{got}"
        else:
            got = _got(err.get("input"), kind)
            if where.branch:
                unions[path] = (len(lines), got)
            lines.append(f"{source}: {path}: {_message(err, where)}{got}")
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
        lines = describe_validation_error(exc, source=source, model=model)
        raise error("\n".join(lines)) from exc
