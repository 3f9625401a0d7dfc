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
the rows). Rates are counts k of n and get Wilson intervals; impact ratios and the
disparities get intervals from the cell-count bootstrap (:func:`treatment_statistic`,
whose columns :func:`treatment_columns` names).

The pieces, in the order :func:`measure_treatment` runs them: :class:`GroupCounts` (images
per source and group by :class:`~audit.measure.groups.ScoreState`, exclusions, small
groups), :class:`TreatmentIntervals` (the bootstrap), :class:`Rates` (Fairlearn's point
estimates, Wilson intervals), then the section's rows, impact ratios with four-fifths
verdicts and tests, and Fairlearn's disparities.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from audit.formatting import percent
from audit.intervals import mover_ratio, wilson_interval, zero_width
from audit.measure.bootstrap import (
    BootstrapSpec,
    Columns,
    Statistic,
    cell_interval,
    estimate,
    intervals,
    jackknife_means,
    mean_replicates,
)
from audit.measure.groups import (
    ABOVE_MEDIAN_STATES,
    ACCEPTED_STATES,
    SOURCES,
    VALID_STATES,
    CellLayout,
    Grouping,
    ScoreState,
)
from audit.measure.stats import (
    clustered_proportion_test,
    effective_counts,
    finite_or_none,
    two_proportion_test,
)
from audit.vocabulary import FourFifths

if TYPE_CHECKING:
    import pandas as pd

    from audit.config import MeasureSettings

__all__ = ["confusion_rates", "cell_metric_frame", "fairlearn_by_cells", "treatment_statistic",
           "treatment_columns", "measure_treatment", "RATE_METRICS", "StateCounts",
           "GroupCounts", "TreatmentIntervals", "Rates"]

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


# ------------------------------------------------------------------ counts


@dataclass(frozen=True)
class StateCounts:
    """Images by what their score says, from image counts by :class:`ScoreState`.

    Attributes
    ----------
    valid
        (...) images with a finite score: the denominator of both rates.
    accepted
        (...) of them accepted as real (score above ``accept_threshold``).
    above_median
        (...) of them scored above the median score of the real audited images.
    """

    valid: np.ndarray
    accepted: np.ndarray
    above_median: np.ndarray

    @classmethod
    def of(cls, by_state: np.ndarray) -> StateCounts:
        """From image counts (..., N_STATES) by score state on the last axis."""
        return cls(valid=by_state[..., list(VALID_STATES)].sum(axis=-1),
                   accepted=by_state[..., list(ACCEPTED_STATES)].sum(axis=-1),
                   above_median=by_state[..., list(ABOVE_MEDIAN_STATES)].sum(axis=-1))

    def successes(self, metric: str) -> np.ndarray:
        """The numerator of ``metric`` (one of :data:`RATE_METRICS`)."""
        return self.accepted if metric == "acceptance_rate" else self.above_median


@dataclass(frozen=True)
class GroupCounts:
    """One grouping's audited images per source and group, (2, G + 1) with unknown last,
    and which groups the treatment statistics may use.

    Attributes
    ----------
    n
        All images.
    invalid
        Images whose score is NaN or infinite.
    states
        Images with a finite score, accepted, above the real median.
    share
        Share of the source's images with a finite score; NaN where the source has none.
    excluded
        Bool: left out of impact ratios (unknown always; groups under
        ``exclude_below_share``); ``reasons`` says why, by (source, group).
    small
        Bool: fewer than ``min_group_n`` images with a finite score (numbers, no verdict).
    eligible
        Bool: groups whose rate may be the highest of an impact ratio.
    used
        (G + 1,) bool: groups entering demographic parity and equalized odds.
    """

    n: np.ndarray
    invalid: np.ndarray
    states: StateCounts
    share: np.ndarray
    excluded: np.ndarray
    reasons: dict[tuple[int, int], str]
    small: np.ndarray
    eligible: np.ndarray
    used: np.ndarray


