"""From the per-image table to results.json: the measure stage's front.

:func:`predictions_to_results` is pure (tables and dicts in, a JSON-ready dict out);
:func:`measure_run` reads and writes a run folder around it;
:func:`results_to_tables` writes the report's tables as Parquet and CSV.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.errors import DataError, RunFolderError
from audit.measure.bootstrap import BootstrapSpec, cluster_cells, draw_cells, padded_cells
from audit.measure.distributions import score_bin_edges, score_histogram
from audit.measure.findings import (
    label_transfer_findings,
    results_to_findings,
    validity_summary,
    verdicts,
)
from audit.measure.groups import (
    N_STATES,
    SOURCES,
    CellLayout,
    Grouping,
    groupings,
    required_columns,
    score_states,
)
from audit.measure.knowledge import baseline_section
from audit.measure.labelled import labelled_transfer
from audit.measure.power import family_alpha, power_of_test
from audit.measure.representation import measure_representation
from audit.measure.sanity import discriminator_sanity
from audit.measure.stats import adjust_pvalues
from audit.measure.transfer import transfer_caveats, transfer_section
from audit.measure.treatment import measure_treatment
from audit.runfolder import read_run_file
from audit.vocabulary import FourFifths

if TYPE_CHECKING:
    import pandas as pd

    from audit.concepts import ConceptSet
    from audit.config import MeasureSettings

__all__ = ["SCHEMA_VERSION", "predictions_to_results", "measure_run", "run_meta",
           "results_to_tables", "write_tables", "results_schema", "validate_results",
           "check_schema_version"]

SCHEMA_VERSION = 2

NOTES = (
    "Real and generated shares are counted on the same basis: images with a true label count "
    "by it, and the decoded groups of the others (real or generated) are corrected with the "
    "decoders' held-out confusion matrices (A^T p = p_hat on the probability simplex). The "
    "correction assumes the decoder errs on audited images as it does on held-out real ones. "
    "Without a confusion matrix, or with unknown_below > 0 (A then does not describe the "
    "images left), nothing is corrected and both sides count decoded groups; each section's "
    "'correction' says which basis it used.",
    "Intersections are corrected with their joint confusion matrix, counted on the held-out "
    "images labelled for every crossed concept, so errors of one decoder that depend on "
    "another concept's group are corrected too. Where validity.json lacks it, or it has no "
    "held-out image of some intersectional group, the Kronecker product of the concepts' "
    "confusion matrices is used, which assumes the decoders err independently across "
    "concepts; each section's 'correction' says which.",
    "A decodable concept is one the discriminator's activations carry; it does not show that "
    "the discriminator uses it to score images.",
    "Intervals of corrected shares include the uncertainty of the confusion matrix: each "
    "bootstrap replicate also resamples the held-out set, per true group.",
    "The scoring rate is the share of a group scoring above the median score of all real "
    "audited images (New York City Local Law 144); the median is held fixed in the bootstrap.",
    "Share tests compare decoded shares of generated and real images (reference real), or "
    "decoded generated shares with those a uniform truth would give (reference uniform). A "
    "binary concept has one share test: the record of its second group names the first as "
    "duplicate_of and is left out of the Holm and Benjamini-Hochberg families.",
    "Rate point estimates come from Fairlearn's MetricFrame on the table of cell counts with "
    "counts as sample weights; demographic parity and equalized odds use real = positive "
    "outcome and accepted = score above accept_threshold, over groups not excluded.",
    "Rates and shares that are counts k of n (scoring and acceptance rates, Fairlearn's "
    "per-group rates, raw shares) have Wilson score intervals (on effective counts under "
    "cluster_by), never of zero width; derived numbers (corrected shares, gaps, ratios) have "
    "bootstrap intervals, replaced where every replicate gives the same value by the Wilson "
    "interval of the decoded count (corrected shares), Newcombe's MOVER difference (gaps) or "
    "the MOVER-R ratio of the two rates' Wilson intervals (Donner and Zou). A ratio whose "
    "denominator is 0 is undefined; its interval is [0, null] with the reason in 'unbounded'.",
    "Images with a NaN or infinite score are counted in representation but left out of every "
    "score-based number.",
    "Decoder transfer: for the layer each concept's decoder reads, generated images count as "
    "beyond the real range when their distance from the decoder's training activations (squared "
    "Mahalanobis distance in the principal components of the standardised paired train split, "
    "plus the squared residual off them, each scaled to mean 1 on the train split) exceeds the "
    "99th percentile of held-out real images' (paired val and test splits); the share has a "
    "Wilson interval. Generated images are out of distribution when its lower bound exceeds 5%; "
    "findings on their decoded groups (representation, coverage, treatment of generated "
    "images) then carry the caveat.",
    "Knowledge gain: the paired images are recorded again through the same discriminator "
    "with re-initialised weights (reset_parameters of every module, fixed seed) and decoders "
    "are trained on them with the same settings; the gain is the trained-D minus the random-D "
    "balanced accuracy on the same held-out test images, with a percentile bootstrap interval "
    "resampling them. Where it includes 0 the concept is decodable from pixels alone, which is "
    "no evidence of what the discriminator learnt.",
    "Score histograms count each concept's groups (true group where known, else decoded) per "
    "source in equal-width bins over the range of all finite audited scores, the same bins "
    "for every concept.",
)


def _grouping_rng(seed: int, name: str) -> np.random.Generator:
    """A stream per grouping, independent of the other groupings and of their order."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def _check(predictions: pd.DataFrame, concept_set: ConceptSet, settings: MeasureSettings
           ) -> pd.DataFrame:
    missing = [c for c in required_columns(concept_set, settings.unknown_below)
               if c not in predictions.columns]
    if missing:
        raise DataError(f"predictions table lacks column(s) {missing[:8]}"
                        f"{' ...' if len(missing) > 8 else ''} needed for concept set "
                        f"{concept_set.name!r} (see docs/ARCHITECTURE.md). Re-run the decode stage "
                        f"with this concept set.")
    audit = predictions[predictions["split"] == "audit"].reset_index(drop=True)
    bad = sorted(set(audit["source"].astype(str)) - set(SOURCES))
    if bad:
        raise DataError(f"predictions column 'source' holds {bad}; it must be 'real' or "
                        f"'generated'.")
    return audit


