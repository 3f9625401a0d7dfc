"""gan-audit: fairness and bias audits of GANs through concept decoders.

The public front is the handful of names in ``__all__``; everything else may
change without notice. Names are imported lazily so that ``import audit`` (and
``gan-audit --help``) does not import torch.

docs/python-api.md runs the demo audit through these names, step by step; each name's
docstring has an example, and ``make docs`` builds this reference from them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from audit._version import __version__

__all__ = [
    "__version__",
    # load
    "load_config",
    "load_concept_set",
    "load_gan",
    "demo_config_path",
    # the stages, in memory
    "record_activations",
    "train_decoders",
    "measure_bias",
    # the whole audit into a run folder
    "run",
    # what they return
    "AuditConfig",
    "ConceptSet",
    "Gan",
    "Activations",
    "Decoders",
    "AuditResults",
    "Finding",
    "Severity",
    "Verdict",
    "AuditError",
]

_LAZY = {
    "load_config": ("audit.config", "load_config"),
    "load_concept_set": ("audit.concepts", "load_concept_set"),
    "load_gan": ("audit.api.front", "load_gan"),
    "demo_config_path": ("audit.api.front", "demo_config_path"),
    "record_activations": ("audit.api.front", "record_activations"),
    "train_decoders": ("audit.api.front", "train_decoders"),
    "measure_bias": ("audit.api.front", "measure_bias"),
    "run": ("audit.api.front", "run"),
    "AuditConfig": ("audit.config", "AuditConfig"),
    "ConceptSet": ("audit.concepts", "ConceptSet"),
    "Gan": ("audit.api.front", "Gan"),
    "Activations": ("audit.api.front", "Activations"),
    "Decoders": ("audit.api.front", "Decoders"),
    "AuditResults": ("audit.api.results", "AuditResults"),
    "Finding": ("audit.api.results", "Finding"),
    "Severity": ("audit.vocabulary", "Severity"),
    "Verdict": ("audit.vocabulary", "Verdict"),
    "AuditError": ("audit.errors", "AuditError"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'audit' has no attribute {name!r}") from None
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
