"""Discriminator sanity: before any verdict on how the D treats groups, does it work at all?

A randomly initialised discriminator, or one that rejects almost every real image, still
scores some groups lower than others; without a check the audit would report that as
adverse impact with full confidence (compare the model randomisation test of Adebayo et
al., NeurIPS 2018). This module measures, on the audited images:

- separation: the ROC AUC of the score as a classifier of real (positive) against
  generated images, with DeLong's interval (clustered: Obuchowski's, resampling-free);
- acceptance: the share of real (and generated) images scored above ``accept_threshold``,
  with Wilson intervals;
- the score distribution per source (quantiles, mean, sd);

and names what is wrong when the interval of the AUC includes 0.5 (or lies under it, or
lies wholly under ``WEAK_AUC`` = 0.6: a separation a random-weights D reaches),
when under 5% or over 95% of real images are accepted, or when the D gives (nearly) one
score to every image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from audit.intervals import normal_quantile, wilson_interval
from audit.measure.bootstrap import estimate
from audit.measure.stats import effective_counts

__all__ = ["auc_delong", "discriminator_sanity", "sanity_caveat", "sanity_words", "ACCEPT_LOW",
           "ACCEPT_HIGH", "WEAK_AUC"]

#: A D that accepts under ACCEPT_LOW or over ACCEPT_HIGH of real images is flagged.
ACCEPT_LOW, ACCEPT_HIGH = 0.05, 0.95
#: A D whose AUC interval lies wholly under WEAK_AUC barely separates real from generated
#: images, even when the interval excludes 0.5 (benchmarks/sanity.py: random-weights demo
#: Ds reach 0.466 to 0.544, upper bounds up to 0.566; the trained demo D 0.869).
WEAK_AUC = 0.6
#: Scores whose 1st to 99th percentile range is under this (relative to 1 + |median|)
#: count as one score for every image.
CONSTANT_TOL = 1e-6
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def _placements(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components by midranks (Sun & Xu 2014): for each positive, the
    share of negatives it outscores (ties count half), and for each negative the share of
    positives that outscore it. (M,), (N,)."""
    from scipy.stats import rankdata

    m, n = len(pos), len(neg)
    both = rankdata(np.concatenate([pos, neg]))
    v10 = (both[:m] - rankdata(pos)) / n
    v01 = 1.0 - (both[m:] - rankdata(neg)) / m
    return v10, v01


def _clustered_variance(v: np.ndarray, auc: float, clusters: np.ndarray | None) -> float:
    """Variance of the mean of placements ``v`` around ``auc``: K / (K - 1) times the sum of
    squared cluster sums of deviations over n ** 2 (Obuchowski 1997); with every image its
    own cluster, DeLong's var(v, ddof=1) / n."""
    dev = v - auc
    n = len(v)
    if clusters is None:
        sums = dev
    else:
        _, codes = np.unique(clusters, return_inverse=True)
        sums = np.bincount(codes.reshape(-1), weights=dev)
    k = len(sums)
    if k < 2:
        return float("nan")
    return float(k / (k - 1) * np.sum(sums ** 2) / n ** 2)


def auc_delong(pos: np.ndarray, neg: np.ndarray, *, confidence: float = 0.95,
               pos_clusters: np.ndarray | None = None, neg_clusters: np.ndarray | None = None
               ) -> tuple[float, np.ndarray, str]:
    """ROC AUC of scores of positives ``pos`` (M,) against negatives ``neg`` (N,), with its
    interval.

    Returns
    -------
    (auc, ci (2,), method): the AUC equals ``sklearn.metrics.roc_auc_score`` (ties count
    half); the interval is AUC +- z se with DeLong's variance (Obuchowski's when the
    images come in ``*_clusters``, (M,) and (N,) keys), clipped to [0, 1]. Where that
    variance is 0 (complete separation: every positive above every negative, or the
    reverse) the interval would have zero width; it is then the Wilson interval of the
    AUC as a share of min(M, N) trials (the size that bounds the variance of the
    Mann-Whitney statistic), and ``method`` says so. NaN without both classes.
    """
    pos, neg = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), np.full(2, np.nan), "delong"
    v10, v01 = _placements(pos, neg)
    auc = float(v10.mean())
    var = (_clustered_variance(v10, auc, pos_clusters)
           + _clustered_variance(v01, auc, neg_clusters))
    method = "delong" if pos_clusters is None and neg_clusters is None else "obuchowski"
    if not np.isfinite(var) or var <= 0:
        return auc, wilson_interval(auc * min(len(pos), len(neg)), min(len(pos), len(neg)),
                                    confidence=confidence), "wilson_min_n"
    half = normal_quantile(confidence) * float(np.sqrt(var))
    return auc, np.clip(np.array([auc - half, auc + half]), 0.0, 1.0), method