def predictions_to_results(predictions: pd.DataFrame, concept_set: ConceptSet,
                           validity: dict[str, Any], *, settings: MeasureSettings,
                           meta: dict[str, Any] | None = None,
                           transfer: dict[str, Any] | None = None,
                           baseline: dict[str, Any] | None = None,
                           labels: pd.DataFrame | None = None) -> dict[str, Any]:
    """Measure representation and treatment of every group: the results.json document.

    Parameters
    ----------
    predictions
        One row per image (docs/ARCHITECTURE.md, ``predictions.parquet``); only rows with
        ``split == "audit"`` are measured.
    concept_set
        The concepts decoded; protected ones get tests, findings and verdicts, and
        ``concept_set.intersections`` are crossed.
    validity
        The ``decoders/validity.json`` document (held-out confusion counts per concept).
    settings
        Thresholds and bootstrap settings.
    meta
        Passed through as ``meta`` (audit id, date, model spec, data sources, counts of
        skipped images, ...).
    transfer
        The ``decoders/transfer.json`` document (how far generated activations lie from
        the decoders' training images), or None: then no ``transfer`` caveat.
    baseline
        The ``baseline/random.json`` document (decoders on a random-weights D), or None:
        then no ``baseline`` (knowledge gain) section.
    labels
        People's labels of generated images (:func:`audit.labels.read_labels`), or None:
        then no ``label_transfer`` section (decoder transfer measured with labels,
        :mod:`audit.measure.labelled`) and no transfer-gap finding.

    Returns
    -------
    A JSON-ready dict that validates against ``results.schema.json``. Deterministic for
    a given input and ``settings.seed``.
    """
    from audit.io import to_jsonable

    audit = _check(predictions, concept_set, settings)
    spec = BootstrapSpec(n_boot=settings.n_boot, seed=settings.seed, method=settings.interval,
                         stratified=settings.stratified, confidence=1.0 - settings.alpha)
    images = _audited_images(audit, settings)
    degenerate = _input_degenerate(images, settings)
    per_concept, crossed = groupings(audit, concept_set, validity,
                                     unknown_below=settings.unknown_below)
    measured = _measure_groupings([*per_concept, *crossed], images, spec=spec,
                                  settings=settings)
    tests_by_id = _adjust_tests(measured.tests, settings=settings)
    summary = validity_summary(validity, concept_set.names)
    reps = [v["representation"] for v in measured.sections.values()]
    trts = [v["treatment"] for v in measured.sections.values()]
    sanity = discriminator_sanity(images.scores, images.source,
                                  accept_threshold=settings.accept_threshold,
                                  confidence=spec.confidence, clusters=images.clusters)
    if sanity["constant"]:
        _withhold_treatment_verdicts(trts)
    _mark_insufficient(reps, trts, tests_by_id, alpha=settings.alpha)
    transfer_rows = transfer_section(transfer, concept_set.names)
    findings = results_to_findings(reps, trts, tests_by_id, summary, settings=settings,
                                   protected=[c.name for c in concept_set.protected],
                                   discriminator=sanity,
                                   transfer=transfer_caveats(transfer_rows))
    labelled = labelled_transfer(audit[audit["source"] == "generated"], labels, validity,
                                 concept_set, settings=settings) if labels is not None else []
    findings = sorted([*findings, *label_transfer_findings(labelled, settings=settings)],
                      key=lambda f: f["id"])
    return to_jsonable(_document(
        concept_set=concept_set, settings=settings, spec=spec, images=images, meta=meta,
        per_concept=per_concept, crossed=crossed, measured=measured,
        degenerate=degenerate + measured.degenerate, sanity=sanity, summary=summary,
        transfer_rows=transfer_rows, baseline=baseline_section(baseline, concept_set.names),
        labelled=labelled, findings=findings,
        verdict_rows=verdicts(reps, trts, findings, summary, alpha=settings.alpha,
                              discriminator=sanity)))


