"""gan-audit: fairness and bias audits of GANs through concept decoders.

The public front is the handful of names in ``__all__``; everything else may
change without notice. Names are imported lazily so that ``import audit`` (and
``gan-audit --help``) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from audit._version import __version__

__all__ = [
    "__version__",
    "AuditConfig",
    "AuditResults",
    "AuditError",
    "ConceptSet",
    "decode",
    "extract",
    "Finding",
    "load_concept_set",
    "load_config",
    "load_discriminator",
    "measure",
    "render_report",
    "run_audit",
    "train_decoders",
]

_LAZY = {
    "AuditConfig": ("audit.config", "AuditConfig"),
    "load_config": ("audit.config", "load_config"),
    "AuditError": ("audit.errors", "AuditError"),
    "AuditResults": ("audit.api.results", "AuditResults"),
    "Finding": ("audit.api.results", "Finding"),
    "ConceptSet": ("audit.concepts", "ConceptSet"),
    "load_concept_set": ("audit.concepts", "load_concept_set"),
    "load_discriminator": ("audit.load", "load_discriminator"),
    "extract": ("audit.extract", "extract"),
    "train_decoders": ("audit.decode", "train_decoders"),
    "decode": ("audit.decode", "decode"),
    "measure": ("audit.measure", "predictions_to_results"),
    "render_report": ("audit.report", "render_report"),
    "run_audit": ("audit.pipeline", "run_audit"),
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
