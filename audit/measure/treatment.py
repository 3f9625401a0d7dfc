"""Treatment: how the discriminator scores each group.

Per group, over real and generated images: mean score, scoring rate (share above
the median score of all real audited images, the definition New York City's Local
Law 144 uses for score-based tools), acceptance rate (score above
``accept_threshold``: the true positive rate on real images, the false positive rate
on generated ones), impact ratios (rate / highest group's rate) with the four-fifths
rule, and Fairlearn's demographic parity and equalized odds disparities with real
as the positive outcome.

Point estimates of rates come from Fairlearn's ``MetricFrame`` evaluated on the
table of cell counts with the counts as sample weights (identical to evaluating it on
the rows); intervals from the cell-count bootstrap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from audit.measure.bootstrap import (
    BootstrapSpec,
    Statistic,
    cell_interval,
    estimate,
    intervals,
    jackknife_means,
    mean_replicates,
)
from audit.measure.groups import SOURCES, CellLayout, Grouping
from audit.measure.intervals import mover_ratio, wilson_interval, zero_width
from audit.measure.stats import (
    clustered_proportion_test,
    effective_counts,
    two_proportion_test,
)
from audit.vocabulary import FourFifths

if TYPE_CHECKING:
    import pandas as pd

    from audit.config import MeasureSettings

__all__ = ["confusion_rates", "cell_metric_frame", "fairlearn_by_cells", "treatment_statistic",
           "measure_treatment", "RATE_METRICS"]

RATE_METRICS = ("acceptance_rate", "scoring_rate")


def _count(y_true: Any, y_pred: Any, sample_weight: Any = None) -> float:
    """Number of rows: the sum of the weights when rows are weighted cells."""
    return float(len(y_true) if sample_weight is None else np.sum(sample_weight))


def _weighted_true_mean(y_true: Any, y_pred: Any, sample_weight: Any = None) -> float:
    """Share of positive y_true (the scoring rate when y_true = above the median)."""
    return float(np.average(np.asarray(y_true, dtype=float), weights=sample_weight))


def cell_metric_frame(metrics: dict[str, Any], y_true: np.ndarray, y_pred: np.ndarray,
                      sensitive: pd.DataFrame, weights: np.ndarray):
    """Fairlearn ``MetricFrame`` over weighted cells (one row per cell, count as weight).

    Cells with zero count are dropped (a group that has none is absent, as on rows).
    """
    from fairlearn.metrics import MetricFrame

    keep = np.asarray(weights) > 0
    w = np.asarray(weights, dtype=float)[keep]
    return MetricFrame(metrics=metrics, y_true=np.asarray(y_true)[keep],
                       y_pred=np.asarray(y_pred)[keep],
                       sensitive_features=sensitive.loc[keep].reset_index(drop=True),
                       sample_params={name: {"sample_weight": w} for name in metrics})


def fairlearn_by_cells(group: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                       weights: np.ndarray):
    """MetricFrame of selection rate, TPR, FPR and count by group on weighted cells."""
    import pandas as pd
    from fairlearn.metrics import false_positive_rate, selection_rate, true_positive_rate

    metrics = {"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
               "false_positive_rate": false_positive_rate, "count": _count}
    return cell_metric_frame(metrics, y_true, y_pred,
                             pd.DataFrame({"group": np.asarray(group)}), weights)


def confusion_rates(cells: np.ndarray) -> dict[str, np.ndarray]:
    """Selection rate, TPR, FPR and count from cell counts.

    Parameters
    ----------
    cells
        (..., 2, 2) counts indexed [y_true, y_pred] (0 negative, 1 positive), e.g.
        (B, G, 2, 2) for B bootstrap replicates of G groups.

    Returns
    -------
    ``{"selection_rate", "true_positive_rate", "false_positive_rate", "count"}``, each
    of shape ``cells.shape[:-2]``; NaN where a denominator is 0 (as Fairlearn warns).
    """
    c = np.asarray(cells, dtype=float)
    n = c.sum(axis=(-1, -2))
    pos = c[..., 1, 0] + c[..., 1, 1]
    neg = c[..., 0, 0] + c[..., 0, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"selection_rate": (c[..., 0, 1] + c[..., 1, 1]) / n,
                "true_positive_rate": c[..., 1, 1] / pos,
                "false_positive_rate": c[..., 0, 1] / neg,
                "count": n}


def treatment_statistic(layout: CellLayout, eligible: np.ndarray, used: np.ndarray) -> Statistic:
    """The statistic ``cells (B, C) -> (B, M)`` of one grouping's rates.

    Parameters
    ----------
    eligible
        (2, G + 1) bool: groups whose rate may be the highest of impact ratios.
    used
        (G + 1,) bool: groups entering demographic parity and equalized odds.

    Columns, in order: acceptance rate (2 x (G+1)), scoring rate (2 x (G+1)), impact
    ratio of acceptance (2 x (G+1)), impact ratio of scoring (2 x (G+1)), selection
    rate over both sources (G+1), then DP difference, DP ratio, EO difference.
    """

    def stat(cells: np.ndarray) -> np.ndarray:
        a = layout.audit(cells).astype(float)                # (B, 2, G+1, 5)
        valid, acc, above = _state_counts(a)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc_rate = acc / valid
            scr_rate = above / valid
            ratios = []
            for rate in (acc_rate, scr_rate):
                top = np.nanmax(np.where(eligible, rate, np.nan), axis=2, initial=-np.inf,
                                keepdims=True) if eligible.any() else np.full(
                                    (*rate.shape[:2], 1), np.nan)
                top = np.where(np.isfinite(top) & (top > 0), top, np.nan)
                ratios.append(rate / top)
        # (group, y_true = real, y_pred = accepted) cells over both sources.
        fair = np.stack([np.stack([valid[:, 1] - acc[:, 1], acc[:, 1]], axis=-1),
                         np.stack([valid[:, 0] - acc[:, 0], acc[:, 0]], axis=-1)], axis=-2)
        rates = confusion_rates(fair)
        sel = rates["selection_rate"]                          # (B, G+1)
        masked = np.where(used, sel, np.nan)
        tpr = np.where(used, rates["true_positive_rate"], np.nan)
        fpr = np.where(used, rates["false_positive_rate"], np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                dpd = np.nanmax(masked, axis=1) - np.nanmin(masked, axis=1)
                dpr = np.nanmin(masked, axis=1) / np.nanmax(masked, axis=1)
                eod = np.maximum(np.nanmax(tpr, axis=1) - np.nanmin(tpr, axis=1),
                                 np.nanmax(fpr, axis=1) - np.nanmin(fpr, axis=1))
        b = len(cells)
        return np.concatenate([acc_rate.reshape(b, -1), scr_rate.reshape(b, -1),
                               ratios[0].reshape(b, -1), ratios[1].reshape(b, -1), sel,
                               dpd[:, None], dpr[:, None], eod[:, None]], axis=1)

    return stat


def measure_treatment(grouping: Grouping, layout: CellLayout, cells: np.ndarray,
                      draws: np.ndarray, *, scores: np.ndarray, source: np.ndarray,
                      median: float | None, spec: BootstrapSpec, settings: MeasureSettings,
                      rng: np.random.Generator, clusters: np.ndarray | None = None,
                      cluster_matrix: np.ndarray | None = None
                      ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]],
                                 list[dict[str, Any]]]:
    """Treatment section of one grouping.

    Parameters
    ----------
    cells, draws
        The grouping's cell counts (C,) and bootstrap replicates (B, C).
    clusters, cluster_matrix
        With ``cluster_by``: (N,) cluster keys of the audited images and their (K, C)
        cells, which the draws resampled; the mean scores and BCa's jackknife resample
        the same clusters.
    scores, source
        (N,) scores and source codes (0 real, 1 generated) of the audited images, in
        the order of ``grouping.best``; used for mean scores.
    median
        Median score of all real audited images (None if there is none).

    Returns
    -------
    (section, tests, exclusions, degenerate)
    """
    import pandas as pd

    g = grouping.n_groups
    labels = grouping.labels()
    a = layout.audit(cells[None, :])[0]                       # (2, G+1, 5)
    n_all = a.sum(axis=2)
    invalid = a[..., 0]
    valid, acc_k, scr_k = _state_counts(a)
    totals = valid.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, valid / np.where(totals > 0, totals, 1), np.nan)
    excluded = np.zeros((2, g + 1), dtype=bool)
    reasons: dict[tuple[int, int], str] = {}
    for s in range(2):
        reasons[(s, g)] = "unknown group (decoded max probability under unknown_below)"
        excluded[s, g] = True
        for i in range(g):
            if valid[s, i] > 0 and share[s, i] < settings.exclude_below_share:
                excluded[s, i] = True
                reasons[(s, i)] = (f"{share[s, i]:.1%} of {SOURCES[s]} images, under "
                                   f"exclude_below_share = {settings.exclude_below_share:.0%}")
    small = valid < settings.min_group_n
    eligible = ~excluded & ~small & (valid > 0)
    used = ~excluded.any(axis=0) & (valid.sum(axis=0) > 0)
    stat = treatment_statistic(layout, eligible, used)
    point, ci = cell_interval(stat, cells, draws, spec, cluster_matrix)
    width = 2 * (g + 1)
    blocks = {name: (point[i * width:(i + 1) * width].reshape(2, g + 1),
                     ci[i * width:(i + 1) * width].reshape(2, g + 1, 2))
              for i, name in enumerate(("acceptance_rate", "scoring_rate", "ratio_acceptance",
                                        "ratio_scoring"))}
    off = 4 * width
    dpd_ci, dpr_ci, eod_ci = (ci[off + g + 1 + j] for j in range(3))
    # Rates are counts k of n: Wilson intervals (on effective counts under cluster_by),
    # never of zero width; see audit/measure/intervals.py.
    per_cluster = None if cluster_matrix is None else \
        layout.audit(np.asarray(cluster_matrix))            # (K, 2, G + 1, N_STATES)
    level = spec.confidence
    for metric in RATE_METRICS:
        blocks[metric] = (blocks[metric][0], wilson_interval(
            *_effective_counts(per_cluster, metric, valid, acc_k if metric == "acceptance_rate"
                               else scr_k), confidence=level))
    both = None if per_cluster is None else per_cluster.sum(axis=1, keepdims=True)
    sel_ci = wilson_interval(*_effective_counts(both, "acceptance_rate",
                                                valid.sum(axis=0, keepdims=True),
                                                acc_k.sum(axis=0, keepdims=True)),
                             confidence=level)[0]

    # Point estimates from Fairlearn's MetricFrame on the cell table.
    idx = np.indices(a.shape).reshape(3, -1)
    w = a.reshape(-1)
    state = idx[2]
    keep = state > 0
    src, grp, st, w = idx[0][keep], idx[1][keep], state[keep], w[keep]
    accepted = np.isin(st, (2, 4)).astype(int)
    above_med = np.isin(st, (3, 4)).astype(int)
    sens = pd.DataFrame({"source": np.array(SOURCES)[src], "group": np.array(labels)[grp]})
    mf_rate = {m: np.full((2, g + 1), np.nan) for m in RATE_METRICS}
    if w.sum() > 0:
        rates_mf = cell_metric_frame({"acceptance_rate": _selection_rate(),
                                      "scoring_rate": _weighted_true_mean},
                                     above_med, accepted, sens, w)
        for (s_name, g_name), row in rates_mf.by_group.iterrows():
            for m in RATE_METRICS:
                mf_rate[m][SOURCES.index(s_name), labels.index(g_name)] = row[m]
    used_mask = used[grp]
    fair = {"groups_used": [labels[i] for i in range(g + 1) if used[i]], "per_group": [],
            "demographic_parity_difference": estimate(None, None, 0),
            "demographic_parity_ratio": estimate(None, None, 0),
            "equalized_odds_difference": estimate(None, None, 0)}
    if used_mask.any() and w[used_mask].sum() > 0:
        mf = fairlearn_by_cells(np.array(labels)[grp][used_mask], (src[used_mask] == 0).astype(int),
                                accepted[used_mask], w[used_mask])
        n_used = int(w[used_mask].sum())
        diff, ratio = mf.difference(), mf.ratio()
        eo = max(diff["true_positive_rate"], diff["false_positive_rate"])
        fair["demographic_parity_difference"] = estimate(diff["selection_rate"], dpd_ci, n_used)
        fair["demographic_parity_ratio"] = _ratio_estimate(
            ratio["selection_rate"], dpr_ci, n_used, *_min_max(
                np.where(used, acc_k.sum(axis=0) / np.maximum(valid.sum(axis=0), 1), np.nan),
                sel_ci), what="the highest selection rate")
        fair["equalized_odds_difference"] = estimate(eo, eod_ci, n_used)
        for label, row in mf.by_group.iterrows():
            i = labels.index(label)
            fair["per_group"].append({
                "group": label, "count": int(row["count"]),
                "selection_rate": estimate(row["selection_rate"], sel_ci[i], int(valid[:, i].sum()),
                                       int(acc_k[:, i].sum())),
                "true_positive_rate": estimate(row["true_positive_rate"],
                                           blocks["acceptance_rate"][1][0, i], int(valid[0, i]),
                                           int(acc_k[0, i])),
                "false_positive_rate": estimate(row["false_positive_rate"],
                                            blocks["acceptance_rate"][1][1, i], int(valid[1, i]),
                                            int(acc_k[1, i]))})

    means, mean_ci = _mean_scores(grouping, scores, source, spec=spec, rng=rng,
                                  clusters=clusters)
    rows, exclusions = [], []
    for s, s_name in enumerate(SOURCES):
        for i, label in enumerate(labels):
            if n_all[s, i] == 0 and i == g:
                continue
            rows.append({
                "group": label, "source": s_name, "n": int(n_all[s, i]),
                "n_invalid_score": int(invalid[s, i]),
                "share_of_source": None if not np.isfinite(share[s, i]) else float(share[s, i]),
                "mean_score": estimate(means[s, i], mean_ci[s, i], int(valid[s, i])),
                "scoring_rate": estimate(mf_rate["scoring_rate"][s, i],
                                     blocks["scoring_rate"][1][s, i], int(valid[s, i]),
                                     int(scr_k[s, i])),
                "acceptance_rate": estimate(mf_rate["acceptance_rate"][s, i],
                                        blocks["acceptance_rate"][1][s, i], int(valid[s, i]),
                                        int(acc_k[s, i])),
                "small": bool(small[s, i]),
                "excluded": bool(excluded[s, i]),
                "exclusion_reason": reasons.get((s, i)) if excluded[s, i] else None,
            })
            if excluded[s, i] and n_all[s, i] > 0:
                exclusions.append({
                    "concept": grouping.name, "group": label, "source": s_name,
                    "n": int(n_all[s, i]),
                    "share": None if not np.isfinite(share[s, i]) else float(share[s, i]),
                    "scoring_rate": _finite(mf_rate["scoring_rate"][s, i]),
                    "acceptance_rate": _finite(mf_rate["acceptance_rate"][s, i]),
                    "reason": reasons[(s, i)]})
    impact, tests, degenerate = _impact(grouping, mf_rate, blocks, valid, {
        "acceptance_rate": acc_k, "scoring_rate": scr_k}, eligible, excluded, small, settings,
        per_cluster)
    section = {
        "concept": grouping.name, "concepts": list(grouping.concepts),
        "protected": grouping.protected, "groups": list(grouping.groups),
        "median_real_score": median, "accept_threshold": float(settings.accept_threshold),
        "rows": rows, "impact": impact, "fairlearn": fair,
    }
    return section, tests, exclusions, degenerate


def _state_counts(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images with a valid score, accepted as real, and scored above the real median, from
    image counts by score state on the last axis (:func:`audit.measure.groups.score_states`:
    0 invalid, then 1 + 2 * above the median + accepted)."""
    return a[..., 1:].sum(axis=-1), a[..., 2] + a[..., 4], a[..., 3] + a[..., 4]


