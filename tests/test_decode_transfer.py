"""Decoder transfer to generated images without labels (#18 item 7): a distance from the
decoders' training activations, calibrated on held-out real images, and its caveat."""

from __future__ import annotations

import numpy as np
import pytest

from audit.config import MeasureSettings
from audit.decode.transfer import (
    OOD_LOWER,
    activations_to_transfer,
    distance_parts,
    fit_reference,
    run_transfer,
)
from audit.measure import predictions_to_results, validate_results
from audit.validation.predictions import DIGITS_PLANTED, synthetic_predictions

D = 24


def _gaussian(n: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """Anisotropic correlated activations (N x D), as a layer's pooled features are."""
    mix = np.random.default_rng(99).normal(size=(D, D)) * np.linspace(3, 0.2, D)[:, None]
    x = rng.normal(size=(n, D)) @ mix
    return x + shift * mix[0] / np.linalg.norm(mix[0])      # a shift along one direction


def test_whitened_part_is_the_mahalanobis_distance_with_the_train_covariance() -> None:
    rng = np.random.default_rng(0)
    train, x = _gaussian(500, rng), _gaussian(40, rng)
    ref = fit_reference(train, variance=1.0, max_components=D)
    assert len(ref.variances) == D and ref.q_mean is None        # every component: no residual
    t2, _ = distance_parts(ref, x)
    diff = x - train.mean(axis=0)
    want = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(np.cov(train, rowvar=False)), diff)
    np.testing.assert_allclose(t2 * D, want, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_images_like_the_real_ones_are_about_one_percent_beyond(seed: int) -> None:
    rng = np.random.default_rng(seed)
    out = activations_to_transfer(_gaussian(1500, rng), _gaussian(1000, rng),
                                  _gaussian(3000, rng), real=_gaussian(2000, rng))
    gen, real = out["generated"], out["real"]
    assert gen["n"] == 3000 and real["n"] == 2000
    assert 0.002 <= gen["value"] <= 0.025 and 0.002 <= real["value"] <= 0.025
    assert gen["ci"][0] <= 0.01 <= gen["ci"][1] + 0.01
    assert out["out_of_distribution"] is False and out["reason"] is None
    assert 1 <= out["n_components"] <= D


def test_shifted_generated_images_are_out_of_distribution() -> None:
    rng = np.random.default_rng(3)
    train, held = _gaussian(1500, rng), _gaussian(1000, rng)
    mix = np.random.default_rng(99).normal(size=(D, D)) * np.linspace(3, 0.2, D)[:, None]
    sd = (train @ (mix[0] / np.linalg.norm(mix[0]))).std()   # along the shifted direction
    out = activations_to_transfer(train, held, _gaussian(2000, rng, shift=3 * sd))
    assert out["generated"]["value"] > 0.3 and out["generated"]["ci"][0] > OOD_LOWER
    assert out["out_of_distribution"] is True


def test_a_shift_off_the_training_subspace_is_caught_by_the_residual() -> None:
    rng = np.random.default_rng(4)
    basis = np.linalg.qr(rng.normal(size=(D, D)))[0]
    low = lambda n: rng.normal(size=(n, 4)) @ basis[:4] * 3 + 0.05 * rng.normal(size=(n, D))  # noqa: E731
    gen = low(1000) + 0.6 * basis[10]                   # small, but where no real image varies
    out = activations_to_transfer(low(1500), low(800), gen)
    assert out["n_components"] <= 8
    assert out["out_of_distribution"] is True and out["generated"]["value"] > 0.5


def test_too_few_held_out_images_are_not_judged() -> None:
    rng = np.random.default_rng(5)
    out = activations_to_transfer(_gaussian(300, rng), _gaussian(20, rng), _gaussian(50, rng))
    assert out["out_of_distribution"] is None and "at least 50 needed" in out["reason"]


def test_run_transfer_fits_on_train_and_calibrates_on_held_out_ids() -> None:
    rng = np.random.default_rng(6)
    paired = _gaussian(1000, rng)
    ids = [f"p{i}" for i in range(1000)]
    splits = {"train": ids[:600], "val": ids[600:800], "test": ids[800:]}
    gen = _gaussian(500, rng)
    doc = run_transfer({"paired": {"l1": paired, "l2": paired[:, :10]},
                        "generated": {"l1": gen, "l2": gen[:, :10]}}, splits, ids,
                       {"tone": "l1", "stroke": "l1", "digit": "l2"})
    assert set(doc["layers"]) == {"l1", "l2"} and doc["concepts"]["digit"] == "l2"
    assert doc["layers"]["l1"]["n_train"] == 600 and doc["layers"]["l1"]["n_calibration"] == 400
    assert doc["layers"]["l1"]["real"] is None


# ------------------------------------------------------------------ measure: the caveat


def _doc(ood: bool) -> dict:
    gen = {"value": 0.4, "ci": [0.37, 0.43], "n": 2000, "k": 800} if ood else \
        {"value": 0.011, "ci": [0.007, 0.016], "n": 2000, "k": 22}
    rec = {"method": "pca_mahalanobis_residual", "n_components": 7, "explained_variance": 0.95,
           "n_train": 1300, "n_calibration": 860, "quantile": 0.99, "threshold": 3.2,
           "generated": gen, "real": {"value": 0.01, "ci": [0.006, 0.015], "n": 2000, "k": 20},
           "out_of_distribution": ood, "reason": None}
    return {"version": 1, "rule": "the rule", "quantile": 0.99, "ood_lower": 0.05,
            "confidence": 0.95, "concepts": {"digit": "a", "tone": "a", "stroke": "b"},
            "layers": {"a": {**rec, "out_of_distribution": False,
                             "generated": {"value": 0.01, "ci": [0.006, 0.015], "n": 2000,
                                           "k": 20}},
                       "b": rec}}


@pytest.fixture(scope="module")
def planted(cs):
    return synthetic_predictions(1500, 1500, cs, seed=1, planted=DIGITS_PLANTED)


@pytest.mark.parametrize("ood", [False, True])
def test_findings_on_out_of_distribution_concepts_carry_the_caveat(cs, planted, ood) -> None:
    frame, validity = planted
    out = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=50),
                                 transfer=_doc(ood))
    validate_results(out)
    rows = {r["concept"]: r for r in out["transfer"]}
    assert rows["stroke"]["out_of_distribution"] is ood and rows["tone"]["caveat"] is None
    rep = [f for f in out["findings"] if f["kind"] in ("representation", "coverage")]
    stroke = [f for f in rep if "stroke" in f["concept"].split("+")]
    assert stroke, "the planted stroke gap gives representation findings"
    for f in stroke:
        assert ("transfer_caveat" in f["evidence"]) is ood
        assert ("Caveat (decoder transfer)" in f["summary"]) is ood
        if ood:
            assert "40.0% of generated images (800 of 2000; 95% interval 37.0% to 43.0%) " \
                   "lie beyond the range of held-out real images at layer b" in f["summary"]
    for f in out["findings"]:           # nothing else is touched
        if "stroke" not in f["concept"].split("+") or f["kind"] not in (
                "representation", "coverage", "treatment") or f["source"] == "real":
            assert "transfer_caveat" not in f["evidence"]


def test_without_transfer_json_results_have_an_empty_section(cs, planted) -> None:
    frame, validity = planted
    out = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=20))
    assert out["transfer"] == []


def test_a_malformed_transfer_document_is_a_clear_error(cs, planted) -> None:
    from audit.errors import DataError

    frame, validity = planted
    with pytest.raises(DataError, match=r"decoders/transfer\.json is malformed"):
        predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=20),
                               transfer={"concepts": {"tone": "zz"}, "layers": {}})
