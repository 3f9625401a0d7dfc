"""Power: what each test could have detected, and how many images an audit needs.

A test that is not significant is evidence of no gap only if it could have detected a
gap of the size that matters. For every test the audit records the minimum detectable
effect (MDE) at 80% power, at the observed n and at the per-test level that the
multiple-testing correction in use demands (Holm never tests one hypothesis at more than
alpha / m, Bonferroni's level, so that level is the honest one for a single test); a
non-significant test whose MDE is larger than the policy's threshold says
"insufficient evidence", never "pass". :func:`plan_rows` turns the same arithmetic
around: the images an audit needs to detect the policy's gaps.

Effects are Cohen's h (``2 asin sqrt p1 - 2 asin sqrt p2``, statsmodels'
``proportion_effectsize``) for the two-sided z test of two proportions
(``NormalIndPower``) or of one against a constant (``ratio = 0``). Hand-written rather
than statsmodels (a test dependency only): a root of the power function of a few lines;
tests/test_measure_power.py checks it against ``NormalIndPower``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.config import MeasureSettings

__all__ = ["POWER", "power_z", "detectable_h", "lower_rate", "images_needed", "power_of_test",
           "family_alpha", "family_size", "plan_rows", "labels_to_shares",
           "describe"]

#: The power every minimum detectable effect and every sample size is computed for.
POWER = 0.8


def _n_eff(n1: float, n2: float | None) -> float:
    """The z test's effective n: n1 n2 / (n1 + n2), or n1 against a constant."""
    return n1 if n2 is None else 1.0 / (1.0 / n1 + 1.0 / n2)


def power_z(h: float, n1: float, n2: float | None, *, alpha: float) -> float:
    """Power of the two-sided z test of two proportions (``n2`` None: one against a
    constant) for Cohen's ``h``; ``NormalIndPower().power(h, n1, alpha, ratio=n2 / n1)``."""
    from scipy.stats import norm

    crit = norm.isf(alpha / 2.0)
    shift = h * math.sqrt(_n_eff(n1, n2))
    return float(norm.sf(crit - shift) + norm.cdf(-crit - shift))


def detectable_h(n1: float, n2: float | None, *, alpha: float, power: float = POWER) -> float:
    """The smallest Cohen's h that the test detects with ``power`` (NaN for empty sides);
    ``NormalIndPower().solve_power(None, n1, alpha, power, ratio=n2 / n1)``."""
    from scipy.optimize import brentq

    if n1 <= 0 or (n2 is not None and n2 <= 0):
        return math.nan
    hi = 1.0
    while power_z(hi, n1, n2, alpha=alpha) < power:
        hi *= 2.0
    return float(brentq(lambda h: power_z(h, n1, n2, alpha=alpha) - power, 0.0, hi,
                        xtol=1e-12))


def lower_rate(p: float, h: float) -> float:
    """The rate q < p that lies Cohen's ``h`` below ``p`` (0 when even q = 0 is nearer)."""
    angle = math.asin(math.sqrt(min(max(p, 0.0), 1.0))) - h / 2.0
    return math.sin(angle) ** 2 if angle > 0 else 0.0


def images_needed(p: float, q: float, *, alpha: float, power: float = POWER,
                  ratio: float | None = 1.0) -> float:
    """Images on side 1 for the z test to tell rates ``q`` and ``p`` apart with
    ``power`` (side 2 holds ``ratio`` times as many; None: ``p`` is a constant)."""
    from scipy.stats import norm

    h = abs(2.0 * math.asin(math.sqrt(p)) - 2.0 * math.asin(math.sqrt(q)))
    if h == 0:
        return math.inf
    n_eff = ((norm.isf(alpha / 2.0) + norm.isf(1.0 - power)) / h) ** 2
    # n_eff = n1 (one side) or n1 r / (1 + r): the one-tailed approximation, exact to
    # well under one image at 80% power (the other tail is under 1e-6).
    return n_eff if ratio is None else n_eff * (1.0 + ratio) / ratio


def family_alpha(alpha: float, m: int) -> float:
    """The per-test level of a family of ``m`` tests under Holm's correction: alpha / m."""
    return alpha / max(m, 1)


def power_of_test(test: Mapping[str, Any], *, alpha: float, settings: MeasureSettings
               ) -> dict[str, Any] | None:
    """The ``power`` record of one test: MDE at 80% power at level ``alpha``.

    A treatment test (group's rate against the highest group's) gets the lowest impact
    ratio it could miss, ``mde`` = q / p with q :func:`lower_rate` of the highest rate p;
    a share test the smallest shortfall of the generated share below the reference it
    detects. ``sufficient`` says whether that MDE is at or inside the policy's threshold
    (``impact_threshold``, ``under_margin``). Counts are effective ones where the test
    used them (``counts.n1_effective``). None when the test has no counts.
    """
    c = test.get("counts") or {}
    n1 = c.get("n1_effective", c.get("n1"))
    n2 = c.get("n2_effective", c.get("n2"))
    if not n1:
        return None
    if test["kind"] == "treatment":
        if not n2 or not c.get("k2"):
            return None
        p = c["k2"] / c["n2"]
        h = detectable_h(n1, n2, alpha=alpha)
        mde = lower_rate(p, h) / p
        policy = settings.impact_threshold
        sufficient = mde >= policy
        words = (f"at n = {n1:.0f} against {n2:.0f} and a highest rate of {100 * p:.1f}%, a "
                 f"test at level {alpha:.2g} detects with {POWER:.0%} power only impact "
                 f"ratios under {mde:.2f}")
        metric = "impact_ratio"
    else:
        if c.get("expected") is not None:
            p, n_other = float(c["expected"]), None
        elif n2:
            p, n_other = c["k2"] / c["n2"], n2
        else:
            return None
        h = detectable_h(n1, n_other, alpha=alpha)
        mde = p - lower_rate(p, h)
        policy = settings.under_margin
        sufficient = mde <= policy
        words = (f"at n = {n1:.0f} generated"
                 + ("" if n_other is None else f" and {n_other:.0f} real")
                 + f" images and a reference share of {100 * p:.1f}%, a test at level "
                   f"{alpha:.2g} detects with {POWER:.0%} power only shortfalls over "
                   f"{100 * mde:.1f} points")
        metric = "share_gap"
    return {"power": POWER, "alpha": alpha, "metric": metric, "mde": mde,
            "effect_size_h": h, "policy": policy, "sufficient": bool(sufficient),
            "summary": words}