def _group_counts(n_groups: int, by_state: np.ndarray, settings: MeasureSettings
                  ) -> GroupCounts:
    """:class:`GroupCounts` from image counts (2, G + 1, N_STATES) by source, group and
    score state."""
    states = StateCounts.of(by_state)
    valid = states.valid
    totals = valid.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, valid / np.where(totals > 0, totals, 1), np.nan)
    excluded, reasons = _excluded_groups(n_groups, valid, share, settings)
    small = valid < settings.min_group_n
    return GroupCounts(n=by_state.sum(axis=2), invalid=by_state[..., ScoreState.INVALID],
                       states=states, share=share, excluded=excluded, reasons=reasons,
                       small=small, eligible=~excluded & ~small & (valid > 0),
                       used=~excluded.any(axis=0) & (valid.sum(axis=0) > 0))


def _excluded_groups(n_groups: int, valid: np.ndarray, share: np.ndarray,
                     settings: MeasureSettings
                     ) -> tuple[np.ndarray, dict[tuple[int, int], str]]:
    """Groups (2, G + 1) left out of impact ratios and why, by (source, group): unknown
    always, and known groups under ``exclude_below_share`` of their source's images."""
    g = n_groups
    excluded = np.zeros((2, g + 1), dtype=bool)
    reasons: dict[tuple[int, int], str] = {}
    for s in range(2):
        reasons[(s, g)] = "unknown group (decoded max probability under unknown_below)"
        excluded[s, g] = True
        for i in range(g):
            if valid[s, i] > 0 and share[s, i] < settings.exclude_below_share:
                excluded[s, i] = True
                reasons[(s, i)] = (f"{percent(share[s, i])} of {SOURCES[s]} images, under "
                                   f"exclude_below_share = "
                                   f"{percent(settings.exclude_below_share, digits=0)}")
    return excluded, reasons


class _Clusters(NamedTuple):
    """Per cluster (K,): the successes of a rate and the images with a finite score."""

    successes: np.ndarray
    images: np.ndarray


def _rate_clusters(per_cluster: np.ndarray, s: int, i: int, metric: str) -> _Clusters:
    """Per cluster: successes of ``metric`` and images with a valid score, of source ``s``
    and group ``i`` (``per_cluster`` (K, 2, G + 1, N_STATES))."""
    states = StateCounts.of(per_cluster[:, s, i])
    return _Clusters(successes=states.successes(metric), images=states.valid)


# ------------------------------------------------------------------ bootstrap statistic


def treatment_columns(n_groups: int) -> Columns:
    """The columns of :func:`treatment_statistic`: the impact ratio of each of
    :data:`RATE_METRICS` per source and group (2, G + 1), then Fairlearn's demographic
    parity difference and ratio and equalized odds difference."""
    per_group = (len(SOURCES), n_groups + 1)
    return Columns((*((metric, per_group) for metric in RATE_METRICS),
                    ("demographic_parity_difference", ()), ("demographic_parity_ratio", ()),
                    ("equalized_odds_difference", ())))


def treatment_statistic(layout: CellLayout, eligible: np.ndarray, used: np.ndarray) -> Statistic:
    """The statistic ``cells (B, C) -> (B, M)`` of one grouping's impact ratios and
    disparities, in the columns of :func:`treatment_columns`.

    Parameters
    ----------
    layout
        Where the grouping's treatment cells sit.
    eligible
        (2, G + 1) bool: groups whose rate may be the highest of impact ratios.
    used
        (G + 1,) bool: groups entering demographic parity and equalized odds.

    The rates themselves are not bootstrapped: they are counts k of n, with Wilson
    intervals (:func:`measure_treatment`).
    """
    columns = treatment_columns(layout.n_groups)

    def stat(cells: np.ndarray) -> np.ndarray:
        states = StateCounts.of(layout.audit(cells).astype(float))     # (B, 2, G + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = {metric: _impact_ratios(states.successes(metric) / states.valid, eligible)
                      for metric in RATE_METRICS}
        values.update(_disparities(states, used))
        return columns.pack(values)

    return stat