@dataclass(frozen=True)
class _Images:
    """The audited images as arrays, each (N,) in the order of the audited rows."""

    source: np.ndarray                   #: int64, 0 real, 1 generated
    scores: np.ndarray                   #: float discriminator scores (NaN/inf possible)
    ids: np.ndarray                      #: image ids (str)
    finite: np.ndarray                   #: bool, the score is finite
    clusters: np.ndarray | None          #: cluster keys under cluster_by, or None
    n_clusters: dict[str, int] | None    #: clusters per source under cluster_by, or None
    median: float | None                 #: median finite score of the real images
    state: np.ndarray                    #: score state (:func:`score_states`)


def _audited_images(audit: pd.DataFrame, settings: MeasureSettings) -> _Images:
    """Sources, scores, ids, clusters and score states of the audited rows."""
    source = (audit["source"].astype(str) == "generated").to_numpy().astype(np.int64)
    scores = audit["score"].to_numpy(dtype=float)
    ids = audit["image_id"].astype(str).to_numpy()
    clusters = image_clusters(ids, source, settings.cluster_by)
    n_clusters = None if clusters is None else {
        name: len(np.unique(clusters[source == s])) for s, name in enumerate(SOURCES)}
    finite = np.isfinite(scores)
    real_scores = scores[(source == 0) & finite]
    median = float(np.median(real_scores)) if len(real_scores) else None
    state = score_states(scores, np.inf if median is None else median,
                         settings.accept_threshold)
    return _Images(source=source, scores=scores, ids=ids, finite=finite, clusters=clusters,
                   n_clusters=n_clusters, median=median, state=state)


def _input_degenerate(images: _Images, settings: MeasureSettings) -> list[dict[str, Any]]:
    """Degenerate cases of the audited images as a whole: few clusters (a single one is
    refused), no audited rows or none of a source, scores that are NaN or infinite."""
    source, ids = images.source, images.ids
    degenerate = _check_clusters(images.n_clusters, source, ids, settings.cluster_by)
    if len(source) == 0:
        degenerate.append({"kind": "no_rows", "concept": None, "group": None, "source": None,
                           "count": 0, "message": "the predictions table has no audited rows "
                                                  "(split == 'audit')"})
    for s, name in enumerate(SOURCES):
        if not np.any(source == s):
            degenerate.append({"kind": "no_rows", "concept": None, "group": None,
                               "source": name, "count": 0,
                               "message": f"no {name} image was audited"})
    if not images.finite.all():
        bad = ids[~images.finite]
        degenerate.append({
            "kind": "invalid_scores", "concept": None, "group": None, "source": None,
            "count": len(bad), "image_ids": [str(i) for i in bad[:settings.max_listed_ids]],
            "message": f"{len(bad)} image(s) have a NaN or infinite discriminator score; they are "
                       f"left out of mean scores and rates"
                       f"{' (first ids listed)' if len(bad) > settings.max_listed_ids else ''}"})
    return degenerate


@dataclass
class _Measured:
    """What measuring every grouping gives, before tests are corrected."""

    #: Grouping name -> ``{"representation": ..., "treatment": ...}`` sections.
    sections: dict[str, dict[str, Any]]
    tests: list[dict[str, Any]]
    exclusions: list[dict[str, Any]]
    degenerate: list[dict[str, Any]]


