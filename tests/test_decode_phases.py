"""The four phases of decoder training, each on its own, on in-memory arrays.

``activations_to_decoders`` is prepare_split_and_scaling -> layer_inputs ->
fit_heads_per_layer -> fit_controls -> measure_validity; each phase is checked here
against an independent reference (numpy, scikit-learn) on tiny planted data.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from audit.config import DecoderSettings
from audit.decode.model import concept_probabilities, decide, forward_logits
from audit.decode.train import (
    activations_to_decoders,
    fit_controls,
    fit_heads_per_layer,
    layer_inputs,
    measure_validity,
    prepare_split_and_scaling,
)
from audit.errors import ConfigError
from audit.validation.decoders import planted_activations

SETTINGS = DecoderSettings(hidden=[32], lr=1e-2, max_epochs=60, patience=10, seed=0)


@pytest.fixture(scope="module")
def planted():
    features, labels, cs = planted_activations(600, n_layers=2, dim=12, seed=3,
                                               noise=(2.0, 0.3), missing=0.05)
    features["layer0"][:, 3] = 7.0                      # a constant channel
    return features, labels, cs


@pytest.fixture(scope="module")
def phases(planted):
    """The phases run by hand, as activations_to_decoders runs them (seeded torch)."""
    import torch

    features, labels, cs = planted
    data = prepare_split_and_scaling(features, labels, cs, settings=SETTINGS)
    with torch.random.fork_rng():
        torch.manual_seed(SETTINGS.seed)
        inputs = layer_inputs(data, settings=SETTINGS, device=torch.device("cpu"))
        heads = fit_heads_per_layer(data, inputs, settings=SETTINGS)
        controls = fit_controls(data, inputs, heads, settings=SETTINGS)
    decoders, validity = measure_validity(data, heads, controls, settings=SETTINGS)
    return data, heads, controls, decoders, validity


def test_prepare_splits_disjointly_and_standardises_with_training_statistics(planted):
    features, labels, cs = planted
    data = prepare_split_and_scaling({k: v.astype(np.float16) for k, v in features.items()},
                                     labels, cs, settings=SETTINGS)
    parts = [data.train, data.val, data.test]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    assert [len(p) / len(labels) for p in parts] == pytest.approx(list(SETTINGS.split),
                                                                  abs=0.02)
    for layer, x in features.items():
        x16 = x.astype(np.float16).astype(np.float64)[data.train]
        mean, std = data.stats[layer]
        np.testing.assert_allclose(mean, x16.mean(axis=0), rtol=1e-5, atol=1e-5)
        want_std = x16.std(axis=0)
        want_std[want_std < 1e-6] = 1.0                 # the constant channel is left at 1
        np.testing.assert_allclose(std, want_std, rtol=1e-4)
        z = data.x[layer][data.train].astype(np.float64)
        np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
        live = want_std != 1.0
        np.testing.assert_allclose(z.std(axis=0)[live], 1.0, atol=1e-3)
    assert data.stats["layer0"][1][3] == 1.0
    # The control task: each concept's codes permuted within train and within val.
    for rows in (data.train, data.val):
        for j in range(data.codes.shape[1]):
            assert sorted(data.shuffled[rows, j]) == sorted(data.codes[rows, j])
    assert not np.array_equal(data.shuffled[data.train], data.codes[data.train])
    np.testing.assert_array_equal(data.image_ids, labels["image_id"].astype(str))


def test_prepare_refuses_a_fixed_layer_that_was_not_recorded(planted):
    features, labels, cs = planted
    with pytest.raises(ConfigError, match="layer9"):
        prepare_split_and_scaling(features, labels, cs, settings=SETTINGS.model_copy(
            update={"layer": {"tone": "layer9"}}))


def test_fit_heads_probes_match_sklearn_and_the_choice_is_the_best_validation_score(phases):
    """The full probe at each concept's chosen layer is LogisticRegression()'s on the
    training rows, and each concept's layer has the highest validation AUROC (ties to
    the later layer)."""
    data, heads, *_ = phases
    for j, name in enumerate(data.layout.names):
        layer = heads.best[name]
        i = data.layers.index(layer)
        assert name in heads.probed[i]
        scores = heads.val_scores[name]
        assert scores[layer] == max(scores.values())
        y = data.codes[data.train, j]
        known = y >= 0
        x = data.x[layer][data.train][known]
        clf = LogisticRegression(max_iter=2000, tol=1e-8).fit(x, y[known])
        ours = forward_logits(heads.probe_real[i], x)[:, data.layout.slice(j)]
        pred = decide(concept_probabilities(ours, data.layout.kinds[j]), data.layout.kinds[j])
        assert np.mean(pred == clf.predict(x)) > 0.99, name
        assert heads.choices[i][name] in ("mlp", "linear")
        assert heads.temps[i][name] > 0


def test_fit_controls_one_decoder_per_chosen_layer_near_chance(phases):
    data, heads, controls, *_ = phases
    assert set(controls) == set(heads.best.values())
    for j, name in enumerate(data.layout.names):
        layer = heads.best[name]
        z = forward_logits(controls[layer], data.x[layer][data.test])[:, data.layout.slice(j)]
        y = data.codes[data.test, j]
        known = y >= 0
        pred = decide(concept_probabilities(z, data.layout.kinds[j]), data.layout.kinds[j])
        chance = 1.0 / len(data.layout.groups[j])
        assert balanced_accuracy_score(y[known], pred[known]) < chance + 0.15, name


def test_measure_validity_matches_sklearns_metrics(phases):
    """Held-out accuracy, control accuracy and selectivity recomputed with scikit-learn
    from the decoders' weights alone."""
    data, heads, controls, decoders, validity = phases
    for j, name in enumerate(data.layout.names):
        v = validity["concepts"][name]
        layer, kind, sl = v["layer"], data.layout.kinds[j], data.layout.slice(j)
        assert layer == heads.best[name]
        y = data.codes[data.test, j]
        known = y >= 0
        x = data.x[layer][data.test]
        dec = decoders[layer]
        pred = decide(concept_probabilities(forward_logits(dec.params, x)[:, sl], kind,
                                            dec.temperatures[name]), kind)
        ctrl = decide(concept_probabilities(forward_logits(controls[layer], x)[:, sl], kind),
                      kind)
        assert v["accuracy"] == pytest.approx(accuracy_score(y[known], pred[known]))
        assert v["control_accuracy"] == pytest.approx(accuracy_score(y[known], ctrl[known]))
        bal = balanced_accuracy_score(y[known], pred[known])
        ctrl_bal = balanced_accuracy_score(y[known], ctrl[known])
        assert v["selectivity"] == pytest.approx(bal - ctrl_bal)
        assert v["decodable"] == (bal - ctrl_bal >= SETTINGS.min_selectivity)
    assert set(validity["intersections"]) == {"+".join(c)
                                              for c in data.concept_set.intersections}


def test_the_orchestrator_is_its_phases(planted, phases):
    """activations_to_decoders gives what the phases give when run by hand."""
    features, labels, cs = planted
    data, heads, _, decoders, validity = phases
    bundle = activations_to_decoders(features, labels, cs, settings=SETTINGS,
                                     model_sha256="m", pooling="avg")
    assert bundle.best == heads.best
    assert (json.dumps(bundle.validity["concepts"], sort_keys=True)       # NaN == NaN here
            == json.dumps(validity["concepts"], sort_keys=True))
    for layer, dec in decoders.items():
        for k, w in dec.params.items():
            np.testing.assert_array_equal(bundle.decoders[layer].params[k], w)
    assert bundle.splits["test"] == data.image_ids[data.test].tolist()