def _impact_ratios(rate: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Rates (B, 2, G + 1) -> their ratios to the highest rate of an ``eligible`` group of
    the same source; NaN where that rate is not positive or no group is eligible."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if eligible.any():
            top = np.nanmax(np.where(eligible, rate, np.nan), axis=2, initial=-np.inf,
                            keepdims=True)
        else:
            top = np.full((*rate.shape[:2], 1), np.nan)
        top = np.where(np.isfinite(top) & (top > 0), top, np.nan)
        return rate / top


def _disparities(states: StateCounts, used: np.ndarray) -> dict[str, np.ndarray]:
    """Fairlearn's demographic parity difference and ratio and equalized odds difference
    (B,) over the groups ``used``, with real as the positive outcome and acceptance as the
    decision (``states`` (B, 2, G + 1))."""
    valid, acc = states.valid, states.accepted
    # (B, G + 1, y_true, y_pred) cells over both sources: y_true = real, y_pred = accepted.
    fair = np.stack([np.stack([valid[:, 1] - acc[:, 1], acc[:, 1]], axis=-1),
                     np.stack([valid[:, 0] - acc[:, 0], acc[:, 0]], axis=-1)], axis=-2)
    rates = confusion_rates(fair)
    sel = np.where(used, rates["selection_rate"], np.nan)                 # (B, G + 1)
    tpr = np.where(used, rates["true_positive_rate"], np.nan)
    fpr = np.where(used, rates["false_positive_rate"], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"demographic_parity_difference": np.nanmax(sel, axis=1) - np.nanmin(sel, axis=1),
                "demographic_parity_ratio": np.nanmin(sel, axis=1) / np.nanmax(sel, axis=1),
                "equalized_odds_difference": np.maximum(
                    np.nanmax(tpr, axis=1) - np.nanmin(tpr, axis=1),
                    np.nanmax(fpr, axis=1) - np.nanmin(fpr, axis=1))}


@dataclass(frozen=True)
class TreatmentIntervals:
    """Bootstrap intervals [low, high] of one grouping's impact ratios and disparities.

    Attributes
    ----------
    impact_ratio
        ``{metric: (2, G + 1, 2)}`` per source and group, for each of :data:`RATE_METRICS`.
    demographic_parity_difference, demographic_parity_ratio, equalized_odds_difference
        (2,) each.
    """

    impact_ratio: dict[str, np.ndarray]
    demographic_parity_difference: np.ndarray
    demographic_parity_ratio: np.ndarray
    equalized_odds_difference: np.ndarray


def _bootstrap_intervals(layout: CellLayout, counts: GroupCounts, cells: np.ndarray,
                         draws: np.ndarray, spec: BootstrapSpec,
                         cluster_matrix: np.ndarray | None) -> TreatmentIntervals:
    """The intervals of :func:`treatment_statistic` from the cells (C,) and their draws
    (B, C) (``cluster_matrix`` (K, C): the clusters they resampled, for BCa)."""
    stat = treatment_statistic(layout, counts.eligible, counts.used)
    _, ci = cell_interval(stat, cells, draws, spec, cluster_matrix)
    blocks = treatment_columns(layout.n_groups).unpack(ci)
    return TreatmentIntervals(
        impact_ratio={metric: blocks[metric] for metric in RATE_METRICS},
        demographic_parity_difference=blocks["demographic_parity_difference"],
        demographic_parity_ratio=blocks["demographic_parity_ratio"],
        equalized_odds_difference=blocks["equalized_odds_difference"])


# ------------------------------------------------------------------ rates


@dataclass(frozen=True)
class _CellTable:
    """The cells of a grouping's images with a finite score as weighted rows, one per
    (source, group, score state): what Fairlearn's ``MetricFrame`` reads. Each (R,)."""

    source: np.ndarray          # 0 real, 1 generated
    group: np.ndarray           # group code, unknown = G
    accepted: np.ndarray        # 0 / 1
    above_median: np.ndarray    # 0 / 1
    weight: np.ndarray          # images in the cell

    @classmethod
    def of(cls, by_state: np.ndarray) -> _CellTable:
        """From image counts (2, G + 1, N_STATES) by source, group and score state."""
        idx = np.indices(by_state.shape).reshape(3, -1)
        keep = idx[2] != ScoreState.INVALID
        state = idx[2][keep]
        return cls(source=idx[0][keep], group=idx[1][keep],
                   accepted=np.isin(state, ACCEPTED_STATES).astype(int),
                   above_median=np.isin(state, ABOVE_MEDIAN_STATES).astype(int),
                   weight=by_state.reshape(-1)[keep])


@dataclass(frozen=True)
class Rates:
    """A grouping's acceptance and scoring rates per source and group, (2, G + 1).

    Attributes
    ----------
    value
        ``{metric: (2, G + 1)}``: Fairlearn ``MetricFrame``'s estimates on the cell table;
        NaN where a group has no image with a finite score.
    ci
        ``{metric: (2, G + 1, 2)}``: Wilson intervals (on Kish's effective counts under
        ``cluster_by``), never of zero width; see audit/intervals.py.
    selection_ci
        (G + 1, 2): Wilson intervals of the selection rate over both sources.
    """

    value: dict[str, np.ndarray]
    ci: dict[str, np.ndarray]
    selection_ci: np.ndarray

    def estimate(self, metric: str, counts: GroupCounts, s: int, i: int) -> dict[str, Any]:
        """The results.json estimate of ``metric`` for source ``s`` and group ``i``."""
        return estimate(self.value[metric][s, i], self.ci[metric][s, i],
                        int(counts.states.valid[s, i]),
                        int(counts.states.successes(metric)[s, i]))


def _rates(grouping: Grouping, table: _CellTable, counts: GroupCounts,
           per_cluster: np.ndarray | None, *, confidence: float) -> Rates:
    """The rates of a grouping: Fairlearn's point estimates and Wilson intervals
    (``per_cluster`` (K, 2, G + 1, N_STATES) under ``cluster_by``)."""
    states = counts.states
    ci = {metric: wilson_interval(*_rate_counts(states, metric, per_cluster),
                                  confidence=confidence) for metric in RATE_METRICS}
    both = StateCounts(valid=states.valid.sum(axis=0, keepdims=True),
                       accepted=states.accepted.sum(axis=0, keepdims=True),
                       above_median=states.above_median.sum(axis=0, keepdims=True))
    both_clusters = None if per_cluster is None else per_cluster.sum(axis=1, keepdims=True)
    selection = wilson_interval(*_rate_counts(both, "acceptance_rate", both_clusters),
                                confidence=confidence)[0]
    return Rates(value=_fairlearn_rates(grouping, table), ci=ci, selection_ci=selection)


def _rate_counts(states: StateCounts, metric: str, per_cluster: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Successes and images (S, G + 1) of ``metric`` per source and group; under
    cluster_by (``per_cluster`` (K, S, G + 1, N_STATES)) Kish's effective counts, as the
    tests use."""
    k, n = states.successes(metric).astype(float), states.valid.astype(float)
    if per_cluster is None:
        return k, n
    for s, i in zip(*np.nonzero(states.valid > 0), strict=True):
        clusters = _rate_clusters(per_cluster, s, i, metric)
        eff = effective_counts(clusters.successes, clusters.images)
        k[s, i], n[s, i] = eff.successes, eff.images
    return k, n


def _fairlearn_rates(grouping: Grouping, table: _CellTable) -> dict[str, np.ndarray]:
    """The rates ``{metric: (2, G + 1)}`` from Fairlearn's ``MetricFrame`` on the cell
    table (scoring rate: the share of rows above the median); NaN where a group has no
    image with a finite score."""
    import pandas as pd

    labels = grouping.labels()
    out = {m: np.full((2, len(labels)), np.nan) for m in RATE_METRICS}
    if table.weight.sum() > 0:
        sens = pd.DataFrame({"source": np.array(SOURCES)[table.source],
                             "group": np.array(labels)[table.group]})
        frame = cell_metric_frame({"acceptance_rate": _selection_rate(),
                                   "scoring_rate": _weighted_true_mean},
                                  table.above_median, table.accepted, sens, table.weight)
        for (s_name, g_name), row in frame.by_group.iterrows():
            for m in RATE_METRICS:
                out[m][SOURCES.index(s_name), labels.index(g_name)] = row[m]
    return out


def _selection_rate():
    from fairlearn.metrics import selection_rate

    return selection_rate


# ------------------------------------------------------------------ the section


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
    (section, tests, exclusions, degenerate): the section as in results.schema.json
    (``$defs/treatment``), test records without corrected p-values, the groups left out
    of impact ratios, and degenerate cases found.
    """
    by_state = layout.audit(cells[None, :])[0]                 # (2, G + 1, N_STATES)
    counts = _group_counts(grouping.n_groups, by_state, settings)
    per_cluster = None if cluster_matrix is None else \
        layout.audit(np.asarray(cluster_matrix))               # (K, 2, G + 1, N_STATES)
    boot = _bootstrap_intervals(layout, counts, cells, draws, spec, cluster_matrix)
    table = _CellTable.of(by_state)
    rates = _rates(grouping, table, counts, per_cluster, confidence=spec.confidence)
    means = _mean_scores(grouping, scores, source, spec=spec, rng=rng, clusters=clusters)
    impact, tests, degenerate = _impact(grouping, counts, rates, boot, settings, per_cluster)
    section = {
        "concept": grouping.name, "concepts": list(grouping.concepts),
        "protected": grouping.protected, "groups": list(grouping.groups),
        "median_real_score": median, "accept_threshold": float(settings.accept_threshold),
        "rows": _rows(grouping, counts, rates, means), "impact": impact,
        "fairlearn": _fairlearn_section(grouping, table, counts, rates, boot),
    }
    return section, tests, _exclusions(grouping, counts, rates), degenerate


class _Means(NamedTuple):
    """Mean finite score per source and group (2, G + 1) and its interval (2, G + 1, 2)."""

    value: np.ndarray
    ci: np.ndarray


def _mean_scores(grouping: Grouping, scores: np.ndarray, source: np.ndarray, *,
                 spec: BootstrapSpec, rng: np.random.Generator,
                 clusters: np.ndarray | None = None) -> _Means:
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
    return _Means(value=point.reshape(2, g1), ci=ci.reshape(2, g1, 2))


def _rows(grouping: Grouping, counts: GroupCounts, rates: Rates, means: _Means
          ) -> list[dict[str, Any]]:
    """The section's ``rows``: one per source and group (unknown only where it has
    images), with counts, share, mean score and both rates."""
    rows = []
    for s, s_name in enumerate(SOURCES):
        for i, label in enumerate(grouping.labels()):
            if counts.n[s, i] == 0 and i == grouping.n_groups:
                continue
            valid = int(counts.states.valid[s, i])
            rows.append({
                "group": label, "source": s_name, "n": int(counts.n[s, i]),
                "n_invalid_score": int(counts.invalid[s, i]),
                "share_of_source": finite_or_none(counts.share[s, i]),
                "mean_score": estimate(means.value[s, i], means.ci[s, i], valid),
                "scoring_rate": rates.estimate("scoring_rate", counts, s, i),
                "acceptance_rate": rates.estimate("acceptance_rate", counts, s, i),
                "small": bool(counts.small[s, i]),
                "excluded": bool(counts.excluded[s, i]),
                "exclusion_reason": counts.reasons.get((s, i)) if counts.excluded[s, i]
                else None,
            })
    return rows


def _exclusions(grouping: Grouping, counts: GroupCounts, rates: Rates
                ) -> list[dict[str, Any]]:
    """The ``exclusions`` records: groups with images left out of impact ratios."""
    out = []
    for s, s_name in enumerate(SOURCES):
        for i, label in enumerate(grouping.labels()):
            if counts.excluded[s, i] and counts.n[s, i] > 0:
                out.append({
                    "concept": grouping.name, "group": label, "source": s_name,
                    "n": int(counts.n[s, i]), "share": finite_or_none(counts.share[s, i]),
                    "scoring_rate": finite_or_none(rates.value["scoring_rate"][s, i]),
                    "acceptance_rate": finite_or_none(rates.value["acceptance_rate"][s, i]),
                    "reason": counts.reasons[(s, i)]})
    return out


# ------------------------------------------------------------------ Fairlearn's disparities


def _fairlearn_section(grouping: Grouping, table: _CellTable, counts: GroupCounts,
                       rates: Rates, boot: TreatmentIntervals) -> dict[str, Any]:
    """The section's ``fairlearn`` record: demographic parity and equalized odds over the
    groups used (real as the positive outcome, acceptance as the decision), from
    Fairlearn's ``MetricFrame`` on the cell table, with bootstrap intervals."""
    labels = grouping.labels()
    used = counts.used
    fair: dict[str, Any] = {
        "groups_used": [labels[i] for i in range(len(labels)) if used[i]], "per_group": [],
        "demographic_parity_difference": estimate(None, None, 0),
        "demographic_parity_ratio": estimate(None, None, 0),
        "equalized_odds_difference": estimate(None, None, 0)}
    rows = used[table.group]
    if not rows.any() or not table.weight[rows].sum() > 0:
        return fair
    frame = fairlearn_by_cells(np.array(labels)[table.group][rows],
                               (table.source[rows] == 0).astype(int), table.accepted[rows],
                               table.weight[rows])
    n_used = int(table.weight[rows].sum())
    diff, ratio = frame.difference(), frame.ratio()
    states = counts.states
    selection = np.where(used, states.accepted.sum(axis=0)
                         / np.maximum(states.valid.sum(axis=0), 1), np.nan)
    lowest, highest = _min_max(selection, rates.selection_ci)
    fair["demographic_parity_difference"] = estimate(
        diff["selection_rate"], boot.demographic_parity_difference, n_used)
    fair["demographic_parity_ratio"] = _ratio_estimate(
        ratio["selection_rate"], boot.demographic_parity_ratio, n_used, numerator=lowest,
        denominator=highest, what="the highest selection rate")
    fair["equalized_odds_difference"] = estimate(
        max(diff["true_positive_rate"], diff["false_positive_rate"]),
        boot.equalized_odds_difference, n_used)
    fair["per_group"] = [_fairlearn_group(label, row, counts, rates, labels.index(label))
                         for label, row in frame.by_group.iterrows()]
    return fair


def _fairlearn_group(label: Any, row: pd.Series, counts: GroupCounts, rates: Rates,
                     i: int) -> dict[str, Any]:
    """One ``per_group`` record of the ``fairlearn`` record: Fairlearn's selection rate,
    TPR (acceptance of real images) and FPR (of generated ones) of group ``i``, with
    Wilson intervals."""
    valid, acc = counts.states.valid, counts.states.accepted
    acceptance_ci = rates.ci["acceptance_rate"]
    return {"group": label, "count": int(row["count"]),
            "selection_rate": estimate(row["selection_rate"], rates.selection_ci[i],
                                       int(valid[:, i].sum()), int(acc[:, i].sum())),
            "true_positive_rate": estimate(row["true_positive_rate"], acceptance_ci[0, i],
                                           int(valid[0, i]), int(acc[0, i])),
            "false_positive_rate": estimate(row["false_positive_rate"], acceptance_ci[1, i],
                                            int(valid[1, i]), int(acc[1, i]))}


class _RateAt(NamedTuple):
    """One rate and its interval [low, high]."""

    value: float
    ci: np.ndarray


def _min_max(rate: np.ndarray, ci: np.ndarray) -> tuple[_RateAt, _RateAt]:
    """Lowest and highest finite ``rate`` (G,) with their intervals (G, 2)."""
    ok = np.flatnonzero(np.isfinite(rate))
    if not len(ok):
        missing = _RateAt(np.nan, np.full(2, np.nan))
        return missing, missing
    lo, hi = ok[np.argmin(rate[ok])], ok[np.argmax(rate[ok])]
    return _RateAt(float(rate[lo]), ci[lo]), _RateAt(float(rate[hi]), ci[hi])


def _ratio_estimate(value: float | None, ci: np.ndarray, n: int, *, numerator: _RateAt,
                    denominator: _RateAt, what: str) -> dict[str, Any]:
    """The estimate of a ratio of two rates: the bootstrap interval ``ci``, or, where it
    has zero width (a rate of 0 or 1 in every replicate), the MOVER-R interval from the
    rates' Wilson intervals; with a denominator of 0 the interval is [0, None] and says
    why (``what`` names the denominator)."""
    if denominator.value == 0:
        return estimate(None, np.array([0.0, np.inf]), n, unbounded=(
            f"{what} is 0, so the ratio's denominator is 0: it is undefined and its interval "
            f"has no upper bound"))
    if (value is not None and np.isfinite(value) and zero_width(ci)
            and np.isfinite(denominator.value)):
        ci = mover_ratio(numerator.value, numerator.ci, denominator.value, denominator.ci)
    return estimate(value, ci, n)


# ------------------------------------------------------------------ impact ratios


@dataclass(frozen=True)
class _Comparison:
    """The groups of one source compared on one rate.

    ``top`` is the group with the highest rate among those eligible (ties: the first),
    None when there is none or its rate is 0 (``zero_top``); ``n_candidates`` counts the
    eligible groups with a rate.
    """

    metric: str
    source: int
    top: int | None
    zero_top: bool
    n_candidates: int


def _compare(counts: GroupCounts, rates: Rates, metric: str, s: int, n_groups: int
             ) -> _Comparison:
    """The :class:`_Comparison` of source ``s``'s known groups on ``metric``."""
    rate = rates.value[metric][s]
    cand = [i for i in range(n_groups) if counts.eligible[s, i] and np.isfinite(rate[i])]
    top = max(cand, key=lambda i: (rate[i], -i)) if cand else None
    zero_top = top is not None and rate[top] == 0
    return _Comparison(metric=metric, source=s, top=None if zero_top else top,
                       zero_top=zero_top, n_candidates=len(cand))


def _impact(grouping: Grouping, counts: GroupCounts, rates: Rates, boot: TreatmentIntervals,
            settings: MeasureSettings, per_cluster: np.ndarray | None = None
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Impact ratios, four-fifths verdicts and their tests, per metric and source (with
    ``per_cluster``, (K, 2, G + 1, N_STATES) image counts under ``cluster_by``: the
    cluster-robust z test of the two rates). Returns (impact, tests, degenerate)."""
    impact, tests, degenerate = [], [], []
    for metric in RATE_METRICS:
        for s, s_name in enumerate(SOURCES):
            cmp = _compare(counts, rates, metric, s, grouping.n_groups)
            if cmp.zero_top:
                degenerate.append({
                    "kind": "zero_highest_rate", "concept": grouping.name, "group": None,
                    "source": s_name, "count": None,
                    "message": f"no {s_name} image of any {grouping.name} group has a positive "
                               f"{_words(metric)}; impact ratios are undefined"})
            for i in range(grouping.n_groups):
                if counts.states.valid[s, i] == 0:
                    continue
                record, test = _impact_record(grouping, counts, rates, boot, cmp, i,
                                              settings, per_cluster)
                impact.append(record)
                if test is not None:
                    tests.append(test)
    return impact, tests, degenerate


def _words(metric: str) -> str:
    """A metric's name in prose: ``acceptance_rate`` -> ``acceptance rate``."""
    return metric.replace("_", " ")


def _impact_record(grouping: Grouping, counts: GroupCounts, rates: Rates,
                   boot: TreatmentIntervals, cmp: _Comparison, i: int,
                   settings: MeasureSettings, per_cluster: np.ndarray | None
                   ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Group ``i``'s ``impact`` record (rate, impact ratio, four-fifths verdict or why
    there is none) and its test record (None where there is no test)."""
    s, metric, top = cmp.source, cmp.metric, cmp.top
    labels = grouping.labels()
    rate = rates.value[metric]
    ratio = (rate[s, i] / rate[s, top] if top is not None and not counts.excluded[s, i]
             else np.nan)
    reason = _no_verdict_reason(counts, cmp, i, settings)
    verdict, test = FourFifths.NO_VERDICT, None
    if reason is None:
        verdict = (FourFifths.ADVERSE_IMPACT if ratio < settings.impact_threshold
                   else FourFifths.PASS)
        if top is not None and i != top and grouping.protected:
            test = _treatment_test(grouping, counts, metric, s, i, top, per_cluster)
    record = {"metric": metric, "source": SOURCES[s], "group": labels[i],
              "rate": rates.estimate(metric, counts, s, i),
              "highest_group": None if top is None else labels[top],
              "ratio": _impact_ratio(counts, rates, boot, cmp, i, ratio),
              "four_fifths": verdict, "reason": reason,
              "test_id": None if test is None else test["id"]}
    return record, test


def _impact_ratio(counts: GroupCounts, rates: Rates, boot: TreatmentIntervals,
                  cmp: _Comparison, i: int, ratio: float) -> dict[str, Any]:
    """The estimate of group ``i``'s impact ratio ``ratio``: undefined with an unbounded
    interval when the highest rate is 0, the MOVER-R interval where the bootstrap's has
    zero width, else the bootstrap interval."""
    s, metric, top = cmp.source, cmp.metric, cmp.top
    ci = boot.impact_ratio[metric][s, i]
    rate, rate_ci = rates.value[metric], rates.ci[metric]
    n = int(counts.states.valid[s, i])
    if cmp.zero_top and not counts.excluded[s, i]:
        zero = _RateAt(0.0, rate_ci[s, i])
        return _ratio_estimate(None, ci, n, numerator=zero, denominator=zero,
                               what=f"the highest {_words(metric)}")
    if top is not None and i != top and not counts.excluded[s, i]:
        return _ratio_estimate(ratio, ci, n, numerator=_RateAt(rate[s, i], rate_ci[s, i]),
                               denominator=_RateAt(rate[s, top], rate_ci[s, top]),
                               what="the highest rate")
    return estimate(ratio, ci, n)


def _no_verdict_reason(counts: GroupCounts, cmp: _Comparison, i: int,
                       settings: MeasureSettings) -> str | None:
    """Why group ``i`` gets no four-fifths verdict, or None when it gets one."""
    s = cmp.source
    if counts.excluded[s, i]:
        return "excluded from impact ratios"
    if cmp.zero_top:
        return f"the highest {_words(cmp.metric)} is 0: the ratio's denominator is 0"
    if cmp.top is None:
        return "no group large enough to compare with"
    if counts.small[s, i]:
        return f"n = {int(counts.states.valid[s, i])} < min_group_n = {settings.min_group_n}"
    if cmp.n_candidates < 2:
        return "only one group large enough to compare"
    return None


def _treatment_test(grouping: Grouping, counts: GroupCounts, metric: str, s: int, i: int,
                    top: int, per_cluster: np.ndarray | None) -> dict[str, Any]:
    """The test record of group ``i``'s ``metric`` against the highest group's (``top``)
    in source ``s``: the two-proportion z test (Fisher's exact with small expected
    counts), or under ``cluster_by`` the same on Kish's effective counts."""
    labels = grouping.labels()
    k, n = counts.states.successes(metric), counts.states.valid
    tally: dict[str, Any] = {"k1": int(k[s, i]), "n1": int(n[s, i]), "k2": int(k[s, top]),
                             "n2": int(n[s, top]), "expected": None}
    if per_cluster is None:
        res = two_proportion_test(tally["k1"], tally["n1"], tally["k2"], tally["n2"])
    else:
        one, two = (_rate_clusters(per_cluster, s, j, metric) for j in (i, top))
        res = clustered_proportion_test(one.successes, one.images, two.successes, two.images)
        tally["n1_effective"] = effective_counts(one.successes, one.images).images
        tally["n2_effective"] = effective_counts(two.successes, two.images).images
    return {"id": f"T-TRT-{grouping.name}-{labels[i]}-{SOURCES[s]}-{metric}",
            "kind": "treatment", "method": res.method, "concept": grouping.name,
            "group": labels[i], "versus": labels[top], "source": SOURCES[s], "metric": metric,
            "counts": tally, "statistic": res.statistic, "p_value": res.p_value,
            "p_holm": None, "p_bh": None}
