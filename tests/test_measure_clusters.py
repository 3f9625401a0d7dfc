"""The cluster bootstrap (measure.cluster_by): images that are not independent.

Reference: an audit whose real images are each copied m times is, for the bootstrap,
no more informative than the audit of the originals. Resampling the copies as clusters
must give the intervals of the originals (resampled as images); resampling the copies as
images must give intervals about sqrt(m) narrower.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.config import MeasureSettings
from audit.errors import ConfigError
from audit.measure import predictions_to_results
from audit.measure.bootstrap import (
    BootstrapSpec,
    cluster_cells,
    draw_cells,
    jackknife_cells,
    mean_replicates,
)
from audit.validation.predictions import DIGITS_PLANTED, synthetic_predictions

COPIES = 4
PATTERN = r"^(.*)-copy\d+$"


@pytest.fixture(scope="module")
def originals(cs):
    return synthetic_predictions(600, 2400, cs, seed=3, planted=DIGITS_PLANTED)


@pytest.fixture(scope="module")
def copied(originals):
    """Every audited real image four times (ids ``<id>-copy<k>``); the rest unchanged."""
    frame, validity = originals
    real = (frame["split"] == "audit") & (frame["source"] == "real")
    copies = [frame[real].assign(image_id=frame.loc[real, "image_id"].astype(str)
                                 + f"-copy{k}") for k in range(COPIES)]
    return pd.concat([*copies, frame[~real]], ignore_index=True), validity


def _audit(frame, validity, cs, **settings):
    return predictions_to_results(frame, cs, validity,
                                  settings=MeasureSettings(n_boot=2000, seed=5, **settings))


def _width(estimate: dict) -> float:
    low, high = estimate["ci"]
    return high - low


def _real_widths(results: dict) -> dict[str, float]:
    """Interval widths of real-image estimates: shares and mean scores of every group."""
    out = {}
    for section in results["representation"]:
        for row in section["rows"]:
            out[f"share {section['concept']}={row['group']}"] = _width(row["real"])
    for section in results["treatment"]:
        for row in section["rows"]:
            if row["source"] == "real" and row["n"] >= 100:
                out[f"mean {section['concept']}={row['group']}"] = _width(row["mean_score"])
    return out


@pytest.fixture(scope="module")
def audits(cs, originals, copied):
    """The originals; the copies resampled as images; the copies resampled as clusters."""
    return (_audit(*originals, cs), _audit(*copied, cs), _audit(*copied, cs, cluster_by=PATTERN))


def test_clusters_of_copies_give_the_intervals_of_the_originals(audits):
    reference, as_images, as_clusters = map(_real_widths, audits)
    assert reference.keys() <= as_clusters.keys() and len(reference) >= 8
    for key, width in reference.items():
        # Monte Carlo error of a 2,000-draw interval width is a few percent.
        assert as_clusters[key] == pytest.approx(width, rel=0.12), key
        assert as_images[key] == pytest.approx(width / np.sqrt(COPIES), rel=0.12), key


def test_results_say_what_was_resampled(audits):
    _, plain, clustered = audits
    boot = clustered["bootstrap"]
    assert boot["cluster_by"] == PATTERN
    # 600 originals among the real images; generated ids do not match: one cluster each.
    assert boot["n_clusters"] == {"real": 600, "generated": 2400}
    assert "clusters of audited images" in boot["resampled"]
    assert plain["bootstrap"]["cluster_by"] is None and plain["bootstrap"]["n_clusters"] is None
    # Point estimates do not depend on how the bootstrap resamples.
    assert [r["real"]["value"] for s in plain["representation"] for r in s["rows"]] == \
        [r["real"]["value"] for s in clustered["representation"] for r in s["rows"]]


def test_bca_with_clusters_leaves_one_cluster_out(cs, originals, copied):
    reference = _real_widths(_audit(*originals, cs, interval="bca"))
    as_clusters = _real_widths(_audit(*copied, cs, cluster_by=PATTERN, interval="bca"))
    for key, width in reference.items():
        assert np.isfinite(as_clusters[key]), key
        assert as_clusters[key] == pytest.approx(width, rel=0.15), key


def test_singleton_clusters_draw_like_rows():
    """Every row its own cluster: the cluster draws have the multinomial's moments."""
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 5, 400)
    counts = np.bincount(cells, minlength=5)
    matrix = cluster_cells(np.arange(400), cells, 5)
    draws = draw_cells(counts, n_boot=20000, rng=rng, clusters=matrix)
    p = counts / 400
    np.testing.assert_allclose(draws.mean(axis=0), counts, rtol=0.02)
    np.testing.assert_allclose(draws.var(axis=0), 400 * p * (1 - p), rtol=0.05)


