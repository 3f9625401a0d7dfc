"""Statistics of the measure stage against closed forms, scipy and statsmodels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from audit.measure.stats import (
    _slsqp,
    adjust_pvalues,
    binomial_test,
    closed_form_two_groups,
    distances,
    row_normalise,
    simplex_lstsq,
    simplex_lstsq_batch,
    two_proportion_test,
)


def _objective(a: np.ndarray, p: np.ndarray, p_hat: np.ndarray) -> float:
    return float(np.sum((a.T @ p - p_hat) ** 2))


@pytest.mark.parametrize("seed", range(8))
def test_closed_form_equals_simplex_solver_for_two_groups(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a0, a1 = rng.uniform(0.55, 0.99, 2)
    a = np.array([[a0, 1 - a0], [1 - a1, a1]])
    p_hat0 = rng.uniform(0, 1)
    p_hat = np.array([p_hat0, 1 - p_hat0])
    closed = closed_form_two_groups(p_hat0, a0, a1)
    generic = _slsqp(a.T, p_hat, np.array([0.5, 0.5]))     # the K-group solver, forced
    assert generic[0] == pytest.approx(closed, abs=1e-6)
    assert simplex_lstsq(a, p_hat)[0] == pytest.approx(closed, abs=1e-12)
    batch = simplex_lstsq_batch(a[None], p_hat[None])[0]
    assert batch[0] == pytest.approx(closed, abs=1e-12)


def test_closed_form_is_the_cleam_formula() -> None:
    # p0 = (p_hat0 - (1 - a1)) / (a0 + a1 - 1)
    assert closed_form_two_groups(0.38, 0.9, 0.8) == pytest.approx((0.38 - 0.2) / 0.7)
    assert np.isnan(closed_form_two_groups(0.4, 0.5, 0.5))
    assert closed_form_two_groups(0.01, 0.9, 0.9) == 0.0     # clipped onto the simplex


@pytest.mark.parametrize("k", [3, 4])
def test_planted_share_recovered_from_planted_confusion(k: int) -> None:
    rng = np.random.default_rng(k)
    a = row_normalise(np.eye(k) * 8 + rng.uniform(0, 1, (k, k)))
    p = rng.dirichlet(np.ones(k))
    p_hat = a.T @ p
    assert simplex_lstsq(a, p_hat) == pytest.approx(p, abs=1e-10)
    assert simplex_lstsq_batch(a[None], p_hat[None])[0] == pytest.approx(p, abs=1e-10)


def test_simplex_solver_is_optimal_when_the_constraint_binds() -> None:
    # A decoded share vector that no truth on the simplex produces exactly.
    a = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    p_hat = np.array([0.05, 0.25, 0.70])
    p = simplex_lstsq(a, p_hat)
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
    assert np.linalg.solve(a.T, p_hat).min() < 0             # unconstrained leaves the simplex
    step = 0.002
    grid = [np.array([x, y, 1 - x - y])
            for x, y in itertools.product(np.arange(0, 1 + step, step), repeat=2) if x + y <= 1]
    best = min(_objective(a, q, p_hat) for q in grid)
    assert _objective(a, p, p_hat) <= best + 1e-9
    batch = simplex_lstsq_batch(np.stack([a, a]), np.stack([p_hat, a.T @ [0.2, 0.3, 0.5]]))
    assert batch[0] == pytest.approx(p, abs=1e-6)
    assert batch[1] == pytest.approx([0.2, 0.3, 0.5], abs=1e-10)


def test_holm_and_bh_match_statsmodels() -> None:
    from statsmodels.stats.multitest import multipletests

    p = [0.001, 0.04, 0.03, 0.2, 0.04, 0.5, 0.0001, 0.9, 0.012, 0.012]
    holm, bh = adjust_pvalues(p)
    assert holm == pytest.approx(list(multipletests(p, method="holm")[1]), abs=1e-12)
    assert bh == pytest.approx(list(multipletests(p, method="fdr_bh")[1]), abs=1e-12)
    # Tests that could not run stay None and do not count in the family.
    holm2, bh2 = adjust_pvalues([None, *p, None])
    assert holm2[0] is None and holm2[-1] is None and bh2[0] is None
    assert holm2[1:-1] == pytest.approx(holm) and bh2[1:-1] == pytest.approx(bh)
    assert adjust_pvalues([]) == ([], [])


def test_two_proportion_z_matches_statsmodels() -> None:
    from statsmodels.stats.proportion import proportions_ztest

    res = two_proportion_test(120, 400, 150, 380)
    z, p = proportions_ztest([120, 150], [400, 380])
    assert res.method == "two_proportion_z"
    assert res.statistic == pytest.approx(z) and res.p_value == pytest.approx(p)


def test_small_cells_use_fisher_exact() -> None:
    from scipy.stats import fisher_exact

    res = two_proportion_test(1, 12, 6, 15)
    assert res.method == "fisher_exact" and res.statistic is None
    assert res.p_value == pytest.approx(fisher_exact([[1, 11], [6, 9]]).pvalue)
    assert two_proportion_test(0, 0, 3, 10).p_value is None


def test_binomial_test_matches_scipy() -> None:
    from scipy.stats import binomtest

    assert binomial_test(30, 100, 0.4).p_value == pytest.approx(binomtest(30, 100, 0.4).pvalue)
    assert binomial_test(0, 0, 0.5).p_value is None


def test_distances_known_values() -> None:
    d = distances(np.array([0.2, 0.8]), np.array([0.5, 0.5]))
    assert d["l1"] == pytest.approx(0.6)
    assert d["l2"] == pytest.approx(np.sqrt(0.18))
    assert d["kl"] == pytest.approx(0.2 * np.log(0.4) + 0.8 * np.log(1.6))
    assert np.isfinite(distances(np.array([0.0, 1.0]), np.array([0.5, 0.5]))["kl"])
    assert distances(np.array([0.5, 0.5]), np.array([0.5, 0.5]))["l1"] == 0


def test_row_normalise_keeps_empty_rows_informative() -> None:
    a = row_normalise(np.array([[3, 1], [0, 0]]))
    assert a.tolist() == [[0.75, 0.25], [0.0, 1.0]]
