"""``gan-audit plan``: how many images each group needs, from a config's labelled images.

It reads images (their labels), so it sits beside the pipeline, not in
:mod:`audit.measure` (which never loads images): the arithmetic is
:mod:`audit.measure.power`'s.
"""

from __future__ import annotations

from typing import Any

__all__ = ["config_to_plan"]


def config_to_plan(config: Any) -> dict[str, Any]:
    """The plan of an audit config (a path or an :class:`~audit.config.AuditConfig`): group
    shares of its real images' labels (of the paired images where the real ones have
    none), the test family and level, and :func:`plan_rows`.

    Raises :class:`~audit.errors.DataError` when no image of either set is labelled.
    """
    from audit.concepts import load_concept_set
    from audit.config import AuditConfig, load_config
    from audit.errors import DataError
    from audit.images import load_images
    from audit.measure.power import (
        POWER,
        family_alpha,
        family_size,
        labels_to_shares,
        plan_rows,
    )

    cfg = config if isinstance(config, AuditConfig) else load_config(config)
    concept_set = load_concept_set(cfg.concept_set)
    wanted = [c.name for c in concept_set.protected]
    shares: dict[str, dict[str, float]] = {}
    used = {}
    for role, section in (("real", cfg.real), ("paired", cfg.paired)):
        labels = load_images(section, concept_set=concept_set).labels
        found = labels_to_shares(labels, concept_set)
        for name, value in found.items():
            if name not in shares:
                shares[name], used[name] = value, role
        if all(n in shares for n in wanted):
            break
    missing = [n for n in wanted if n not in shares]
    if missing:
        raise DataError(f"protected concept(s) {', '.join(missing)}: neither the real images "
                        f"({cfg.real.source}) nor the paired ones ({cfg.paired.source}) have "
                        f"labels for them, so their group shares are unknown and the plan "
                        f"cannot be made. Give real.labels (a CSV with an image column and a "
                        f"column per concept) or paired.labels.")
    n_gen = cfg.generator.n if cfg.generator is not None else None
    ratio = (cfg.real.n / n_gen) if (cfg.real.n and n_gen) else 1.0
    m = family_size(concept_set)
    rows = plan_rows(shares, settings=cfg.measure, n_tests=m, ratio=ratio)
    for r in rows:
        r["shares_from"] = used[r["concept"]]
    return {"config": cfg.name, "concept_set": concept_set.name, "n_tests": m,
            "alpha": family_alpha(cfg.measure.alpha, m), "power": POWER, "ratio": ratio,
            "audited": {"real": cfg.real.n, "generated": n_gen}, "rows": rows}