def test_clusters_leave_the_confusion_rows_to_their_strata():
    """Held-out confusion counts are not audited images: each row keeps its total."""
    counts = np.array([30, 20, 10, 40, 7, 3, 2, 8])       # 4 audit cells, a 2 x 2 confusion
    strata = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    matrix = np.zeros((3, 8), dtype=np.int64)
    matrix[:, :4] = [[30, 0, 0, 0], [0, 20, 10, 0], [0, 0, 0, 40]]
    draws = draw_cells(counts, n_boot=500, rng=np.random.default_rng(1), strata=strata,
                       clusters=matrix)
    assert set(draws[:, 4:6].sum(axis=1)) == {10} and set(draws[:, 6:].sum(axis=1)) == {10}
    # audit cells move in whole clusters: cells 1 and 2 always in the ratio 2:1
    np.testing.assert_array_equal(draws[:, 1], 2 * draws[:, 2])
    # BCa's jackknife leaves out each cluster, then each held-out row (weighted by count).
    values, weights = jackknife_cells(lambda c: c.sum(axis=1, keepdims=True), counts, matrix)
    np.testing.assert_array_equal(values[:, 0], [90, 90, 80, 119, 119, 119, 119])
    np.testing.assert_array_equal(weights, [1, 1, 1, 7, 3, 2, 8])


def test_cluster_means_match_the_means_of_cluster_totals():
    rng = np.random.default_rng(2)
    values = rng.normal(size=90)
    codes = np.repeat([0, 1, 0], 30)
    clusters = np.repeat(np.arange(30), 3)
    reps = mean_replicates(values, codes, 2, spec=BootstrapSpec(n_boot=3), rng=rng,
                           clusters=clusters)
    assert reps.shape == (3, 2) and np.isfinite(reps).all()


@pytest.mark.parametrize(("settings", "message"), [
    ({"cluster_by": "^(x", "stratified": False}, "not a valid regular expression"),
    ({"cluster_by": "^(.*)-copy", "stratified": True}, "set stratified: false"),
])
def test_cluster_by_is_checked(tmp_path, settings, message):
    from audit.config import load_config

    path = tmp_path / "audit.yaml"
    path.write_text("discriminator: {spec: builtin:digits-dcgan}\n"
                    "generator: {spec: builtin:digits-dcgan, n: 10}\n"
                    "concept_set: digits_tone\n"
                    "paired: {source: builtin:digits-paired}\n"
                    "real: {source: builtin:digits-audit}\n"
                    f"measure: {settings}\n".replace("'", '"').replace("True", "true")
                    .replace("False", "false"))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_pattern_that_lumps_a_source_into_one_cluster_is_refused(cs, copied):
    from audit.errors import DataError

    # '^(\\D+)' maps every real id 'real-...' to one key (and every generated id to another).
    with pytest.raises(DataError, match=r"all 2400 real images in one cluster"):
        _audit(*copied, cs, cluster_by=r"^(\D+)")


def test_few_clusters_are_flagged(cs, originals):
    frame, validity = originals
    real = (frame["split"] == "audit") & (frame["source"] == "real")
    frame = frame.copy()
    frame.loc[real, "image_id"] = [f"site{i % 5}-{i}" for i in range(int(real.sum()))]
    results = _audit(frame, validity, cs, cluster_by=r"^(site\d)-")
    few = [d for d in results["degenerate"] if d["kind"] == "few_clusters"]
    assert [(d["source"], d["count"]) for d in few] == [("real", 5)]


def test_ids_whose_group_takes_no_part_are_their_own_cluster():
    from audit.ids import id_groups

    keys = id_groups(["a-copy1", "a-copy2", "b", "bb", "c"], r"^(.*)-copy\d+$|^b")
    assert keys[0] == keys[1] and len(set(keys[2:])) == 3 and keys[2] != keys[0]


def test_insight_intervals_resample_the_same_clusters(cs, originals, copied):
    """Entropy ratio and rejection-lift intervals follow measure.cluster_by too."""
    from audit.insight.diagnose import predictions_to_diagnosis
    from audit.insight.entropy import predictions_to_entropy

    spec = BootstrapSpec(n_boot=2000, seed=2)

    def entropy_widths(frame, **kw):
        return {e.concept: e.ratio_ci[1] - e.ratio_ci[0]
                for e in predictions_to_entropy(frame, cs, spec=spec, **kw)
                if e.ratio_ci is not None}

    frame = originals[0]
    audited = frame["split"] == "audit"
    every_copied = pd.concat([*(frame[audited].assign(
        image_id=frame.loc[audited, "image_id"].astype(str) + f"-copy{k}")
        for k in range(COPIES)), frame[~audited]], ignore_index=True)
    reference = entropy_widths(frame)
    clustered = entropy_widths(every_copied, cluster_by=PATTERN)
    as_images = entropy_widths(every_copied)
    assert reference
    for concept, width in reference.items():
        assert clustered[concept] == pytest.approx(width, rel=0.2), concept
        assert as_images[concept] == pytest.approx(width / np.sqrt(COPIES), rel=0.2), concept

    def lift_widths(frame, **kw):
        d = predictions_to_diagnosis(frame, cs, spec=spec, **kw)
        return np.array([g.lift_ci[1] - g.lift_ci[0] for g in d.lifts
                         if g.source == "real" and g.lift_ci is not None])

    # Copies share a score, so the rejected quarter is the same images four times.
    ratio = np.median(lift_widths(copied[0], cluster_by=PATTERN) / lift_widths(copied[0]))
    assert ratio == pytest.approx(np.sqrt(COPIES), rel=0.2)


