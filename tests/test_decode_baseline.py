"""Random-weights baseline (#18 item 2): re-initialised copies, balanced accuracy, knowledge
gain and its interval, and the section results.json carries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from audit.decode.baseline import (
    PIXELS_ALONE,
    balanced_accuracy,
    knowledge_gain,
    randomise_module,
)


class _Scaled(nn.Module):
    """A module with a raw parameter and no reset_parameters (as custom GAN layers have)."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.arange(12.0))

    def forward(self, x):
        return x * self.gain[: x.shape[-1]]


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3), _Scaled())


def test_randomised_copy_leaves_the_original_and_changes_every_parameter() -> None:
    net = _net()
    with torch.no_grad():
        net[1].running_mean.fill_(3.0)                  # as after training
    before = {k: v.clone() for k, v in net.state_dict().items()}
    copy, record = randomise_module(net, seed=0)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k             # the loaded model is untouched
    assert record == {"reset_modules": 3, "shuffled_parameters": ["5.gain"]}
    after = copy.state_dict()
    for k in ("0.weight", "0.bias", "4.weight", "4.bias", "5.gain"):
        assert not torch.equal(after[k], before[k]), k
    assert torch.equal(after["1.running_mean"], torch.zeros(4))   # BatchNorm reset too
    # shuffled, not replaced: the same values in another order
    assert torch.equal(after["5.gain"].sort().values, before["5.gain"])
    assert not copy.training and not any(p.requires_grad for p in copy.parameters())


def test_randomisation_is_fixed_by_its_seed() -> None:
    a, _ = randomise_module(_net(), seed=7)
    b, _ = randomise_module(_net(), seed=7)
    c, _ = randomise_module(_net(), seed=8)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.state_dict()["4.weight"], c.state_dict()["4.weight"])


@pytest.mark.parametrize("seed", range(4))
def test_balanced_accuracy_is_sklearns(seed: int) -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=200, p=[0.6, 0.3, 0.1])
    pred = np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200))
    assert balanced_accuracy(y, pred, 4) == pytest.approx(balanced_accuracy_score(y, pred))
    rows = rng.integers(0, 200, size=(5, 200))
    np.testing.assert_allclose(balanced_accuracy(y[rows], pred[rows], 3),
                               [balanced_accuracy_score(y[r], pred[r]) for r in rows])


def test_a_concept_the_random_d_cannot_read_has_a_positive_gain() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    trained = np.where(rng.random(400) < 0.9, y, 1 - y)      # 90% right
    random = rng.integers(0, 2, 400)                          # chance
    g = knowledge_gain(y, trained, random, 2, seed=1)
    assert g["knowledge_gain"]["value"] == pytest.approx(
        g["trained_balanced_accuracy"] - g["random_balanced_accuracy"])
    lo, hi = g["knowledge_gain"]["ci"]
    assert 0.25 < lo < g["knowledge_gain"]["value"] < hi < 0.55
    assert g["pixels_alone"] is False and g["label"] is None


def test_a_concept_both_read_alike_is_decodable_from_pixels_alone() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    trained = np.where(rng.random(300) < 0.8, y, rng.integers(0, 3, 300))
    random = np.where(rng.random(300) < 0.8, y, rng.integers(0, 3, 300))
    g = knowledge_gain(y, trained, random, 3, seed=3)
    lo, hi = g["knowledge_gain"]["ci"]
    assert lo < 0 < hi and g["pixels_alone"] is True and g["label"] == PIXELS_ALONE


def test_two_perfect_decoders_get_an_interval_not_a_certainty() -> None:
    y = np.arange(200) % 2
    g = knowledge_gain(y, y, y, 2)
    lo, hi = g["knowledge_gain"]["ci"]
    assert g["knowledge_gain"]["value"] == 0 and lo < 0 < hi and hi - lo > 0.01
    assert g["pixels_alone"] is True


# ------------------------------------------------------------------ results.json


def _doc() -> dict:
    gain = {"trained_balanced_accuracy": 0.95, "random_balanced_accuracy": 0.6,
            "knowledge_gain": {"value": 0.35, "ci": [0.3, 0.4], "n": 400},
            "pixels_alone": False, "label": None}
    same = {"trained_balanced_accuracy": 1.0, "random_balanced_accuracy": 1.0,
            "knowledge_gain": {"value": 0.0, "ci": [-0.01, 0.01], "n": 400},
            "pixels_alone": True, "label": PIXELS_ALONE}
    return {"version": 1, "layers": {"tone": {"trained": "a", "random": "b"}},
            "concepts": {"tone": same, "stroke": gain}}


def test_results_carry_the_gain_and_the_label(cs) -> None:
    from audit.config import MeasureSettings
    from audit.measure import predictions_to_results, validate_results
    from audit.validation.predictions import DIGITS_PLANTED, synthetic_predictions

    frame, validity = synthetic_predictions(300, 300, cs, seed=0, planted=DIGITS_PLANTED)
    out = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=20),
                                 baseline=_doc())
    validate_results(out)
    rows = {r["concept"]: r for r in out["baseline"]}
    assert set(rows) == {"tone", "stroke"}
    assert rows["tone"]["pixels_alone"] and rows["tone"]["label"] == PIXELS_ALONE
    assert rows["tone"]["trained_layer"] == "a" and rows["stroke"]["trained_layer"] is None
    assert rows["stroke"]["label"] is None and rows["stroke"]["knowledge_gain"]["ci"] == [0.3, 0.4]
    skipped = predictions_to_results(frame, cs, validity, settings=MeasureSettings(n_boot=20),
                                     baseline={"version": 1, "skipped": "off"})
    assert skipped["baseline"] == []

    from audit.report import results_to_html

    html = results_to_html(out)
    assert "Knowledge gain over a random-weights discriminator" in html
    assert PIXELS_ALONE in html


def test_switched_off_the_baseline_writes_only_why(tmp_path) -> None:
    import json

    from audit.concepts import load_concept_set
    from audit.config import load_config
    from audit.decode.baseline import baseline_for_run
    from audit.pipeline import demo_config

    cfg = load_config(demo_config())
    cfg = cfg.model_copy(update={"decoders": cfg.decoders.model_copy(
        update={"random_baseline": False})})
    doc = baseline_for_run(cfg, tmp_path, load_concept_set("digits_tone"))
    assert doc == {"version": 1, "skipped": "decoders.random_baseline is false"}
    assert json.loads((tmp_path / "baseline" / "random.json").read_text()) == doc