def _measure_groupings(all_groupings: list[Grouping], images: _Images, *, spec: BootstrapSpec,
                       settings: MeasureSettings) -> _Measured:
    """Representation and treatment of every grouping (concepts, then intersections), with
    a score histogram per concept."""
    edges = score_bin_edges(images.scores)
    measured = _Measured(sections={}, tests=[], exclusions=[], degenerate=[])
    for grouping in all_groupings:
        rep, trt, tests, excl, degen = _measure_grouping(
            grouping, source=images.source, state=images.state, scores=images.scores,
            median=images.median, spec=spec, settings=settings, clusters=images.clusters)
        if edges is not None and len(grouping.concepts) == 1:
            trt["score_histogram"] = score_histogram(images.scores, images.source,
                                                     grouping.best, grouping.labels(), edges)
        measured.sections[grouping.name] = {"representation": rep, "treatment": trt}
        measured.tests += tests
        measured.exclusions += excl
        measured.degenerate += degen
    return measured


def _adjust_tests(tests: list[dict[str, Any]], *, settings: MeasureSettings
                  ) -> dict[str, dict[str, Any]]:
    """Holm and Benjamini-Hochberg corrected p-values over the family of tests (a duplicate
    takes its twin's) and the power of every test, in place; the tests by id."""
    family = [t for t in tests if not t.get("duplicate_of")]
    holm, bh = adjust_pvalues([t["p_value"] for t in family])
    for t, h, b in zip(family, holm, bh, strict=True):
        t["p_holm"], t["p_bh"] = h, b
    by_id = {t["id"]: t for t in tests}
    for t in tests:
        if t.get("duplicate_of"):
            twin = by_id[t["duplicate_of"]]
            t["p_holm"], t["p_bh"] = twin["p_holm"], twin["p_bh"]
    test_alpha = family_alpha(settings.alpha, sum(h is not None for h in holm))
    for t in tests:
        t["power"] = power_of_test(t, alpha=test_alpha, settings=settings)
    return by_id


def _unknowns(per_concept: list[Grouping], source: np.ndarray, settings: MeasureSettings
              ) -> list[dict[str, Any]]:
    """Per concept and source, the images left unknown under ``unknown_below`` (none
    without it)."""
    unknowns = []
    if settings.unknown_below > 0:
        for g in per_concept:
            for s, name in enumerate(SOURCES):
                n_s = int(np.sum(source == s))
                k = int(np.sum((source == s) & (g.best == g.n_groups)))
                unknowns.append({"concept": g.name, "source": name, "n": k,
                                 "share": k / n_s if n_s else None,
                                 "threshold": float(settings.unknown_below)})
    return unknowns