def test_design_effect_against_statsmodels():
    """The design effect's numerator is statsmodels' cluster-robust variance of the mean
    (intercept-only OLS, CR1 correction); its denominator that of independent images."""
    import statsmodels.api as sm

    from audit.measure.stats import design_effect

    rng = np.random.default_rng(4)
    k = 60
    clusters = np.repeat(np.arange(k), rng.integers(1, 6, k))
    rate = rng.choice([0.1, 0.7], size=k)                # clusters differ: design effect > 1
    y = (rng.random(len(clusters)) < rate[clusters]).astype(float)
    fit = sm.OLS(y, np.ones((len(y), 1))).fit(cov_type="cluster",
                                               cov_kwds={"groups": clusters})
    p, n = y.mean(), len(y)
    expected = max(1.0, float(fit.cov_params()[0, 0]) / (p * (1 - p) / (n - 1)))
    got = design_effect(np.bincount(clusters, weights=y), np.bincount(clusters))
    assert got == pytest.approx(expected, rel=1e-9) and got > 1.2


@pytest.mark.parametrize(("k1", "n1", "k2", "n2"), [
    (3, 30, 250, 1000), (1, 30, 150, 1000), (2, 40, 400, 2000), (120, 400, 150, 420)])
def test_one_image_per_cluster_is_the_unclustered_test(k1, n1, k2, n2):
    from audit.measure.stats import clustered_proportion_test, two_proportion_test

    def side(k, n):
        return np.r_[np.ones(k), np.zeros(n - k)], np.ones(n)

    plain = two_proportion_test(k1, n1, k2, n2)
    clustered = clustered_proportion_test(*side(k1, n1), *side(k2, n2))
    assert clustered.method == f"{plain.method}_clustered"
    assert clustered.p_value == pytest.approx(plain.p_value, rel=1e-12)
    # copied 4 times, as clusters: the originals' evidence
    copied = clustered_proportion_test(*(np.repeat(4 * v, 1) for v in side(k1, n1)),
                                       *(np.repeat(4 * v, 1) for v in side(k2, n2)))
    assert copied.p_value == pytest.approx(plain.p_value, rel=0.1, abs=1e-12)


def test_no_variation_counts_each_cluster_once():
    from audit.measure.stats import clustered_proportion_test, design_effect

    assert design_effect(np.zeros(3), np.full(3, 100.0)) == 100.0    # 300 images, 3 clusters
    res = clustered_proportion_test(np.zeros(3), np.ones(3), p0=0.5)
    assert res.method == "binomial_exact_clustered"
    assert res.p_value == pytest.approx(0.25)                      # binomial 0 of 3


def test_clustered_tests_count_clusters_not_images(cs, audits):
    """The share and rate tests of the copied audit, clustered, see the originals' evidence."""
    reference, as_images, as_clusters = audits
    def tests(results):
        return {t["id"]: t for t in results["tests"] if t["p_value"] is not None
                and t["statistic"] is not None and t["kind"] == "treatment"
                and t["source"] == "real"}

    ref, img, clu = tests(reference), tests(as_images), tests(as_clusters)
    assert {t["method"] for t in clu.values()} == {"two_proportion_z_clustered"}
    shared = sorted(set(ref) & set(clu))
    assert len(shared) >= 3
    for tid in shared:
        # images as independent: z about twice the originals'; clusters: about the same
        assert abs(img[tid]["statistic"]) > 1.6 * abs(ref[tid]["statistic"]), tid
        assert clu[tid]["statistic"] == pytest.approx(ref[tid]["statistic"], rel=0.15), tid


def test_wilson_rate_intervals_of_copies_are_those_of_the_originals(originals, copied, cs) -> None:
    # Rates have Wilson intervals on effective counts: four copies of each real image,
    # resampled as clusters, give about the interval of the originals (the design effect
    # of exact copies is (4K - 1) / (K - 1), just over 4).
    base = _audit(*originals, cs)
    clustered = _audit(*copied, cs, cluster_by=PATTERN)
    naive = _audit(*copied, cs)

    def real_rates(res):
        return {(s["concept"], r["group"], m): r[m] for s in res["treatment"]
                for r in s["rows"] for m in ("scoring_rate", "acceptance_rate")
                if r["source"] == "real" and r[m]["n"] >= 30}

    b, c, n = real_rates(base), real_rates(clustered), real_rates(naive)
    assert b
    for key, est in b.items():
        assert c[key]["ci"] == pytest.approx(est["ci"], abs=0.01), key
        assert _width(n[key]) < 0.6 * _width(est), key        # copies as images: too narrow
