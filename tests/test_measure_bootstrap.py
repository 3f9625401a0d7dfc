"""The cell-count bootstrap: same law as resampling rows, nominal coverage, BCa, means."""

from __future__ import annotations

import numpy as np
import pytest

from audit.measure.bootstrap import (
    BootstrapSpec,
    cell_interval,
    draw_cells,
    intervals,
    jackknife_cells,
    jackknife_means,
    mean_replicates,
)


def _rate(cells: np.ndarray) -> np.ndarray:
    """Share of the first cell: (B, 2) -> (B,)."""
    return cells[:, 0] / cells.sum(axis=1)


def test_cell_draws_have_the_law_of_row_resampling() -> None:
    rng = np.random.default_rng(0)
    counts = np.array([50, 30, 15, 5])
    rows = np.repeat(np.arange(4), counts)
    n_boot = 4000
    draws = draw_cells(counts, n_boot=n_boot, rng=rng)
    by_rows = np.stack([np.bincount(rng.choice(rows, len(rows)), minlength=4)
                        for _ in range(n_boot)])
    assert np.all(draws.sum(axis=1) == counts.sum())
    # Same mean and covariance as resampling rows (multinomial), within Monte Carlo error.
    p = counts / counts.sum()
    cov = counts.sum() * (np.diag(p) - np.outer(p, p))
    for sample in (draws, by_rows):
        assert sample.mean(axis=0) == pytest.approx(counts, abs=0.5)
        assert np.cov(sample.T) == pytest.approx(cov, abs=2.5)


def test_stratified_draws_keep_stratum_totals() -> None:
    counts = np.array([10, 20, 0, 5, 7, 3])
    strata = np.array([0, 0, 1, 1, 2, 2])
    draws = draw_cells(counts, n_boot=300, rng=np.random.default_rng(1), strata=strata)
    for s in range(3):
        assert np.all(draws[:, strata == s].sum(axis=1) == counts[strata == s].sum())
    assert np.all(draws[:, 2] == 0)                   # an empty cell stays empty


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_95_percent_intervals_cover_a_known_binomial(method: str) -> None:
    # 400 replicates of Binomial(400, 0.3); each gets a 1000-draw cell bootstrap interval.
    rng = np.random.default_rng(7)
    n, p, n_rep = 400, 0.3, 400
    spec = BootstrapSpec(n_boot=1000, method=method)
    ci = np.empty((n_rep, 2))
    for r, k in enumerate(rng.binomial(n, p, n_rep)):
        counts = np.array([k, n - k])
        ci[r] = cell_interval(_rate, counts, draw_cells(counts, n_boot=spec.n_boot, rng=rng),
                              spec)[1]
    covered = np.mean((ci[:, 0] <= p) & (p <= ci[:, 1]))
    assert 0.93 <= covered <= 0.97


def test_jackknife_on_cells_equals_leave_one_row_out() -> None:
    counts = np.array([7, 3, 0, 5])
    rows = np.repeat(np.arange(4), counts)

    def stat(cells: np.ndarray) -> np.ndarray:
        return cells[:, 0] / (cells[:, 0] + cells[:, 1] + cells[:, 3])

    values, weights = jackknife_cells(stat, counts)
    by_rows = [stat(np.bincount(np.delete(rows, i), minlength=4)[None])[0]
               for i in range(len(rows))]
    assert sorted(np.repeat(values, weights.astype(int))) == pytest.approx(sorted(by_rows))


def test_bca_equals_percentile_for_a_symmetric_case() -> None:
    rng = np.random.default_rng(3)
    counts = np.array([500, 500])
    draws = draw_cells(counts, n_boot=2000, rng=rng)
    _, pct = cell_interval(_rate, counts, draws, BootstrapSpec(n_boot=2000))
    _, bca = cell_interval(_rate, counts, draws, BootstrapSpec(n_boot=2000, method="bca"))
    assert bca == pytest.approx(pct, abs=0.005)


@pytest.mark.parametrize("stratified", [False, True])
def test_mean_replicates_match_the_standard_error(stratified: bool) -> None:
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(0, 1, 300), rng.normal(2, 3, 200)])
    codes = np.repeat([0, 1], [300, 200])
    spec = BootstrapSpec(n_boot=2000, stratified=stratified)
    reps = mean_replicates(values, codes, 3, spec=spec, rng=rng, chunk=300)
    assert reps.shape == (2000, 3)
    assert np.all(np.isnan(reps[:, 2]))               # a code with no rows
    for c, n in ((0, 300), (1, 200)):
        se = values[codes == c].std(ddof=1) / np.sqrt(n)
        assert reps[:, c].std() == pytest.approx(se, rel=0.1)
        assert reps[:, c].mean() == pytest.approx(values[codes == c].mean(), abs=se / 3)


def test_jackknife_means_leave_one_out() -> None:
    values = np.array([1.0, 2.0, 4.0, 10.0])
    codes = np.array([0, 0, 0, 1])
    jack, weights = jackknife_means(values, codes, 2)
    assert jack[0, 0] == pytest.approx(3.0) and jack[2, 0] == pytest.approx(1.5)
    assert jack[0, 1] == pytest.approx(10.0) and np.isnan(jack[3, 1])
    assert weights.tolist() == [1, 1, 1, 1]


def test_intervals_are_none_when_no_replicate_is_defined() -> None:
    ci = intervals(np.array([0.5, np.nan]), np.full((10, 2), np.nan), BootstrapSpec(n_boot=10))
    assert np.all(np.isnan(ci))
