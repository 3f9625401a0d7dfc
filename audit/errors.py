"""One family of user-facing errors.

Every error a user can cause (a bad config, a missing file, a misspelled layer)
is an :class:`AuditError`. Its message says what is wrong, where, and how to fix
it. The CLI catches ``AuditError`` once, prints the message on stderr and exits
with code 2; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

__all__ = [
    "CHECK_PATH",
    "AuditError",
    "ConfigError",
    "ConceptSetError",
    "ModelLoadError",
    "LayerError",
    "DataError",
    "DependencyError",
    "RunFolderError",
    "ReviewError",
    "SigningError",
    "LabelError",
]


#: The fix to append to "file not found" messages about paths from a config.
CHECK_PATH = " Check the path: relative paths in a config resolve against the config's folder."


class AuditError(Exception):
    """Base of every error caused by user input; exit code 2 in the CLI.

    Catch it to handle any mistake in a config, a model, images or a run folder; its
    subclasses (:class:`ConfigError`, :class:`ModelLoadError`, :class:`LayerError`,
    :class:`DataError`...) say which kind.

    Examples
    --------
    >>> import audit
    >>> try:
    ...     audit.load_concept_set("no_such_set")
    ... except audit.AuditError as exc:
    ...     print(type(exc).__name__, exc.exit_code, exc)  # doctest: +ELLIPSIS
    ConceptSetError 2 concept set 'no_such_set' is neither a bundled set (...) nor an ...
    """

    exit_code = 2


class ConfigError(AuditError):
    """The audit configuration file is malformed or invalid."""


class ConceptSetError(ConfigError):
    """A concept set file is malformed or invalid."""


class ModelLoadError(AuditError):
    """A model spec does not resolve, or the weights do not fit the model."""


class LayerError(AuditError):
    """A requested layer does not exist or captured nothing."""


class DataError(AuditError):
    """Images or labels are missing, unreadable or inconsistent."""


class DependencyError(AuditError):
    """An optional dependency is missing; the message says what to install."""


class RunFolderError(AuditError):
    """A run folder is missing files, from another version, or not writable."""


class ReviewError(AuditError):
    """A review command names an unknown finding, status or reviewer."""


class SigningError(AuditError):
    """A key, certificate or PDF to sign with cannot be made or loaded (exists, wrong
    passphrase, not a PKCS#12 file), or a run cannot be signed."""


class LabelError(AuditError):
    """Labels of generated images (a labels file, an import, a row) are malformed or name an
    unknown image, concept or group."""