def _distribution(x: np.ndarray) -> dict[str, Any]:
    """Quantiles (min, 5%, 25%, median, 75%, 95%, max), mean, sd and n of scores."""
    if len(x) == 0:
        return {"n": 0, "quantiles": None, "mean": None, "sd": None}
    q = np.quantile(x, QUANTILES)
    return {"n": len(x),
            "quantiles": {f"q{round(100 * p):02d}": float(v) for p, v in zip(QUANTILES, q,
                                                                              strict=True)},
            "mean": float(x.mean()), "sd": float(x.std(ddof=1)) if len(x) > 1 else None}


def _acceptance(accepted: np.ndarray, clusters: np.ndarray | None, confidence: float
                ) -> dict[str, Any]:
    """Share accepted with its Wilson interval (effective counts under clusters)."""
    n, k = len(accepted), int(accepted.sum())
    if n == 0:
        return estimate(None, None, 0, 0)
    kk, nn = float(k), float(n)
    if clusters is not None:
        _, codes = np.unique(clusters, return_inverse=True)
        codes = codes.reshape(-1)
        kk, nn = effective_counts(np.bincount(codes, weights=accepted.astype(float)),
                                  np.bincount(codes).astype(float))
    return estimate(k / n, wilson_interval(kk, nn, confidence=confidence), n, k)


def discriminator_sanity(scores: np.ndarray, source: np.ndarray, *, accept_threshold: float,
                         confidence: float = 0.95, clusters: np.ndarray | None = None
                         ) -> dict[str, Any]:
    """The ``discriminator`` section of results.json.

    Parameters
    ----------
    scores
        (N,) discriminator scores of the audited images (logits or probabilities; NaN and
        infinite scores are left out).
    source
        (N,) 0 real, 1 generated.
    accept_threshold
        Score above which an image counts as accepted as real.
    clusters
        (N,) cluster keys under ``cluster_by`` (None: every image independent).

    Returns
    -------
    ``{"separation": {auc, ci, n_real, n_generated, method}, "acceptance": {real,
    generated}, "scores": {real, generated}, "constant": bool, "problems": [{kind,
    message}]}``; ``problems`` is empty for a D that passes every check.
    """
    scores = np.asarray(scores, dtype=float)
    source = np.asarray(source)
    ok = np.isfinite(scores)
    real, gen = ok & (source == 0), ok & (source == 1)
    cl = None if clusters is None else np.asarray(clusters)
    auc, ci, method = auc_delong(scores[real], scores[gen], confidence=confidence,
                                 pos_clusters=None if cl is None else cl[real],
                                 neg_clusters=None if cl is None else cl[gen])
    accepted = scores > accept_threshold
    acceptance = {name: _acceptance(accepted[rows], None if cl is None else cl[rows],
                                    confidence)
                  for name, rows in (("real", real), ("generated", gen))}
    finite = scores[ok]
    constant = _is_constant(finite)
    problems = _problems(finite, constant=constant, auc=auc, ci=ci,
                         real_acceptance=acceptance["real"],
                         accept_threshold=accept_threshold, confidence=confidence)
    return {
        "separation": {"auc": None if not np.isfinite(auc) else auc,
                       "ci": None if not np.isfinite(ci).all() else [float(ci[0]),
                                                                      float(ci[1])],
                       "n_real": int(real.sum()), "n_generated": int(gen.sum()),
                       "method": method},
        "acceptance": acceptance,
        "accept_threshold": float(accept_threshold),
        "scores": {"real": _distribution(scores[real]), "generated": _distribution(scores[gen])},
        "constant": constant,
        "problems": problems,
    }


def _is_constant(finite: np.ndarray) -> bool:
    """Whether finite scores (N,) are (nearly) one score: their 1st to 99th percentile range
    is under ``CONSTANT_TOL`` relative to 1 + |median|."""
    return bool(len(finite) > 1 and np.ptp(np.quantile(finite, [0.01, 0.99]))
                <= CONSTANT_TOL * (1.0 + abs(float(np.median(finite)))))


