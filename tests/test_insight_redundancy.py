"""Linear CKA against a direct formula and its invariances; layers an earlier one reaches."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from audit.errors import DataError
from audit.insight.redundancy import cka_matrix, layers_to_redundancy, linear_cka


def _direct_cka(x: np.ndarray, y: np.ndarray) -> float:
    """HSIC form with the centring matrix H (Kornblith et al. 2019, eq. 3-4)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, m = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.trace(k @ m) / np.sqrt(np.trace(k @ k) * np.trace(m @ m)))


@pytest.mark.parametrize(("n", "d1", "d2"), [(60, 5, 8), (12, 40, 30)])  # both code paths
def test_matches_direct_formula(n, d1, d2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d1))
    y = x[:, :min(d1, d2)] @ rng.normal(size=(min(d1, d2), d2)) + rng.normal(size=(n, d2))
    assert linear_cka(x, y) == pytest.approx(_direct_cka(x, y), rel=1e-10)
    assert linear_cka(x, rng.normal(size=(n, d2))) < linear_cka(x, y)


def test_self_is_one_and_invariant_to_rotation_and_scale():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 6)) @ rng.normal(size=(6, 6))
    q = ortho_group.rvs(6, random_state=2)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.7 * x @ q + 5.0) == pytest.approx(1.0)
    y = rng.normal(size=(80, 4)) + x[:, :4]
    assert linear_cka(x @ q * 0.2, y) == pytest.approx(linear_cka(x, y))
    # not invariant to an anisotropic scaling: the test can fail
    assert linear_cka(x * np.array([10, 1, 1, 1, 1, 1]), y) != pytest.approx(linear_cka(x, y))


def test_matrix_is_symmetric_and_subsampled():
    rng = np.random.default_rng(3)
    feats = {f"l{i}": rng.normal(size=(300, 4 + i)) for i in range(3)}
    m = cka_matrix(feats, max_rows=None)
    np.testing.assert_allclose(m, m.T)
    np.testing.assert_allclose(np.diag(m), 1.0)
    assert m[0, 1] == pytest.approx(linear_cka(feats["l0"], feats["l1"]))
    with pytest.raises(DataError, match="different numbers of images"):
        cka_matrix({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})
    assert np.isnan(linear_cka(np.ones((5, 2)), rng.normal(size=(5, 2))))


def test_names_layers_an_earlier_layer_reaches():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(100, 5))
    feats = {"a": base, "b": base @ rng.normal(size=(5, 5)), "c": rng.normal(size=(100, 3))}
    sweep = {"layers": ["a", "b", "c"],
             "accuracy": {"tone": {"a": 0.95, "b": 0.955, "c": 0.97},
                          "digit": {"a": 0.80, "b": 0.70, "c": 0.90}}}
    r = layers_to_redundancy(feats, sweep, tolerance=0.01)
    assert r.reached_by == {"a": None, "b": "a", "c": None}
    assert [x["layer"] for x in r.redundant] == ["b"]
    assert r.redundant[0]["cka"] == pytest.approx(linear_cka(feats["a"], feats["b"]))
    assert "tone 0.950 vs 0.955" in r.redundant[0]["reason"]
    strict = layers_to_redundancy(feats, sweep, tolerance=0.0)
    assert strict.redundant == []
    assert layers_to_redundancy(feats, None).redundant == []