def _rate_clusters(per_cluster: np.ndarray, s: int, i: int, metric: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: successes of ``metric`` and images with a valid score, of source ``s``
    and group ``i``."""
    valid, accepted, above = _state_counts(per_cluster[:, s, i])
    return (accepted if metric == "acceptance_rate" else above), valid


def _effective_counts(per_cluster: np.ndarray | None, metric: str, valid: np.ndarray,
                      successes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Successes and images (S, G + 1) of a rate per source and group; under cluster_by
    (``per_cluster`` (K, S, G + 1, states)) Kish's effective counts, as the tests use."""
    k, n = successes.astype(float), valid.astype(float)
    if per_cluster is None:
        return k, n
    for s, i in zip(*np.nonzero(valid > 0), strict=True):
        k[s, i], n[s, i] = effective_counts(*_rate_clusters(per_cluster, s, i, metric))
    return k, n


def _min_max(rate: np.ndarray, ci: np.ndarray) -> tuple[float, np.ndarray, float, np.ndarray]:
    """Lowest and highest finite ``rate`` (G,) with their intervals (G, 2)."""
    ok = np.flatnonzero(np.isfinite(rate))
    if not len(ok):
        return np.nan, np.full(2, np.nan), np.nan, np.full(2, np.nan)
    lo, hi = ok[np.argmin(rate[ok])], ok[np.argmax(rate[ok])]
    return float(rate[lo]), ci[lo], float(rate[hi]), ci[hi]


def _ratio_estimate(value: float | None, ci: np.ndarray, n: int, num: float,
                    num_ci: np.ndarray, den: float, den_ci: np.ndarray, *, what: str
                    ) -> dict[str, Any]:
    """The estimate of a ratio of two rates num / den: the bootstrap interval ``ci``, or,
    where it has zero width (a rate of 0 or 1 in every replicate), the MOVER-R interval
    from the rates' Wilson intervals; with a denominator of 0 the interval is [0, None]
    and says why (``what`` names the denominator)."""
    if den == 0:
        return estimate(None, np.array([0.0, np.inf]), n, unbounded=(
            f"{what} is 0, so the ratio's denominator is 0: it is undefined and its interval "
            f"has no upper bound"))
    if value is not None and np.isfinite(value) and zero_width(ci) and np.isfinite(den):
        ci = mover_ratio(num, num_ci, den, den_ci)
    return estimate(value, ci, n)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _selection_rate():
    from fairlearn.metrics import selection_rate

    return selection_rate


def _mean_scores(grouping: Grouping, scores: np.ndarray, source: np.ndarray, *,
                 spec: BootstrapSpec, rng: np.random.Generator,
                 clusters: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean finite score per (source, group incl. unknown) and its interval (resampling
    the images' ``clusters`` when given)."""
    g1 = grouping.n_groups + 1
    finite = np.isfinite(scores)
    codes = (source * g1 + grouping.best)[finite]
    values = scores[finite]
    sums = np.bincount(codes, weights=values, minlength=2 * g1)
    cnts = np.bincount(codes, minlength=2 * g1)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = sums / cnts
    cl = None if clusters is None else np.asarray(clusters)[finite]
    reps = mean_replicates(values, codes, 2 * g1, spec=spec, rng=rng, clusters=cl)
    jack = jackknife_means(values, codes, 2 * g1, cl) if spec.method == "bca" else None
    ci = intervals(point, reps, spec, jack) if spec.n_boot else np.full((2 * g1, 2), np.nan)
    return point.reshape(2, g1), ci.reshape(2, g1, 2)


def _impact(grouping: Grouping, mf_rate: dict[str, np.ndarray], blocks: dict[str, Any],
            valid: np.ndarray, successes: dict[str, np.ndarray], eligible: np.ndarray,
            excluded: np.ndarray, small: np.ndarray, settings: MeasureSettings,
            per_cluster: np.ndarray | None = None
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Impact ratios, four-fifths verdicts and their tests, per metric and source (with
    ``per_cluster``, (K, 2, G + 1, states) image counts under ``cluster_by``: the
    cluster-robust z test of the two rates)."""
    g = grouping.n_groups
    labels = grouping.labels()
    impact, tests, degenerate = [], [], []
    for metric in RATE_METRICS:
        rate = mf_rate[metric]
        ratio_ci = blocks["ratio_" + metric.split("_")[0]][1]
        rate_ci = blocks[metric][1]
        k = successes[metric]
        for s, s_name in enumerate(SOURCES):
            cand = [i for i in range(g) if eligible[s, i] and np.isfinite(rate[s, i])]
            top = max(cand, key=lambda i: (rate[s, i], -i)) if cand else None
            zero_top = top is not None and rate[s, top] == 0
            if zero_top:
                degenerate.append({
                    "kind": "zero_highest_rate", "concept": grouping.name, "group": None,
                    "source": s_name, "count": None,
                    "message": f"no {s_name} image of any {grouping.name} group has a positive "
                               f"{metric.replace('_', ' ')}; impact ratios are undefined"})
                top = None
            for i in range(g):
                if valid[s, i] == 0:
                    continue
                verdict, reason, test_id = FourFifths.NO_VERDICT, None, None
                ratio = (rate[s, i] / rate[s, top] if top is not None and not excluded[s, i]
                         else np.nan)
                if zero_top and not excluded[s, i]:
                    ratio_est = _ratio_estimate(None, ratio_ci[s, i], int(valid[s, i]), 0.0,
                                                rate_ci[s, i], 0.0, rate_ci[s, i],
                                                what=f"the highest {metric.replace('_', ' ')}")
                elif top is not None and i != top and not excluded[s, i]:
                    ratio_est = _ratio_estimate(ratio, ratio_ci[s, i], int(valid[s, i]),
                                                rate[s, i], rate_ci[s, i], rate[s, top],
                                                rate_ci[s, top], what="the highest rate")
                else:
                    ratio_est = estimate(ratio, ratio_ci[s, i], int(valid[s, i]))
                if excluded[s, i]:
                    reason = "excluded from impact ratios"
                elif zero_top:
                    reason = (f"the highest {metric.replace('_', ' ')} is 0: the ratio's "
                              f"denominator is 0")
                elif top is None:
                    reason = "no group large enough to compare with"
                elif small[s, i]:
                    reason = f"n = {int(valid[s, i])} < min_group_n = {settings.min_group_n}"
                elif len(cand) < 2:
                    reason = "only one group large enough to compare"
                else:
                    verdict = (FourFifths.ADVERSE_IMPACT if ratio < settings.impact_threshold
                               else FourFifths.PASS)
                    if i != top and grouping.protected:
                        test_id = f"T-TRT-{grouping.name}-{labels[i]}-{s_name}-{metric}"
                        res = (two_proportion_test(int(k[s, i]), int(valid[s, i]),
                                                   int(k[s, top]), int(valid[s, top]))
                               if per_cluster is None else clustered_proportion_test(
                                   *_rate_clusters(per_cluster, s, i, metric),
                                   *_rate_clusters(per_cluster, s, top, metric)))
                        counts = {"k1": int(k[s, i]), "n1": int(valid[s, i]),
                                  "k2": int(k[s, top]), "n2": int(valid[s, top]),
                                  "expected": None}
                        if per_cluster is not None:
                            counts["n1_effective"] = effective_counts(
                                *_rate_clusters(per_cluster, s, i, metric))[1]
                            counts["n2_effective"] = effective_counts(
                                *_rate_clusters(per_cluster, s, top, metric))[1]
                        tests.append({
                            "id": test_id, "kind": "treatment", "method": res.method,
                            "concept": grouping.name, "group": labels[i],
                            "versus": labels[top], "source": s_name, "metric": metric,
                            "counts": counts,
                            "statistic": res.statistic, "p_value": res.p_value,
                            "p_holm": None, "p_bh": None})
                impact.append({
                    "metric": metric, "source": s_name, "group": labels[i],
                    "rate": estimate(rate[s, i], rate_ci[s, i], int(valid[s, i]), int(k[s, i])),
                    "highest_group": None if top is None else labels[top],
                    "ratio": ratio_est,
                    "four_fifths": verdict, "reason": reason, "test_id": test_id})
    return impact, tests, degenerate