def _problems(finite: np.ndarray, *, constant: bool, auc: float, ci: np.ndarray,
              real_acceptance: dict[str, Any], accept_threshold: float, confidence: float
              ) -> list[dict[str, str]]:
    """What is wrong with the discriminator, as ``{kind, message}`` records: one score for
    every image (which makes the other checks moot), else a separation no better than
    chance, inverted or weak, and an extreme acceptance of real images."""
    if constant:
        return [{"kind": "constant_score", "message": (
            f"the discriminator gives (nearly) one score to every image (98% of the "
            f"{len(finite)} scores lie within {np.ptp(np.quantile(finite, [0.01, 0.99])):.2g} "
            f"of each other): it tells no image from another, so how it scores groups "
            f"cannot be judged")}]
    problems = []
    if np.isfinite(auc):
        problems += _separation_problems(auc, ci, confidence)
    problems += _acceptance_problems(real_acceptance, accept_threshold)
    return problems


def _separation_problems(auc: float, ci: np.ndarray, confidence: float
                         ) -> list[dict[str, str]]:
    """At most one problem with the ROC AUC's interval ``ci`` (2,): it includes 0.5, lies
    under it, or lies wholly under ``WEAK_AUC``."""
    words = f"ROC AUC {auc:.3f}, {confidence:.0%} interval {ci[0]:.3f} to {ci[1]:.3f}"
    if ci[0] <= 0.5 <= ci[1]:
        return [{"kind": "chance_separation", "message": (
            f"the discriminator does not separate real from generated images better "
            f"than chance ({words}, which includes 0.5)")}]
    if ci[1] < 0.5:
        return [{"kind": "inverted_separation", "message": (
            f"the discriminator scores generated images as more real than real ones "
            f"({words}, under 0.5)")}]
    if ci[1] < WEAK_AUC:
        return [{"kind": "weak_separation", "message": (
            f"the discriminator barely separates real from generated images ({words}, "
            f"wholly under {WEAK_AUC:g}; a discriminator with random weights reaches "
            f"as much)")}]
    return []


def _acceptance_problems(real: dict[str, Any], accept_threshold: float
                         ) -> list[dict[str, str]]:
    """A problem when the share of real images accepted (``real``: an estimate with k and
    n) is under ``ACCEPT_LOW`` or over ``ACCEPT_HIGH``."""
    share = real["value"]
    if share is None or ACCEPT_LOW <= share <= ACCEPT_HIGH:
        return []
    side = "under" if share < ACCEPT_LOW else "over"
    bound = ACCEPT_LOW if share < ACCEPT_LOW else ACCEPT_HIGH
    return [{"kind": "acceptance_extreme", "message": (
        f"the discriminator accepts {100 * share:.1f}% of real images "
        f"({real['k']} of {real['n']}; score above "
        f"{accept_threshold:g}), {side} {100 * bound:.0f}%: its acceptance threshold "
        f"does not sort real images, so rates of acceptance say little")}]


def sanity_words(section: dict[str, Any] | None) -> str:
    """The discriminator sanity figures in one plain sentence (the CLI's first line)."""
    if not section:
        return "discriminator sanity: not measured (results.json predates it)"
    sep, acc = section["separation"], section["acceptance"]
    auc = "n/a" if sep["auc"] is None else f"{sep['auc']:.3f}"
    ci = "" if sep["ci"] is None else f" [{sep['ci'][0]:.3f}, {sep['ci'][1]:.3f}]"
    real = acc["real"]
    share = "n/a" if real["value"] is None else f"{100 * real['value']:.1f}%"
    rci = "" if real["ci"] is None else \
        f" [{100 * real['ci'][0]:.1f}, {100 * real['ci'][1]:.1f}]"
    head = (f"ROC AUC real vs generated {auc}{ci} (n = {sep['n_real']} real, "
            f"{sep['n_generated']} generated); accepts {share}{rci} of real images")
    if section["problems"]:
        return ("discriminator FAILS sanity: " + "; ".join(p["message"] for p in
                                                           section["problems"])
                + f" ({head})")
    return f"discriminator sanity: {head}"


def sanity_caveat(section: dict[str, Any]) -> str | None:
    """One sentence for every treatment finding when the D failed a check (None if not)."""
    problems = section.get("problems") or []
    if not problems:
        return None
    return ("Caveat: " + "; ".join(p["message"] for p in problems)
            + ". Treat this finding as weak evidence (severity capped at low).")