def _document(*, concept_set: ConceptSet, settings: MeasureSettings, spec: BootstrapSpec,
              images: _Images, meta: dict[str, Any] | None, per_concept: list[Grouping],
              crossed: list[Grouping], measured: _Measured, degenerate: list[dict[str, Any]],
              sanity: dict[str, Any], summary: dict[str, Any],
              transfer_rows: list[dict[str, Any]], baseline: Any,
              findings: list[Any], verdict_rows: list[dict[str, Any]],
              labelled: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The results.json document from its parts, in the schema's order."""
    from audit._version import __version__

    source, sections = images.source, measured.sections
    return {
        "schema_version": SCHEMA_VERSION,
        "meta": {"tool_version": __version__, **(meta or {})},
        "discriminator": sanity,
        "concept_set": {"name": concept_set.name, "sha256": concept_set.sha256},
        "settings": settings.model_dump(mode="json"),
        "bootstrap": {"method": spec.method, "n_boot": spec.n_boot, "seed": spec.seed,
                      "stratified": spec.stratified, "confidence": spec.confidence,
                      "cluster_by": settings.cluster_by,
                      "n_clusters": images.n_clusters,
                      "resampled": _resampled_words(spec, settings.cluster_by)},
        "counts": {"real": int(np.sum(source == 0)), "generated": int(np.sum(source == 1)),
                   "total": len(source), "invalid_scores": int(np.sum(~images.finite))},
        "validity": summary,
        "transfer": transfer_rows,
        **({"label_transfer": labelled} if labelled else {}),
        "baseline": baseline,
        "representation": [sections[g.name]["representation"] for g in per_concept],
        "treatment": [sections[g.name]["treatment"] for g in per_concept],
        "intersections": [{"name": g.name, "concepts": list(g.concepts),
                           "representation": sections[g.name]["representation"],
                           "treatment": sections[g.name]["treatment"]} for g in crossed],
        "exclusions": measured.exclusions,
        "unknowns": _unknowns(per_concept, source, settings),
        "degenerate": degenerate,
        "tests": measured.tests,
        "findings": findings,
        "verdicts": verdict_rows,
        "notes": [*NOTES, *batch_notes((meta or {}).get("model", {}).get("batches"))],
    }


def batch_notes(batches: dict[str, Any] | None) -> list[str]:
    """What the method section must say when the discriminator's score depends on the other
    images in its batch (StyleGAN's minibatch standard deviation): how batches were formed,
    per store, from the run manifest's ``model.batches`` (the stores' ``batches`` records)."""
    if not batches:
        return []
    dependent = {name: b for name, b in batches.items()
                 if isinstance(b, dict) and b.get("batch_dependent")}
    if not dependent:
        return []
    first = next(iter(dependent.values()))
    padded = ", ".join(f"{b.get('padded_rows', 0)} in {name}" for name, b in dependent.items())
    layers = ", ".join(first.get("batch_dependent_layers") or []) or "some layers"
    return [f"The discriminator's output depends on the other images in its batch ({layers}: "
            f"e.g. minibatch standard deviation), so an image's score, and every number that "
            f"rests on scores, depends on how batches were formed: batches of "
            f"{first.get('batch_size')} images (a multiple of the group size "
            f"{first.get('group_size')}), in a seeded random order within each shard of a set "
            f"of images (seed {first.get('order_seed')}), which mixes the groups a shard "
            f"holds (a source sorted by group, e.g. one folder per group, larger than a shard "
            f"still gives batches of one group); short batches were filled with repeats of "
            f"their own images, never twice in one minibatch group where possible, whose "
            f"outputs were dropped (repeated rows: {padded}). Real and generated images were "
            f"scored in separate batches, as in training."]


def _underpowered(test: dict[str, Any] | None, alpha: float) -> bool:
    """A test that is not significant after Holm and could not detect the policy's gap."""
    if not test or not test.get("power"):
        return False
    significant = test["p_holm"] is not None and test["p_holm"] < alpha
    return not significant and not test["power"]["sufficient"]


def _mark_insufficient(representation: list[dict[str, Any]], treatment: list[dict[str, Any]],
                       tests: dict[str, dict[str, Any]], *, alpha: float) -> None:
    """Where a test found nothing but could not have found the policy's gap: impact rows
    that would "pass" become "insufficient evidence", and representation rows get
    ``insufficient_evidence`` (in place), both with the power record's words."""
    for sec in treatment:
        for row in sec["impact"]:
            t = tests.get(row["test_id"] or "")
            if row["four_fifths"] == FourFifths.PASS and _underpowered(t, alpha):
                row["four_fifths"] = FourFifths.INSUFFICIENT_EVIDENCE
                row["reason"] = t["power"]["summary"]
    for sec in representation:
        for row in sec["rows"]:
            t = tests.get(row["test_id"] or "")
            row["insufficient_evidence"] = bool(
                sec["protected"] and not row["under_represented"] and not row["small"]
                and _underpowered(t, alpha))


def _withhold_treatment_verdicts(treatment: list[dict[str, Any]]) -> None:
    """A D with one score for every image: every impact row becomes "no verdict", saying
    why (in place)."""
    for sec in treatment:
        for row in sec["impact"]:
            row["four_fifths"] = FourFifths.NO_VERDICT
            row["reason"] = ("the discriminator gives (nearly) one score to every image, so "
                             "its treatment of groups cannot be judged")


def _resampled_words(spec: BootstrapSpec, cluster_by: str | None = None) -> str:
    if cluster_by is not None:
        audited = (f"whole clusters of audited images (ids alike under cluster_by "
                   f"'{cluster_by}'; real and generated together)")
    elif spec.stratified:
        audited = "the audited images within each (source, group) stratum"
    else:
        audited = "all audited images together (real and generated)"
    return (f"{spec.n_boot} replicates resampling {audited} with replacement, and the "
            f"held-out decoder test set within each true group; {spec.method} intervals at "
            f"{spec.confidence:.0%}")


FEW_CLUSTERS = 20


def _check_clusters(n_clusters: dict[str, int] | None, source: np.ndarray, ids: np.ndarray,
                    pattern: str | None) -> list[dict[str, Any]]:
    """Refuse a cluster_by that leaves a source one cluster (the bootstrap could not vary:
    zero-width intervals); a degenerate case where a source has few clusters
    (``n_clusters``: clusters per source)."""
    out: list[dict[str, Any]] = []
    if n_clusters is None:
        return out
    for s, name in enumerate(SOURCES):
        rows = source == s
        k = n_clusters[name]
        if rows.sum() > 1 and k < 2:
            raise DataError(
                f"measure.cluster_by {pattern!r} puts all {int(rows.sum())} {name} images in "
                f"one cluster (ids such as {str(ids[rows][0])!r}), so the bootstrap could not "
                f"vary and every interval would have zero width. Write the pattern so that it "
                f"matches only ids that belong together (an id that does not match is a "
                f"cluster of its own).")
        if rows.any() and k < FEW_CLUSTERS:
            out.append({"kind": "few_clusters", "concept": None, "group": None, "source": name,
                        "count": k,
                        "message": f"the {int(rows.sum())} {name} images form only {k} "
                                   f"clusters under cluster_by; intervals that resample so "
                                   f"few clusters are rough"})
    return out


def image_clusters(image_ids: np.ndarray, source: np.ndarray, pattern: str | None
                   ) -> np.ndarray | None:
    """(N,) cluster keys of the audited images under ``cluster_by`` (None without one).

    Ids alike under the pattern (:func:`audit.ids.id_groups`) form one cluster
    within a source; real and generated images never share one.
    """
    from audit.ids import id_groups

    keys = id_groups([str(i) for i in image_ids], pattern)
    if keys is None:
        return None
    return np.asarray(keys, dtype=np.int64) * 2 + np.asarray(source, dtype=np.int64)


def _measure_grouping(grouping: Grouping, *, source: np.ndarray, state: np.ndarray,
                      scores: np.ndarray, median: float | None, spec: BootstrapSpec,
                      settings: MeasureSettings, clusters: np.ndarray | None):
    """Cells, bootstrap draws, representation and treatment of one grouping (resampling
    ``clusters`` of images, (N,) keys, when given)."""
    g1 = grouping.n_groups + 1
    sizes = tuple(c.shape[0] for c in grouping.confusions) if grouping.confusions else ()
    layout = CellLayout(grouping.n_groups, sizes)
    row_cells = (source * g1 + grouping.best) * N_STATES + state
    audit_cells = np.bincount(row_cells, minlength=layout.n_audit)
    cells = np.concatenate([audit_cells, *[c.ravel() for c in grouping.confusions or ()]])
    matrix = None if clusters is None else \
        padded_cells(cluster_cells(clusters, row_cells, layout.n_audit), len(cells))
    rng = _grouping_rng(settings.seed, grouping.name)
    draws = draw_cells(cells, n_boot=spec.n_boot, rng=rng,
                       strata=layout.strata(stratified=spec.stratified), clusters=matrix)
    rep, rep_tests, degen = measure_representation(grouping, layout, cells, source=source,
                                                   spec=spec, settings=settings, rng=rng,
                                                   clusters=clusters)
    trt, trt_tests, excl, degen2 = measure_treatment(
        grouping, layout, cells, draws, scores=scores, source=source, median=median, spec=spec,
        settings=settings, rng=rng, clusters=clusters, cluster_matrix=matrix)
    return rep, trt, rep_tests + trt_tests, excl, degen + degen2


# ---------------------------------------------------------------- schema


def results_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of results.json."""
    import json
    from importlib.resources import files

    return json.loads(files("audit.measure").joinpath("results.schema.json")
                      .read_text(encoding="utf-8"))


def validate_results(results: dict[str, Any]) -> None:
    """Raise :class:`DataError` listing where ``results`` breaks results.schema.json."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(results_schema())
    errors = sorted(validator.iter_errors(results), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                 for e in errors[:10]]
        raise DataError("results do not match results.schema.json:\n" + "\n".join(lines))


def check_schema_version(results: Any, *, where: str | Path) -> None:
    """Raise :class:`RunFolderError` unless ``results`` is a JSON object of the results.json
    schema version this gan-audit reads (:data:`SCHEMA_VERSION`).

    The one check behind every reader of results.json (the report, ``AuditResults``);
    ``where`` names the file (or object) in the message, which says which gan-audit
    wrote it and how to get a file this one reads.
    """
    if not isinstance(results, dict):
        raise RunFolderError(f"{where}: expected a JSON object; re-run the measure stage "
                             f"(gan-audit measure CONFIG).")
    version = results.get("schema_version")
    if version == SCHEMA_VERSION:
        return
    head = f"{where}: schema_version {version!r}, but this gan-audit reads version " \
           f"{SCHEMA_VERSION}."
    if isinstance(version, int) and not isinstance(version, bool) and version < SCHEMA_VERSION:
        raise RunFolderError(f"{head} It was written by an older gan-audit: re-run "
                             f"`gan-audit measure CONFIG` with this version to rewrite it, or "
                             f"use the gan-audit that wrote it.")
    if isinstance(version, int) and not isinstance(version, bool):
        raise RunFolderError(f"{head} It was written by a newer gan-audit: upgrade gan-audit "
                             f"(pip install -U gan-audit), or use the gan-audit that wrote it.")
    raise RunFolderError(f"{head} It is not a results.json that gan-audit wrote, or it was "
                         f"damaged: re-run `gan-audit measure CONFIG` to rewrite it.")


# ---------------------------------------------------------------- files


def _flat(prefix: str, est: dict[str, Any] | None) -> dict[str, Any]:
    est = est or {}
    ci = est.get("ci") or [None, None]
    out = {prefix: est.get("value"), f"{prefix}_ci_low": ci[0], f"{prefix}_ci_high": ci[1],
           f"{prefix}_n": est.get("n")}
    if "k" in est:
        out[f"{prefix}_k"] = est["k"]
    return out


def results_to_tables(results: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Flat tables of results.json: representation, treatment, impact, fairlearn, tests,
    findings, exclusions (estimates become value, ci_low, ci_high, n, k columns)."""
    import pandas as pd

    reps = [*results["representation"], *(i["representation"] for i in results["intersections"])]
    trts = [*results["treatment"], *(i["treatment"] for i in results["intersections"])]
    rep_rows = [{"concept": s["concept"], "group": r["group"],
                 **_flat("real", r["real"]), **_flat("generated_raw", r["generated_raw"]),
                 **_flat("generated_corrected", r["generated_corrected"]),
                 "reference_share": r["reference_share"], **_flat("gap", r["gap"]),
                 "under_represented": r["under_represented"],
                 "below_coverage_floor": r["below_coverage_floor"], "test_id": r["test_id"]}
                for s in reps for r in s["rows"]]
    trt_rows = [{"concept": s["concept"], "group": r["group"], "source": r["source"],
                 "n": r["n"], "n_invalid_score": r["n_invalid_score"],
                 "share_of_source": r["share_of_source"], **_flat("mean_score", r["mean_score"]),
                 **_flat("scoring_rate", r["scoring_rate"]),
                 **_flat("acceptance_rate", r["acceptance_rate"]), "small": r["small"],
                 "excluded": r["excluded"], "exclusion_reason": r["exclusion_reason"]}
                for s in trts for r in s["rows"]]
    impact_rows = [{"concept": s["concept"], "metric": r["metric"], "source": r["source"],
                    "group": r["group"], **_flat("rate", r["rate"]),
                    "highest_group": r["highest_group"], **_flat("ratio", r["ratio"]),
                    "four_fifths": r["four_fifths"], "reason": r["reason"],
                    "test_id": r["test_id"]} for s in trts for r in s["impact"]]
    fair_rows = [{"concept": s["concept"], "group": r["group"], "count": r["count"],
                  **_flat("selection_rate", r["selection_rate"]),
                  **_flat("true_positive_rate", r["true_positive_rate"]),
                  **_flat("false_positive_rate", r["false_positive_rate"])}
                 for s in trts for r in s["fairlearn"]["per_group"]]
    test_rows = [{k: v for k, v in t.items() if k not in ("counts", "power")} | t["counts"]
                 | {f"power_{k}": v for k, v in (t.get("power") or {}).items()}
                 for t in results["tests"]]
    finding_rows = [{"id": f["id"], "kind": f["kind"], "severity": f["severity"],
                     "concept": f["concept"], "groups": "; ".join(f["groups"]),
                     "source": f["source"], "metric": f["metric"], "value": f["value"],
                     "ci_low": (f["ci"] or [None, None])[0],
                     "ci_high": (f["ci"] or [None, None])[1], "n": f["n"],
                     "p_value": f["p_value"], "p_holm": f["p_holm"], "p_bh": f["p_bh"],
                     "threshold": f["threshold"], "confidence": f["confidence"],
                     "summary": f["summary"]} for f in results["findings"]]
    return {name: pd.DataFrame(rows) for name, rows in (
        ("representation", rep_rows), ("treatment", trt_rows), ("impact", impact_rows),
        ("fairlearn", fair_rows), ("tests", test_rows), ("findings", finding_rows),
        ("exclusions", results["exclusions"]))}


def write_tables(results: dict[str, Any], directory: Path) -> list[Path]:
    """Write :func:`results_to_tables` as ``NAME.parquet`` and ``NAME.csv`` in ``directory``
    (atomically); returns the paths written."""
    from audit.io import atomic_path, ensure_dir

    ensure_dir(Path(directory))
    written = []
    for name, frame in results_to_tables(results).items():
        for ext in ("parquet", "csv"):
            path = Path(directory) / f"{name}.{ext}"
            with atomic_path(path, suffix=f".{ext}") as tmp:
                if ext == "parquet":
                    frame.to_parquet(tmp, index=False)
                else:
                    frame.to_csv(tmp, index=False)
            written.append(path)
    return written


def run_meta(run_dir: Path, *, name: str | None = None, title: str | None = None
             ) -> dict[str, Any]:
    """``meta`` for results.json from the run folder's manifest.json where there is one
    (audit id, creation date, hashes, versions), else the audit name and today's date;
    with the report's ``title`` when one is set."""
    import json
    from datetime import datetime

    manifest: dict[str, Any] = {}
    path = Path(run_dir) / "manifest.json"
    if path.is_file():
        try:
            manifest = json.loads(read_run_file(path).decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{path}: unreadable JSON ({exc}). Re-run 'gan-audit run' or "
                                 f"remove the file.") from exc
    meta: dict[str, Any] = {
        "audit_id": manifest.get("audit_id") or name,
        "name": name,
        "date": manifest.get("created") or datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    for key in ("hashes", "versions", "seeds", "data_sources", "model", "skipped_images"):
        if key in manifest:
            meta[key] = manifest[key]
    if title:
        meta["title"] = title
    return meta


def _optional_json(path: Path, remedy: str) -> Any:
    """The JSON document at ``path`` in a run folder, or None when there is none (never
    read through a link)."""
    import json

    from audit.runfolder import refuse_links

    if not (path.exists() or path.is_symlink()):
        return None
    try:
        return json.loads(refuse_links(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: unreadable JSON ({exc}). Re-run {remedy}.") from exc


def measure_run(run_dir: Path, concept_set: ConceptSet, settings: MeasureSettings,
                meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Measure a run folder: read ``predictions.parquet`` and ``decoders/validity.json``,
    write ``results.json`` and ``tables/*.parquet|csv``, return the results.

    Raises :class:`RunFolderError` when an input is missing, naming the stage to run.
    """
    import json

    import pandas as pd

    from audit.io import atomic_write_json

    run_dir = Path(run_dir)
    pred_path = run_dir / "predictions.parquet"
    val_path = run_dir / "decoders" / "validity.json"
    if not pred_path.is_file():
        raise RunFolderError(f"{pred_path}: not found. The measure stage reads the per-image "
                             f"predictions: run 'gan-audit train-decoders' (which decodes the "
                             f"audited images) on this run folder first.")
    if not val_path.is_file():
        raise RunFolderError(f"{val_path}: not found. The measure stage needs the decoders' "
                             f"held-out validity: run 'gan-audit train-decoders' first.")
    from audit.runfolder import refuse_links

    refuse_links(pred_path)  # (its own message: a link is not a corrupt file)
    try:
        predictions = pd.read_parquet(pred_path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise RunFolderError(f"{pred_path}: unreadable Parquet file ({exc}). Re-run the "
                             f"decode stage to rewrite it.") from exc
    try:
        validity = json.loads(read_run_file(val_path).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{val_path}: unreadable JSON ({exc}). Re-run "
                             f"'gan-audit train-decoders'.") from exc
    transfer = _optional_json(run_dir / "decoders" / "transfer.json",
                              "'gan-audit train-decoders'")
    baseline = _optional_json(run_dir / "baseline" / "random.json", "'gan-audit run'")
    from audit.labels import LABELS_FILE, read_labels

    labels = read_labels(run_dir) if (run_dir / LABELS_FILE).exists() else None
    results = predictions_to_results(predictions, concept_set, validity, settings=settings,
                                     meta=meta, transfer=transfer, baseline=baseline,
                                     labels=labels)
    validate_results(results)  # what is written is what the schema promises readers
    atomic_write_json(run_dir / "results.json", results)
    write_tables(results, run_dir / "tables")
    return results
