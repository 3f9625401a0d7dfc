"""Counterfactual treatment: does the discriminator's score move when only the decoded concept
is edited? (issue 22 item 4; InterFaceGAN, Shen et al. 2020; TCAV, Kim et al. 2018)

The counterfactual stage (:mod:`audit.counterfactual`) edits sampled latents of the generator
along a direction that changes a protected concept as the run's decoders read it, and records
every edited image's decoded probabilities and D score in ``counterfactual/edits.parquet``.
This module is the arithmetic on both ends of it, numpy only:

- :func:`latents_to_direction`: the direction. An ordinary least-squares fit of the decoder's
  log-odds of one group (against the rest) on the latents, the unit vector of its
  coefficients. Least squares on the log-odds rather than a logistic regression on the decoded
  group: it keeps how sure the decoder is (an image read at 0.55 and one read at 0.99 are not
  the same), it has a closed form, and it never diverges when the decoded groups are linearly
  separable in the latent space, which they often are. One direction per group against the
  rest (a binary concept: its positive group only), so that a one-of-K concept gets K tests,
  not K(K-1)/2 pairs.
- :func:`paired_effect`: the effect. Each latent is its own control: the within-latent
  (fixed-effects) least-squares slope of D's score on the decoded probability of the group
  along the edit, pooled over latents; a percentile bootstrap over latents for its interval
  and p-value (the p-value inverts the interval: p < alpha exactly when the 1 - alpha
  interval excludes 0), and the cluster-robust standard error as a cross-check. The slope is
  per unit of probability: the change of D's score between an image decoded as "surely not
  the group" and one decoded as "surely the group". A slope per unit of log-odds would be
  dominated by the saturated ends of the edit, where the log-odds still move and the images
  no longer do.

  The tested slope holds the edit's smooth drift fixed (:func:`drift_covariates`: the offset
  and its square, common to all latents). An edit in latent space changes more than the
  concept (the digit's shape, its stroke: the leakage), and D may well score those: on the
  demo, a discriminator made blind to tone showed the same unadjusted slope as the demo D
  (docs/VALIDATION.md). The decoded concept, though, switches within a short stretch of the
  edit, at a different offset for each latent, while the rest drifts with the distance
  edited; the slope on the probability beyond a quadratic drift is what moves with the
  switch. The unadjusted slope is reported too (``unadjusted``). Where the probability
  itself changes linearly with the offset the effect is not identified, its interval is
  wide and nothing is claimed.
- :func:`edit_leakage`: what else the edit changed. Per concept, the mean total variation
  distance between the decoded group distributions at the two ends of the edit; the edited
  concept's own change is the yardstick.
- :func:`counterfactual_section` and :func:`counterfactual_findings`: results.json's
  ``counterfactual`` section (Holm across every tested direction) and its findings
  (``F-CFT-<concept>-<group>``, kind ``counterfactual_treatment``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.errors import DataError
from audit.formatting import interval
from audit.measure.findings import FindingRecord, _finding, finding_validity
from audit.measure.stats import adjust_pvalues
from audit.vocabulary import Severity

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LOGIT_CLIP", "Direction", "concept_logit", "latents_to_direction", "within_slope",
           "paired_effect", "drift_covariates", "edit_effect", "edit_leakage",
           "counterfactual_section", "counterfactual_findings",
           "CounterfactualData", "counterfactual_results", "CAVEAT"]

#: Decoded probabilities are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] before the log-odds.
LOGIT_CLIP = 1e-4
KIND = "counterfactual_treatment"
CAVEAT = ("The direction is what the run's decoders read as the concept in the generator's "
          "latent space, not the concept itself: an edit along it changes whatever the "
          "decoders respond to, and anything the generator ties to it.")


def concept_logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of decoded probabilities ``p`` (any shape), clipped to +-9.2."""
    q = np.clip(np.asarray(p, dtype=float), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(q) - np.log1p(-q)


@dataclass(frozen=True)
class Direction:
    """A unit direction in latent space along which a decoded concept changes.

    Attributes
    ----------
    vector : (D,) float64, unit norm
        In the flattened latent space.
    logit_per_unit : float
        Fitted change of the decoder's log-odds per unit step along ``vector`` (the norm of
        the least-squares coefficients; latents are standard normal, so one unit is one
        standard deviation of a latent's component along it).
    r2 : float
        Share of the log-odds' variance the linear fit explains, on the fitting latents.
    n : int
        Latents the direction was fitted on.
    """

    vector: np.ndarray
    logit_per_unit: float
    r2: float
    n: int


def latents_to_direction(latents: np.ndarray, logit: np.ndarray) -> Direction:
    """The least-squares direction of the decoded log-odds in latent space.

    Parameters
    ----------
    latents : N x latent shape float
        The generator's input latents (flattened to N x D).
    logit : (N,) float
        The decoder's log-odds of one group for each latent's image (:func:`concept_logit`).

    Raises
    ------
    DataError
        With fewer latents than D + 2, or when the log-odds do not vary.
    """
    z = np.asarray(latents, dtype=float).reshape(len(latents), -1)
    y = np.asarray(logit, dtype=float)
    n, d = z.shape
    if len(y) != n:
        raise DataError(f"{n} latents but {len(y)} decoded values.")
    if n < d + 2:
        raise DataError(f"fitting a direction in a {d}-dimensional latent space needs at least "
                        f"{d + 2} latents, got {n}: raise generator.n (the audited "
                        f"generated images the direction is fitted on).")
    yc = y - y.mean()
    total = float(yc @ yc)
    if total <= 0:
        raise DataError("the decoded concept does not vary over the sampled latents: no "
                        "direction changes it.")
    coef, *_ = np.linalg.lstsq(z - z.mean(axis=0), yc, rcond=None)
    norm = float(np.linalg.norm(coef))
    if norm == 0:
        raise DataError("the decoded concept does not depend linearly on the latents.")
    resid = yc - (z - z.mean(axis=0)) @ coef
    return Direction(vector=coef / norm, logit_per_unit=norm,
                     r2=float(1 - (resid @ resid) / total), n=n)


def _within_sums(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per latent (row), sum of squares of x and cross-products of x and y about the row
    means: (L,) and (L,)."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    return (xc * xc).sum(axis=1), (xc * yc).sum(axis=1)


def within_slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """The fixed-effects slope of ``y`` on ``x``: each row (a latent) its own intercept.

    Parameters
    ----------
    x, y : L x S float
        L latents at S steps of their edit (x: decoded probability, y: D score).

    Returns
    -------
    float, or None when x does not vary within any row.
    """
    sxx, sxy = _within_sums(np.asarray(x, float), np.asarray(y, float))
    total = float(sxx.sum())
    return None if total <= 0 else float(sxy.sum() / total)


def _pooled(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per latent, the Gram matrix and cross-products of the within-latent (demeaned) design
    (L x S x P) with y (L x S): (L x P x P) and (L x P)."""
    w = design - design.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    return np.einsum("lsp,lsq->lpq", w, w), np.einsum("lsp,ls->lp", w, yc)


def _solve_first(gram: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """The first coefficient of each system ``gram @ b = cross`` (... x P x P, ... x P);
    NaN where singular."""
    det_ok = np.abs(np.linalg.det(gram)) > 1e-12 * np.maximum(
        1.0, np.prod(np.diagonal(gram, axis1=-2, axis2=-1), axis=-1))
    safe = np.where(det_ok[..., None, None], gram, np.eye(gram.shape[-1]))
    return np.where(det_ok, np.linalg.solve(safe, cross[..., None])[..., 0, 0], np.nan)


def paired_effect(x: np.ndarray, y: np.ndarray, *, n_boot: int, seed: int,
                  confidence: float, covariates: np.ndarray | None = None) -> dict[str, Any]:
    """The within-latent slope of ``y`` on ``x`` with a bootstrap over latents.

    Parameters
    ----------
    x, y : L x S float
        Decoded probability of the edited group and D's score, L latents at S steps.
        Latents whose x or y is not finite at some step are left out (``n_dropped``).
    n_boot : int
        Bootstrap replicates; each draws L latents with replacement (multinomial weights on
        the per-latent sums: the same distribution as resampling latents, in one matrix
        product).
    seed : int
    confidence : float in (0, 1)
    covariates : L x S x C float, optional
        Held fixed in the regression (each latent still its own intercept): the slope is
        that of ``x`` in the within-latent least-squares fit of ``y`` on ``x`` and them.

    Returns
    -------
    dict
        ``value`` (the slope: D score per unit of probability), ``ci`` (percentile interval),
        ``p_value`` (two-sided bootstrap p: twice the smaller share of replicates on either
        side of 0, at least 1 / n_boot), ``se_cluster`` and ``p_cluster`` (cluster-robust
        standard error with statsmodels' small-sample factor G / (G - 1) x (N - 1) / (N - K),
        t test on G - 1 degrees of freedom), ``n`` (latents used), ``steps``, ``n_dropped``,
        ``x_range`` (mean over latents of the largest minus the smallest x along the edit).
    """
    from scipy import stats as st

    x, y = np.asarray(x, float), np.asarray(y, float)
    design = x[:, :, None] if covariates is None else np.concatenate(
        [x[:, :, None], np.asarray(covariates, float)], axis=2)
    ok = np.isfinite(design).all(axis=(1, 2)) & np.isfinite(y).all(axis=1)
    design, x, y = design[ok], x[ok], y[ok]
    g, k = len(x), design.shape[2]
    out: dict[str, Any] = {"value": None, "ci": None, "p_value": None, "se_cluster": None,
                           "p_cluster": None, "n": g, "steps": int(x.shape[1]),
                           "n_dropped": int((~ok).sum()),
                           "x_range": float(np.mean(x.max(axis=1) - x.min(axis=1)))
                           if g else None}
    if g < 2:
        return out
    gram, cross = _pooled(design, y)
    total = gram.sum(axis=0)
    slope = _solve_first(total, cross.sum(axis=0))
    if not np.isfinite(slope):
        return out
    beta = np.linalg.solve(total, cross.sum(axis=0))
    score = cross - gram @ beta  # each latent's share of the normal equations
    inv = np.linalg.inv(total)
    n_obs = g * x.shape[1]
    factor = g / (g - 1) * (n_obs - 1) / max(n_obs - k, 1)
    se = float(np.sqrt(factor * (inv @ (score.T @ score) @ inv)[0, 0]))
    out.update(value=float(slope), se_cluster=se)
    if se > 0:
        out["p_cluster"] = float(2 * st.t.sf(abs(slope / se), df=g - 1))
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        w = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot).astype(float)
        boot = _solve_first(np.einsum("bl,lpq->bpq", w, gram), w @ cross)
        boot = boot[np.isfinite(boot)]
        a = (1 - confidence) / 2
        out["ci"] = [float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))]
        tail = min(np.mean(boot <= 0), np.mean(boot >= 0))
        out["p_value"] = float(min(1.0, max(2 * tail, 1.0 / len(boot))))
    return out


def drift_covariates(offsets: np.ndarray, n: int) -> np.ndarray:
    """The smooth drift of an edit held fixed in the effect: the offset and its square at
    each step, for ``n`` latents (n x S x 2)."""
    t = np.asarray(offsets, float)
    return np.broadcast_to(np.stack([t, t * t], axis=1)[None], (n, len(t), 2)).copy()


def edit_effect(x: np.ndarray, y: np.ndarray, offsets: np.ndarray, *, n_boot: int, seed: int,
                confidence: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tested effect of one edited direction and its unadjusted slope.

    ``x``, ``y``: L x S decoded probability and D score; ``offsets``: the S edit offsets.
    Returns (:func:`paired_effect` with the drift held fixed, the plain within-latent slope
    without a bootstrap).
    """
    effect = paired_effect(x, y, n_boot=n_boot, seed=seed, confidence=confidence,
                           covariates=drift_covariates(offsets, len(x)))
    return effect, paired_effect(x, y, n_boot=0, seed=seed, confidence=confidence)


def edit_leakage(ends: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """How much an edit changes each concept: the mean over latents of the total variation
    distance between its decoded group distributions at the two ends of the edit.

    Parameters
    ----------
    ends : {concept: (first, last)}
        Each L x K: the decoded probabilities at the first and at the last step of the
        edit of L latents.

    Returns
    -------
    {concept: mean total variation in [0, 1]}
    """
    out = {}
    for concept, (first, last) in ends.items():
        tv = 0.5 * np.abs(np.asarray(last, float) - np.asarray(first, float)).sum(axis=1)
        tv = tv[np.isfinite(tv)]
        out[concept] = float(tv.mean()) if len(tv) else float("nan")
    return out


def _matrix(rows: pd.DataFrame, column: str, n_steps: int) -> np.ndarray:
    """One column of the edits of one direction as L x S (latents x steps)."""
    table = rows.pivot(index="latent", columns="step", values=column)
    if table.shape[1] != n_steps:
        raise DataError(f"counterfactual/edits.parquet: {table.shape[1]} steps for some "
                        f"direction, the directions document says {n_steps}.")
    return table.to_numpy(dtype=float)


def _direction_row(rows: pd.DataFrame, direction: Mapping[str, Any],
                   groups: Mapping[str, Sequence[str]], *, steps: int, n_boot: int, seed: int,
                   confidence: float) -> dict[str, Any]:
    """The section's record of one edited direction (before the multiple-testing family)."""
    concept, group = direction["concept"], direction["group"]
    x = _matrix(rows, f"prob__{concept}__{group}", steps)
    y = _matrix(rows, "score", steps)
    effect, raw = edit_effect(x, y, _matrix(rows, "offset", steps)[0], n_boot=n_boot,
                              seed=seed, confidence=confidence)
    ends = {c: (np.stack([_matrix(rows, f"prob__{c}__{g}", steps)[:, 0] for g in gs], axis=1),
                np.stack([_matrix(rows, f"prob__{c}__{g}", steps)[:, -1] for g in gs], axis=1))
            for c, gs in groups.items()}
    change = edit_leakage(ends)
    own = change.pop(concept)
    worst = max(change, key=lambda c: change[c], default=None)
    return {"concept": concept, "group": group,
            "effect": {"value": effect["value"], "ci": effect["ci"], "n": effect["n"]},
            "p_value": effect["p_value"], "p_holm": None, "significant": False,
            "se_cluster": effect["se_cluster"], "p_cluster": effect["p_cluster"],
            "unadjusted": {"value": raw["value"], "se_cluster": raw["se_cluster"],
                           "p_cluster": raw["p_cluster"]},
            "steps": effect["steps"], "n_dropped": effect["n_dropped"],
            "probability_range": effect["x_range"],
            "concept_change": own, "leakage": change,
            "max_leakage": None if worst is None else {"concept": worst, "value": change[worst]},
            "leakage_ratio": (None if worst is None or not own > 0
                              else change[worst] / own),
            "large_leakage": False,
            "direction": {k: direction.get(k) for k in ("r2", "logit_per_unit", "n_fit")},
            "strip": direction.get("strip")}


def counterfactual_section(edits: pd.DataFrame, document: Mapping[str, Any],
                           groups: Mapping[str, Sequence[str]], *, n_boot: int, seed: int,
                           alpha: float, max_leakage: float) -> list[dict[str, Any]]:
    """results.json's ``counterfactual`` rows: one per edited direction.

    Parameters
    ----------
    edits : the ``counterfactual/edits.parquet`` table
        One row per edited image: ``concept``, ``group`` (the direction), ``latent``,
        ``step``, ``offset``, ``score`` and ``prob__<concept>__<group>`` for every concept.
    document : the ``counterfactual/directions.json`` document
        ``steps`` and ``directions`` (each with ``concept``, ``group``, ``r2``,
        ``logit_per_unit``, ``n_fit``, ``strip``).
    groups : {concept: group names}
        Every decoded concept (leakage is measured on all of them).
    n_boot, seed, alpha
        The bootstrap; Holm across the directions at level ``alpha``.
    max_leakage : float
        An edit whose largest change of another concept exceeds this share of the edited
        concept's own change has ``large_leakage``.
    """
    steps = int(document["steps"])
    rows = []
    for k, direction in enumerate(document.get("directions") or []):
        sel = edits[(edits["concept"] == direction["concept"])
                    & (edits["group"] == direction["group"])]
        if sel.empty:
            raise DataError(f"counterfactual/edits.parquet has no rows for "
                            f"{direction['concept']} = {direction['group']}: re-run the "
                            f"counterfactual stage (gan-audit run CONFIG.yaml).")
        rows.append(_direction_row(sel, direction, groups, steps=steps, n_boot=n_boot,
                                   seed=seed + k, confidence=1 - alpha))
    holm, _ = adjust_pvalues([r["p_value"] for r in rows])
    for row, p in zip(rows, holm, strict=True):
        row["p_holm"] = p
        row["significant"] = p is not None and p < alpha
        row["large_leakage"] = (row["leakage_ratio"] is not None
                                and row["leakage_ratio"] > max_leakage)
    return rows


def _severity(row: Mapping[str, Any], high_effect: float, confidence: str) -> Severity:
    """High: significant after Holm, |effect| >= ``high_effect``, little leakage and a valid
    decoder; medium: significant after Holm with little leakage; low: significant but the
    edit also moved another concept a lot."""
    if row["large_leakage"]:
        return Severity.LOW
    big = abs(row["effect"]["value"]) >= high_effect
    return Severity.HIGH if big and confidence == "normal" else Severity.MEDIUM


def counterfactual_findings(rows: Sequence[Mapping[str, Any]], summary: dict[str, Any], *,
                            high_effect: float, weak_below: float) -> list[FindingRecord]:
    """One ``F-CFT-<concept>-<group>`` finding per direction significant after Holm.

    ``summary`` is results.json's ``validity`` section (the decoders' held-out validity).
    """
    out = []
    for row in rows:
        if not row["significant"]:
            continue
        concept, group = row["concept"], row["group"]
        validity, confidence = finding_validity(summary, [concept], [group], weak_below)
        value, ci = row["effect"]["value"], row["effect"]["ci"]
        leak = row["max_leakage"]
        leak_words = ("" if leak is None else
                      f" The edit also changed {leak['concept']} by {leak['value']:.2f} (mean "
                      f"total variation; {concept} itself by {row['concept_change']:.2f})"
                      + (": a large leakage, so part of the effect may come from it."
                         if row["large_leakage"] else "."))
        out.append(_finding(
            id=f"F-CFT-{concept}-{group}", kind=KIND,
            severity=_severity(row, high_effect, confidence), concept=concept, groups=[group],
            intersection=None, source="generated", metric="score_per_unit_probability",
            value=value, ci=ci, n=row["effect"]["n"], p_value=row["p_value"],
            p_holm=row["p_holm"], p_bh=None, threshold=high_effect,
            evidence={"steps": row["steps"], "se_cluster": row["se_cluster"],
                      "p_cluster": row["p_cluster"],
                      "probability_range": row["probability_range"],
                      "concept_change": row["concept_change"], "leakage": row["leakage"],
                      "leakage_ratio": row["leakage_ratio"],
                      "large_leakage": row["large_leakage"], "direction": row["direction"],
                      "caveat": CAVEAT},
            validity=validity, confidence=confidence,
            summary=(f"Editing generated images' latents along the direction the decoders "
                     f"read as {concept} = {group} changes the discriminator's score by "
                     f"{value:+.3g} per unit of decoded probability "
                     f"({interval(ci, kind='num')}, {row['effect']['n']} latents each its own "
                     f"control, Holm-corrected p = {row['p_holm']:.2g}).{leak_words} "
                     f"{CAVEAT}")))
    return out


@dataclass(frozen=True)
class CounterfactualData:
    """What the counterfactual stage wrote, and the settings to measure it with.

    Attributes
    ----------
    edits : the ``counterfactual/edits.parquet`` table
    document : the ``counterfactual/directions.json`` document
    settings : the config's ``counterfactual`` section (``high_effect``, ``max_leakage``,
        ``seed``)
    """

    edits: pd.DataFrame
    document: Mapping[str, Any]
    settings: Any


def counterfactual_results(data: CounterfactualData, groups: Mapping[str, Sequence[str]],
                           summary: dict[str, Any], *, n_boot: int, alpha: float,
                           weak_below: float) -> tuple[dict[str, Any], list[FindingRecord]]:
    """results.json's ``counterfactual`` section and its findings.

    ``groups``: every concept's group names; ``summary``: results.json's ``validity``.
    """
    s, doc = data.settings, data.document
    rows = counterfactual_section(data.edits, doc, groups, n_boot=n_boot, seed=s.seed,
                                  alpha=alpha, max_leakage=s.max_leakage)
    findings = counterfactual_findings(rows, summary, high_effect=s.high_effect,
                                       weak_below=weak_below)
    section = {"edited": doc.get("edited"), "n": doc.get("n"), "steps": doc.get("steps"),
               "span": doc.get("span"), "offsets": doc.get("offsets"),
               "truncation": doc.get("truncation"), "n_boot": n_boot,
               "confidence": 1 - alpha, "high_effect": s.high_effect,
               "max_leakage": s.max_leakage, "caveat": CAVEAT, "directions": rows}
    return section, findings