def plan_rows(shares: Mapping[str, Mapping[str, float]], *, settings: MeasureSettings,
              n_tests: int, ratio: float = 1.0, base_rate: float = 0.5
              ) -> list[dict[str, Any]]:
    """Images an audit needs, per concept (or intersection) and group, to detect the
    policy's gaps with 80% power at the per-test level of ``n_tests`` Holm-corrected tests.

    Parameters
    ----------
    shares
        ``{concept: {group: share among real images}}`` (each sums to 1).
    n_tests
        The size of the audit's test family (:func:`family_alpha`).
    ratio
        Real images per generated image in the audit (the share test's two sides).
    base_rate
        The highest group's rate for the impact-ratio test; 0.5 is the scoring rate of
        all real images (above their median) by definition.

    Returns
    -------
    One row per (concept, group): its real share; for the share test (a generated share
    ``under_margin`` below the real one) the generated and real images needed; for the
    impact-ratio test (a rate ``impact_threshold`` times the highest group's) the images
    of the source audited needed, given the group's and the largest group's shares; and
    the totals (generated, real) that satisfy both. Inf where a share is 0.
    """
    alpha = family_alpha(settings.alpha, n_tests)
    rows = []
    for concept, groups in shares.items():
        top = max(groups.values()) if groups else 0.0
        for group, share in groups.items():
            gen_share = real_share = impact = math.inf
            if share > 0:
                q = max(share - settings.under_margin, 0.0)
                gen_share = images_needed(share, q, alpha=alpha, ratio=ratio)
                real_share = gen_share * ratio
                top_share = max((s for g, s in groups.items() if g != group), default=0.0)
                if top_share > 0:
                    per_group = images_needed(base_rate, base_rate * settings.impact_threshold,
                                              alpha=alpha, ratio=1.0) / 2.0
                    # n1 n2 / (n1 + n2) = per_group with n1 = s n, n2 = s_top n:
                    impact = per_group * (1.0 / share + 1.0 / top_share)
            rows.append({"concept": concept, "group": group, "real_share": share,
                         "alpha": alpha, "share_test": {"generated": gen_share,
                                                        "real": real_share},
                         "impact_test": impact,
                         "generated": max(gen_share, impact), "real": max(real_share, impact),
                         "largest_share": top})
    return rows


def describe(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """:func:`plan_rows` as lines of text (the CLI's table)."""
    def n(x: float) -> str:
        return "inf" if not math.isfinite(x) else f"{math.ceil(x):,}"

    lines = [f"{'concept':<20} {'group':<16} {'real share':>10} {'share test gen/real':>22} "
             f"{'impact test':>12} {'generated':>10} {'real':>10}"]
    for r in rows:
        lines.append(f"{r['concept']:<20} {r['group']:<16} {100 * r['real_share']:>9.1f}% "
                     f"{n(r['share_test']['generated']) + ' / ' + n(r['share_test']['real']):>22} "
                     f"{n(r['impact_test']):>12} {n(r['generated']):>10} {n(r['real']):>10}")
    return lines


def family_size(concept_set: Any) -> int:
    """The most tests an audit of ``concept_set`` runs (the Holm family): per protected
    concept and intersection of K groups, one share test per group (one for K = 2) and an
    impact-ratio test per group but the highest, per metric and source (2 x 2)."""
    sizes = [len(c.groups) for c in concept_set.protected]
    by_name = {c.name: len(c.groups) for c in concept_set.concepts}
    sizes += [math.prod(by_name[n] for n in combo) for combo in concept_set.intersections]
    return sum((1 if k == 2 else k) + 4 * (k - 1) for k in sizes)


def labels_to_shares(labels: Any, concept_set: Any) -> dict[str, dict[str, float]]:
    """Group shares among labelled images, per protected concept and intersection.

    ``labels``: a table with one column per concept holding group names (missing where
    unknown), as :attr:`audit.images.ImageSource.labels`. Concepts without any label are
    left out.
    """
    import itertools

    shares: dict[str, dict[str, float]] = {}
    combos = [(c.name,) for c in concept_set.protected] + [tuple(x) for x in
                                                           concept_set.intersections]
    groups = {c.name: list(c.groups) for c in concept_set.concepts}
    for combo in combos:
        if not all(n in labels.columns for n in combo):
            continue
        known = labels[list(combo)].dropna()
        if known.empty:
            continue
        keys = known.astype(str).agg("+".join, axis=1)
        counts = keys.value_counts()
        names = ["+".join(g) for g in itertools.product(*(groups[n] for n in combo))]
        shares["+".join(combo)] = {g: float(counts.get(g, 0)) / len(keys) for g in names}
    return shares
