"""Decoders trained on synthetic activations with planted concepts (tiny, seeded)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix

from audit.config import DecoderSettings
from audit.decode import activations_to_decoders, decode, train_decoders
from audit.decode.split import encode_labels
from audit.errors import ConfigError, DataError
from audit.validation.decoders import planted_activations

# Small network, high learning rate: trains in about a second on one thread.
FAST = dict(hidden=[32], lr=1e-2, max_epochs=150, patience=15, seed=0)


def fast(**kw) -> DecoderSettings:
    return DecoderSettings(**{**FAST, **kw})


@pytest.fixture(scope="module")
def planted():
    return planted_activations(800, n_layers=2, dim=16, seed=0, noise=(1.5, 0.3))


@pytest.fixture(scope="module")
def bundle(planted):
    features, labels, cs = planted
    return activations_to_decoders(features, labels, cs, settings=fast(), model_sha256="m" * 64,
                                   pooling="avg")


def _sklearn_probe_accuracy(features, labels, cs, bundle, concept, layer):
    from sklearn.linear_model import LogisticRegression

    ids = labels["image_id"].to_numpy()
    tr, te = np.isin(ids, bundle.splits["train"]), np.isin(ids, bundle.splits["test"])
    y = encode_labels(labels, cs)[:, cs.names.index(concept)]
    x = features[layer]
    mean, std = x[tr].mean(0), x[tr].std(0)
    clf = LogisticRegression(max_iter=1000).fit((x[tr] - mean) / std, y[tr])
    return float(np.mean(clf.predict((x[te] - mean) / std) == y[te]))


def test_alias():
    assert train_decoders is activations_to_decoders


def test_recovers_linear_and_nonlinear_concepts(planted, bundle):
    features, labels, cs = planted
    v = bundle.validity["concepts"]
    assert v["tone"]["accuracy"] > 0.9                       # linear
    assert v["digit"]["accuracy"] > 0.85                     # linear, 4 groups
    for concept in ("stroke", "ring"):                       # XOR and radial
        layer = v[concept]["layer"]
        sk = _sklearn_probe_accuracy(features, labels, cs, bundle, concept, layer)
        assert sk < 0.7, (concept, sk)
        assert v[concept]["accuracy"] > sk + 0.15, (concept, v[concept]["accuracy"], sk)
        assert v[concept]["accuracy"] > v[concept]["probe_accuracy"] + 0.15


def test_internal_probe_matches_sklearn(planted, bundle):
    # A concept's probe is fitted where it can matter (always at the concept's chosen
    # layer, where validity reports it); elsewhere its accuracy is NaN.
    features, labels, cs = planted
    for concept in cs.names:
        assert np.isfinite(bundle.validity["concepts"][concept]["probe_accuracy"]), concept
    for layer in bundle.layers:
        for concept in ("tone", "digit"):
            ours = bundle.decoders[layer].metrics[concept]["probe_accuracy"]
            assert bundle.best[concept] != layer or np.isfinite(ours)
            if np.isnan(ours):
                continue
            sk = _sklearn_probe_accuracy(features, labels, cs, bundle, concept, layer)
            assert ours == pytest.approx(sk, abs=0.015), (layer, concept)


def test_layer_sweep_prefers_the_cleaner_layer(bundle):
    # layer1 has a third of layer0's noise: every concept reads better there.
    assert bundle.best == {c: "layer1" for c in bundle.concept_set.names}
    for c in bundle.concept_set.names:
        s = bundle.sweep["scores"][c]
        assert s["layer1"] > s["layer0"]


def test_fixed_layer_and_unknown_layer(planted):
    features, labels, cs = planted
    b = activations_to_decoders(features, labels, cs, settings=fast(layer={"tone": "layer0"},
                                                                    max_epochs=5),
                                model_sha256="m", pooling="avg")
    assert b.best["tone"] == "layer0" and b.validity["concepts"]["tone"]["layer"] == "layer0"
    with pytest.raises(ConfigError, match=r"'tone' to layer 'main\.9'.*layers: \['layer0'"):
        activations_to_decoders(features, labels, cs, settings=fast(layer={"tone": "main.9"}),
                                model_sha256="m", pooling="avg")


def test_ties_go_to_the_later_layer():
    from audit.decode.train import _choose

    assert _choose({"a": 0.9, "b": 0.9, "c": 0.8}, ["a", "b", "c"]) == "b"
    assert _choose({"a": float("nan"), "b": float("nan")}, ["a", "b"]) == "b"
    assert _choose({"a": 0.95, "b": float("nan")}, ["a", "b"]) == "a"


def test_missing_labels_leave_other_heads_unaffected(planted, bundle):
    features, labels, cs = planted
    no_stroke = labels.copy()
    no_stroke["stroke"] = None
    b = activations_to_decoders(features, no_stroke, cs, settings=fast(), model_sha256="m",
                                pooling="avg")
    v, ref = b.validity["concepts"], bundle.validity["concepts"]
    # Without stroke labels the split (stratified on protected concepts) and the shared
    # hidden layer change, so held-out scores move by test-set noise (160 test images:
    # accuracies within three standard errors of a difference, about 0.11; a head poisoned
    # by the missing labels would sit near chance); the exact per-concept masking is
    # pinned down by test_loss_mask_is_per_concept.
    for c in ("tone", "digit", "ring"):
        p, n = ref[c]["accuracy"], ref[c]["n_test"]
        assert v[c]["auroc"] == pytest.approx(ref[c]["auroc"], abs=0.04), c
        assert v[c]["accuracy"] == pytest.approx(p, abs=3 * np.sqrt(2 * p * (1 - p) / n)), c
    assert v["stroke"]["n_test"] == 0
    assert np.isnan(v["stroke"]["accuracy"]) and v["stroke"]["decodable"] is False
    assert sum(map(sum, v["stroke"]["confusion"])) == 0


def _member_losses(logits, codes, weights, layout):
    """Loss per member of sample-major logits (M x n x width, the layout's order), through
    the training path (feature-major, training order)."""
    from audit.decode._fit import Targets, _concept_losses, _Labels, _Order

    order = _Order.of(layout)
    z = logits[:, :, list(order.rows)].transpose(1, 2)
    return _concept_losses(z, _Labels.of(Targets(codes, weights), order).batch(),
                           order).sum(dim=1)


def test_loss_mask_is_per_concept():
    """A masked label changes neither the loss nor any gradient of the other heads."""
    import torch

    from audit.decode.model import HeadLayout
    from audit.validation.decoders import planted_concept_set

    layout = HeadLayout.from_concepts(planted_concept_set())   # widths 1, 1, 4, 1
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 6, layout.width, generator=g, requires_grad=True)
    codes = torch.tensor([[[0, 1, 2, 1], [1, 0, 3, 0], [1, 1, 0, 0],
                           [0, 0, 1, 1], [1, 1, 2, 0], [0, 1, 3, 1]]])
    masked = codes.clone()
    masked[0, :3, 1] = -1          # stroke unknown on three rows
    masked[0, 4, 2] = -1           # digit unknown on one row
    losses = []
    for c in (codes, masked):
        loss = _member_losses(logits, c, (c >= 0).float(), layout)
        (grad,) = torch.autograd.grad(loss.sum(), logits)
        losses.append((loss, grad))
    (_, g_full), (_, g_mask) = losses
    stroke = layout.starts[1]
    assert torch.equal(g_mask[0, :3, stroke], torch.zeros(3))     # masked rows: no gradient
    assert torch.equal(g_mask[0, 4, layout.slice(2)], torch.zeros(4))
    for j in (0, 3):                                                # other heads: unchanged
        assert torch.equal(g_full[0, :, layout.slice(j)], g_mask[0, :, layout.slice(j)])
    # A concept's loss is the mean over its labelled rows only: torch's own losses.
    F = torch.nn.functional
    z = logits.detach()[0]
    for j, keep, expected in (
            (1, slice(3, None), F.binary_cross_entropy_with_logits(
                z[3:, stroke], codes[0, 3:, 1].float())),
            (2, [0, 1, 2, 3, 5], F.cross_entropy(z[[0, 1, 2, 3, 5], layout.slice(2)],
                                                 codes[0, [0, 1, 2, 3, 5], 2]))):
        only = torch.full_like(codes, -1)
        only[0, keep, j] = codes[0, keep, j]
        got = _member_losses(logits.detach(), only, (only >= 0).float(), layout)
        assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_control_task_sits_near_chance(planted):
    features, labels, cs = planted
    rng = np.random.default_rng(5)
    noisy = labels.copy()
    noisy["ring"] = rng.choice(["inside", "outside"], size=len(labels))   # unrelated to x
    b = activations_to_decoders(features, noisy, cs, settings=fast(), model_sha256="m",
                                pooling="avg")
    v = b.validity["concepts"]
    for c in cs.names:
        counts = np.asarray(v[c]["confusion"]).sum(axis=1)
        majority = counts.max() / counts.sum()
        # A decoder of shuffled labels cannot beat guessing the majority group by much.
        assert v[c]["control_accuracy"] <= majority + 0.08, c
        assert v[c]["control_accuracy"] >= 1 / len(counts) - 0.1, c
    for c, least in (("tone", 0.15), ("stroke", 0.3), ("digit", 0.4)):  # tone is 70/30
        assert v[c]["selectivity"] > least and v[c]["decodable"] is True, c
    assert abs(v["ring"]["selectivity"]) < 0.1 and v["ring"]["decodable"] is False


def test_calibration_lowers_ece_when_overconfident():
    # Few images, a wide unregularised MLP and a high learning rate: over-confident logits
    # on the non-linear concepts.
    features, labels, cs = planted_activations(400, n_layers=1, dim=64, seed=1,
                                               noise=(2.0, 2.0))
    settings = fast(hidden=[256], lr=0.05, dropout=0.0, weight_decay=0.0)
    b = activations_to_decoders(features, labels, cs, settings=settings, model_sha256="m",
                                pooling="avg")
    for c in ("stroke", "ring"):
        m = b.validity["concepts"][c]
        assert m["temperature"] > 1.5, c
        assert m["ece"] < 0.6 * m["ece_uncalibrated"], c
    off = activations_to_decoders(features, labels, cs, settings=settings.model_copy(
        update={"calibrate": False}), model_sha256="m", pooling="avg")
    m = off.validity["concepts"]["stroke"]
    assert m["temperature"] == 1.0 and m["ece"] == m["ece_uncalibrated"]


def test_fit_temperature_recovers_a_known_temperature():
    from audit.decode.metrics import expected_calibration_error
    from audit.decode.model import (
        concept_probabilities,
        fit_temperature,
        temperature_and_nll,
    )

    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 1.5, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    z = 3.0 * true_logit[:, None]                    # three times too confident
    t = fit_temperature(z, y, "binary")
    assert t == pytest.approx(3.0, rel=0.05)
    before = expected_calibration_error(y, concept_probabilities(z, "binary"))
    after = expected_calibration_error(y, concept_probabilities(z, "binary", t))
    assert after < 0.02 < 0.1 < before
    # Multiclass: softmax logits scaled by 0.5 (under-confident) -> T near 0.5.
    logits = rng.normal(0, 2, (20000, 3))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    yk = (rng.random(20000)[:, None] > p.cumsum(1)).sum(1)
    assert fit_temperature(0.5 * logits, yk, "multiclass") == pytest.approx(0.5, rel=0.05)
    assert fit_temperature(z, np.full(20000, -1), "binary") == 1.0
    # The loss that comes with the temperature is the NLL at it, computed independently.
    for zz, yy, kind in ((z, y, "binary"), (0.5 * logits, yk, "multiclass")):
        t, nll = temperature_and_nll(zz, yy, kind)
        prob = concept_probabilities(zz, kind, t)
        assert nll == pytest.approx(-np.mean(np.log(prob[np.arange(len(yy)), yy])), rel=1e-9)


def test_same_seed_same_decoders(planted, bundle):
    features, labels, cs = planted
    again = activations_to_decoders(features, labels, cs, settings=fast(), model_sha256="m" * 64,
                                    pooling="avg")
    for layer in bundle.layers:
        a, b = bundle.decoders[layer], again.decoders[layer]
        assert a.params.keys() == b.params.keys()
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
        assert a.temperatures == b.temperatures
    assert again.splits == bundle.splits
    assert repr(again.validity) == repr(bundle.validity)    # NaN-safe equality
    other = activations_to_decoders(features, labels, cs, settings=fast(seed=1, max_epochs=3),
                                    model_sha256="m", pooling="avg")
    assert other.splits["train"] != bundle.splits["train"]


def test_float16_features_and_class_balance(planted):
    features, labels, cs = planted
    half = {k: v.astype(np.float16) for k, v in features.items()}
    b = activations_to_decoders(half, labels, cs, settings=fast(class_balanced=True),
                                model_sha256="m", pooling="avg")
    v = b.validity["concepts"]["tone"]                     # 70/30 concept
    assert v["balanced_accuracy"] > 0.85


def test_minibatch_training(planted):
    features, labels, cs = planted
    b = activations_to_decoders(features, labels, cs, settings=fast(batch_size=64, max_epochs=40),
                                model_sha256="m", pooling="avg")
    assert b.validity["concepts"]["tone"]["accuracy"] > 0.85


def test_input_errors(planted):
    features, labels, cs = planted
    kw = dict(settings=fast(max_epochs=2), model_sha256="m", pooling="avg")
    with pytest.raises(DataError, match=r"layer 'layer0': activations of shape \(10, 16\) do not "
                                        r"match the 800 labelled images"):
        activations_to_decoders({"layer0": features["layer0"][:10]}, labels, cs, **kw)
    with pytest.raises(DataError, match="no 'image_id' column"):
        activations_to_decoders(features, labels.drop(columns="image_id"), cs, **kw)
    bad = labels.copy()
    bad.loc[3, "tone"] = "grey"
    with pytest.raises(DataError, match=r"concept 'tone' include \['grey'\], which are not among "
                                        r"its groups \['light', 'dark'\]"):
        activations_to_decoders(features, bad, cs, **kw)
    nan = {"layer0": features["layer0"].copy()}
    nan["layer0"][0, 0] = np.nan
    with pytest.raises(DataError, match="NaN or infinite"):
        activations_to_decoders(nan, labels, cs, **kw)
    with pytest.raises(DataError, match="no activations given"):
        activations_to_decoders({}, labels, cs, **kw)


def test_test_labels_never_influence_training_or_the_layer_choice(planted, bundle):
    """Scrambling the test split's labels of a non-protected concept (the split is
    stratified on protected concepts only, so it stays the same) changes neither a
    weight nor a chosen layer: layers are chosen on the validation split."""
    features, labels, cs = planted
    test = labels["image_id"].isin(bundle.splits["test"]).to_numpy()
    scrambled = labels.copy()
    rng = np.random.default_rng(0)
    scrambled.loc[test, "digit"] = rng.permutation(scrambled.loc[test, "digit"].to_numpy())
    b = activations_to_decoders(features, scrambled, cs, settings=fast(), model_sha256="m" * 64,
                                pooling="avg")
    assert b.splits == bundle.splits and b.best == bundle.best
    for layer in b.layers:
        p, q = b.decoders[layer].params, bundle.decoders[layer].params
        assert all(np.array_equal(p[k], q[k]) for k in p)
    assert b.validity["concepts"]["digit"]["accuracy"] < 0.5      # test metrics do change
    for c in cs.names:
        val = b.sweep["val_scores"][c]
        assert b.best[c] == max(reversed(b.layers), key=lambda lay: val[lay])


def test_decoder_not_below_the_probe_on_a_linear_concept():
    """An over-sized, unregularised MLP on few images would overfit the linear concept;
    choosing per concept on validation loss keeps the decoder at the probe's level."""
    features, labels, cs = planted_activations(600, n_layers=1, dim=48, seed=4,
                                               noise=(2.5, 2.5))
    settings = fast(hidden=[256], dropout=0.0, weight_decay=0.0, lr=0.05, max_epochs=30,
                    patience=30, init_from_probe=False)
    b = activations_to_decoders(features, labels, cs, settings=settings, model_sha256="m",
                                pooling="avg")
    for concept in ("tone", "digit"):
        v = b.validity["concepts"][concept]
        sk = _sklearn_probe_accuracy(features, labels, cs, b, concept, "layer0")
        se = np.sqrt(sk * (1 - sk) / v["n_test"])
        assert v["accuracy"] >= sk - 2 * se, (concept, v["accuracy"], sk)
    # Where the probe was kept, the MLP adds nothing to that concept's logits.
    params = b.decoders["layer0"].params
    layout = b.layout
    for j, name in enumerate(layout.names):
        if b.decoders["layer0"].metrics[name]["decoder"] == "linear":
            assert not params["head.weight"][layout.slice(j)].any()
    off = activations_to_decoders(features, labels, cs, settings=settings.model_copy(
        update={"select_linear": False}), model_sha256="m", pooling="avg")
    assert {m["decoder"] for m in off.decoders["layer0"].metrics.values()} == {"mlp"}


def test_probe_reaches_sklearns_objective():
    """The batched L-BFGS minimises LogisticRegression()'s objective (binary, multiclass)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from audit.decode._fit import Targets
    from audit.decode._lbfgs import fit_probes
    from audit.decode.model import HeadLayout, concept_probabilities, forward_logits

    features, labels, cs = planted_activations(500, n_layers=2, dim=10, seed=2)
    codes = encode_labels(labels, cs)
    layout = HeadLayout.from_concepts(cs)
    xs = [(x - x.mean(0)) / x.std(0) for x in features.values()]
    train = np.arange(400)
    probes = fit_probes([torch.from_numpy(x) for x in xs],
                        Targets(torch.as_tensor(np.stack([codes] * 2)), torch.ones(2, 500, 4)),
                        train, layout, max_iter=200)

    def objective(prob, y, w):
        return -np.mean(np.log(prob[np.arange(len(y)), y])) + 0.5 * np.sum(w ** 2) / len(y)

    for x, probe in zip(xs, probes, strict=True):
        z = forward_logits(probe, x[train])
        for j, c in enumerate(cs.concepts):
            y = codes[train, j]
            clf = LogisticRegression(max_iter=1000, tol=1e-8).fit(x[train], y)
            ours = objective(concept_probabilities(z[:, layout.slice(j)], c.kind), y,
                             probe["head.weight"][layout.slice(j)])
            theirs = objective(clf.predict_proba(x[train]), y, clf.coef_)
            assert ours == pytest.approx(theirs, abs=1e-4), c.name


def test_probe_batch_leaves_converged_problems_alone():
    """Problems leave the batch as they converge: a batched fit equals each problem fitted
    on its own, and problems not ``wanted`` keep their starting point."""
    import torch

    from audit.decode._fit import Targets
    from audit.decode._lbfgs import fit_probes
    from audit.decode.model import HeadLayout, concept_probabilities

    features, labels, cs = planted_activations(400, n_layers=3, dim=12, seed=4)
    codes = encode_labels(labels, cs)
    layout = HeadLayout.from_concepts(cs)
    xs = [torch.from_numpy((x - x.mean(0)) / x.std(0)) for x in features.values()]
    widths = [6, 12, 9]                                      # members of different widths
    xs = [x[:, :w].contiguous() for x, w in zip(xs, widths, strict=True)]
    train = np.arange(300)

    def targets(m):
        return Targets(torch.as_tensor(np.stack([codes] * m)), torch.ones(m, 400, 4))

    wanted = np.array([[True, True, True, True], [False, True, True, False],
                       [True, False, False, False]])
    init = [{"head.weight": np.full((layout.width, w), 0.01, dtype=np.float32),
             "head.bias": np.zeros(layout.width, dtype=np.float32)} for w in widths]
    def objective(p, x, j):
        """LogisticRegression()'s objective of concept j's rows ``p`` (float64)."""
        z = x[train].double().numpy() @ p["head.weight"].T.astype(np.float64) + p["head.bias"]
        y = codes[train, j]
        prob = concept_probabilities(z, cs.concepts[j].kind)
        return (-np.mean(np.log(prob[np.arange(len(y)), y]))
                + 0.5 * np.sum(p["head.weight"].astype(np.float64) ** 2) / len(y))

    batched = fit_probes(xs, targets(3), train, layout, tol=1e-6, max_iter=300,
                         wanted=wanted, init=init)
    for i, x in enumerate(xs):
        for j in range(len(cs.names)):
            rows = layout.slice(j)
            got = {k: v[rows] for k, v in batched[i].items()}
            if not wanted[i, j]:
                for k in got:
                    np.testing.assert_array_equal(got[k], init[i][k][rows])
                continue
            alone = np.zeros((1, 4), dtype=bool)
            alone[0, j] = True
            (solo,) = fit_probes([x], targets(1), train, layout, tol=1e-6, max_iter=300,
                                 wanted=alone, init=[init[i]])
            solo = {k: v[rows] for k, v in solo.items()}
            # The same optimum, to float32's resolution of the objective (about 1e-7
            # here; float32 iterates part ways in flat directions).
            assert objective(got, x, j) == pytest.approx(objective(solo, x, j), abs=1e-6)
            for k in got:
                np.testing.assert_allclose(got[k], solo[k], atol=5e-3)


def test_adamw_select_continues_like_the_full_optimiser():
    """Members leaving the batch: the smaller torch.optim.AdamW carries on exactly as the
    full one would on the members kept (moments and step counts sliced, not reset)."""
    import torch

    from audit.decode._fit import _adamw_select

    g = torch.Generator().manual_seed(0)
    full = [torch.randn(3, 4, 2, generator=g), torch.randn(3, 5, 1, generator=g)]
    opt = torch.optim.AdamW(full, lr=0.1, weight_decay=0.01, fused=True)
    target = [torch.randn(p.shape, generator=g) for p in full]

    def step(o, params, tgt):
        for p, t in zip(params, tgt, strict=True):
            p.grad = 2 * (p - t)
        o.step()

    for _ in range(3):
        step(opt, full, target)
    keep = torch.tensor([True, False, True])
    small = [p[keep].clone() for p in full]
    opt_small = _adamw_select(opt, small, keep)
    for lr in (0.05, 0.02):
        for o in (opt, opt_small):
            o.param_groups[0]["lr"] = lr
        step(opt, full, target)
        step(opt_small, small, [t[keep] for t in target])
    for p, q in zip(full, small, strict=True):
        torch.testing.assert_close(p[keep], q)


@pytest.mark.parametrize(("hidden", "skip", "dropout"), [
    ([8], True, 0.0), ([8, 6], False, 0.3), ([], False, 0.0), ([5], False, 0.0)])
def test_hand_written_backward_matches_autograd(hidden, skip, dropout):
    """The stacked MLPs' written-out gradients (and the loss's closed-form gradient) equal
    autograd's on the same network, loss and dropout masks, with members of different
    input widths (zero-padded) and missing labels."""
    import torch

    from audit.decode._fit import Targets, _concept_losses, _init_stack, _Labels, _padded
    from audit.decode.model import HeadLayout
    from audit.validation.decoders import planted_concept_set

    layout = HeadLayout.from_concepts(planted_concept_set())      # binary and multiclass
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(20, d, generator=g) for d in (7, 4, 7)]
    net = _init_stack([7, 4, 7], layout, hidden, skip, g)
    for p in net.params:                  # make every weight matter (skip starts at 0)
        p.add_(0.1 * torch.randn(p.shape, generator=g))
    codes = torch.randint(0, 2, (3, 20, 4), generator=g)
    codes[:, :, 2] = torch.randint(0, 4, (3, 20), generator=g)
    codes[0, :5, 1] = -1
    codes[2, 3, 2] = -1
    t = _Labels.of(Targets(codes, (codes >= 0).float() * torch.rand(3, 20, 4, generator=g)),
                   net.order).batch()
    offset = torch.randn(3, layout.width, 20, generator=g)
    x = _padded(xs)
    z, cache = net.forward(x, offset, dropout=dropout, gen=torch.Generator().manual_seed(1),
                           keep=True)
    loss, dz = _concept_losses(z, t, net.order, grad=True)
    ours = net.backward(cache, dz)

    leaves = [p.clone().requires_grad_() for p in net.params]
    ref = type(net)(leaves[0], leaves[1:], net.h0, net.skip, net.fan_in, net.order)
    with torch.enable_grad():
        z_ref = ref.forward(x, offset, dropout=dropout, gen=torch.Generator().manual_seed(1))
        loss_ref = _concept_losses(z_ref, t, net.order)
        expected = torch.autograd.grad(loss_ref.sum(), leaves)
    torch.testing.assert_close(loss, loss_ref.detach())
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert float(ours[0][1, :, 4:].abs().sum()) == 0.0    # padded inputs get no gradient
    # Exported (layout order, out x in) weights give the network's logits, without torch.
    from audit.decode.model import forward_logits

    z0 = net.forward(x)
    for i, xi in enumerate(xs):
        np.testing.assert_allclose(forward_logits(net.export(i), xi.numpy()),
                                   z0[i][list(net.order.inverse_rows)].T.numpy(),
                                   rtol=1e-5, atol=1e-6)


def test_discriminator_like_store():
    from audit.validation.decoders import discriminator_like_activations

    features, labels, cs = discriminator_like_activations(300, widths=(8, 16, 32), seed=1)
    assert [x.shape for x in features.values()] == [(300, 8), (300, 16), (300, 32)]
    scales = [float(np.abs(x).mean()) for x in features.values()]
    assert scales[0] < scales[1] < scales[2] and scales[2] > 20 * scales[0]
    assert list(labels.columns) == ["image_id", *cs.names]


def test_residual_mlp_export_never_worse_than_its_probe_on_validation():
    """With the probe as a fixed linear path and the hidden layers on principal
    components (folded into trunk.0.weight on export), the exported decoder's validation
    loss is at most the probe's: early stopping starts from the probe (epoch 0)."""
    import torch

    from audit.decode._fit import Targets, fit_mlps, logits, principal_bases
    from audit.decode._lbfgs import designs, fit_probes, gram_matrices
    from audit.decode.model import HeadLayout

    features, labels, cs = planted_activations(600, n_layers=2, dim=24, seed=5)
    codes = encode_labels(labels, cs)
    layout = HeadLayout.from_concepts(cs)
    train, val = np.arange(360), np.arange(360, 480)
    xs = [torch.from_numpy((x - x[train].mean(0)) / x[train].std(0)) for x in features.values()]
    t = Targets(torch.as_tensor(np.stack([codes] * 2)), torch.ones(2, 600, 4))
    probes = fit_probes(xs, t, train, layout)
    bases = principal_bases(gram_matrices(designs(xs, train)), 8, seed=0)
    assert all(b.shape == (24, 8) for b in bases)
    settings = fast(max_epochs=15, patience=15, batch_size=64)
    weights, epochs, _ = fit_mlps(xs, t, train, val, layout, settings, init=probes, bases=bases)
    assert max(epochs) > 0
    for i, (x, w, p) in enumerate(zip(xs, weights, probes, strict=True)):
        assert w["trunk.0.weight"].shape == (32, 24)
        np.testing.assert_array_equal(w["skip.weight"], p["head.weight"])

        def val_loss(params, i=i, x=x):
            z = torch.from_numpy(logits(params, x[val].numpy()))[None]
            return float(_member_losses(z, t.codes[i:i + 1, val], t.weights[i:i + 1, val],
                                        layout))
        assert val_loss(w) <= val_loss(p) + 1e-5
        if epochs[i] > 0:
            assert val_loss(w) < val_loss(p)


def test_principal_bases_span_the_top_components():
    import torch

    from audit.decode._fit import principal_bases
    from audit.decode._lbfgs import designs, gram_matrices

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 30)) * np.geomspace(10, 0.1, 30)
    x = torch.from_numpy(((x - x.mean(0)) @ np.linalg.qr(rng.standard_normal((30, 30)))[0])
                         .astype(np.float32))
    (basis,) = principal_bases(gram_matrices(designs([x], np.arange(500))), 5, seed=1)
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-5)
    top = np.linalg.eigh((x.T @ x).double().numpy())[1][:, -5:]
    captured = np.linalg.norm(basis.double().numpy().T @ top, axis=0)
    np.testing.assert_allclose(captured, 1.0, atol=1e-4)
    assert principal_bases(gram_matrices(designs([x], np.arange(500))), 30) == [None]


def test_training_curves_are_recorded_and_saved(tmp_path) -> None:
    """Each layer keeps its per-epoch train and validation loss, and they survive a reload."""
    from audit.decode import load_decoders, save_decoders

    features, labels, concept_set = planted_activations(300, n_layers=2, dim=16, seed=1)
    bundle = activations_to_decoders(features, labels, concept_set,
                                     settings=DecoderSettings(max_epochs=4, patience=10),
                                     model_sha256="m", pooling="avg")
    for dec in bundle.decoders.values():
        hist = dec.history
        assert hist["epoch"][-1] >= 1 and len(hist["val_loss"]) == len(hist["epoch"])
        assert all(v > 0 for v in hist["val_loss"])
        assert dec.epochs in hist["epoch"]  # the kept epoch is one of the recorded ones
        assert min(hist["val_loss"]) == hist["val_loss"][hist["epoch"].index(dec.epochs)]
    save_decoders(bundle, tmp_path / "d")
    again = load_decoders(tmp_path / "d")
    layer = next(iter(bundle.decoders))
    assert again.decoders[layer].history["epoch"] == bundle.decoders[layer].history["epoch"]


def test_selectivity_is_not_fooled_by_an_imbalanced_concept() -> None:
    """A rare but well-decoded group: plain-accuracy selectivity is near zero (the control
    guesses the majority), balanced selectivity sees the decoder."""
    rng = np.random.default_rng(3)
    n = 1500
    rare = rng.random(n) < 0.06
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[:, 0] += np.where(rare, 4.0, 0.0)
    import pandas as pd

    from audit.concepts import ConceptSet

    cs = ConceptSet.model_validate({"name": "imb", "concepts": [
        {"name": "bald", "kind": "binary", "groups": ["no", "yes"], "protected": True,
         "source": {"type": "column", "column": "bald"}}]})
    labels = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)],
                           "bald": np.where(rare, "yes", "no")})
    bundle = activations_to_decoders({"l": x}, labels, cs, model_sha256="m", pooling="avg",
                                     settings=DecoderSettings(max_epochs=4))
    v = bundle.validity["concepts"]["bald"]
    assert v["selectivity_accuracy"] < 0.1  # the majority guess is already ~94% accurate
    assert v["selectivity"] > 0.2 and v["decodable"] is True


def test_group_by_keeps_variants_of_one_image_in_one_split() -> None:
    from audit.decode.split import grouped_split
    from audit.ids import id_groups

    ids = [f"img-{k:03d}-{tone}" for k in range(60) for tone in ("light", "dark")]
    groups = id_groups(ids, r"^(img-\d+)-")
    assert len(set(groups.tolist())) == 60
    codes = np.array([[k % 2] for k in range(len(ids))])
    split, info = grouped_split(codes, [0], (0.6, 0.2, 0.2), seed=0, groups=groups)
    assert info["grouped"] and info["n_groups"] == 60
    for g in range(60):  # both variants of an image share their split
        assert len(set(split[groups == g].tolist())) == 1
    assert set(split.tolist()) == {0, 1, 2}
    assert id_groups(ids, None) is None


def test_a_bad_group_by_pattern_is_a_config_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a valid regular expression"):
        DecoderSettings(group_by="(unclosed")
    from audit.config import config_from_dict
    from audit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"decoders.group_by: not a valid regular expression"):
        config_from_dict({"discriminator": {"spec": "builtin:digits-dcgan"},
                          "generator": {"spec": "builtin:digits-dcgan"},
                          "paired": {"source": "builtin:digits-paired"},
                          "real": {"source": "builtin:digits-audit"},
                          "decoders": {"group_by": "(unclosed"}}, source="audit.yaml")


def test_joint_confusion_of_each_intersection_on_fully_labelled_test_images() -> None:
    features, labels, cs = planted_activations(600, n_layers=2, dim=16, seed=3,
                                               noise=(1.5, 0.3), missing=0.2)
    b = activations_to_decoders(features, labels, cs, settings=fast(), model_sha256="m",
                                pooling="avg")
    entry = b.validity["intersections"]["tone+stroke"]
    assert entry["concepts"] == ["tone", "stroke"]
    assert entry["groups"] == ["light+thin", "light+thick", "dark+thin", "dark+thick"]
    conf = np.array(entry["confusion"])
    test = labels["image_id"].isin(b.splits["test"]).to_numpy()
    both = test & labels["tone"].notna().to_numpy() & labels["stroke"].notna().to_numpy()
    assert 0 < both.sum() < labels[test][["tone", "stroke"]].notna().any(axis=1).sum()
    assert conf.sum() == entry["n_test"] == both.sum()
    # Marginals: each concept's confusion on the same images, recounted from the decoded
    # table (each concept at its chosen layer, the same decision rule).
    pred = decode(b, features, model_sha256="m", pooling="avg")
    joint = conf.reshape(2, 2, 2, 2)               # true tone, true stroke, decoded tone, stroke
    for name, axes in (("tone", (1, 3)), ("stroke", (0, 2))):
        groups = list(cs.concept(name).groups)
        y = pd.Categorical(labels[name], categories=groups).codes
        d = pd.Categorical(pred[f"pred__{name}"], categories=groups).codes
        assert np.array_equal(joint.sum(axis=axes),
                              confusion_matrix(y[both], d[both], labels=[0, 1]))
        known = test & (y >= 0)
        assert b.validity["concepts"][name]["confusion"] == \
            confusion_matrix(y[known], d[known], labels=[0, 1]).tolist()


def test_successive_halving_keeps_each_concepts_leaders():
    """After prune_after epochs, a layer trains on only if it is among the prune_keep best of
    some concept (ties to the later layer) or is kept (a fixed layer, a control member)."""
    import torch

    from audit.decode._fit import _leading

    losses = torch.tensor([[1.0, 2.0], [1.0, 0.5], [3.0, 0.5], [4.0, 9.0]])
    assert _leading(losses, 1, []).tolist() == [False, True, True, False]
    assert _leading(losses, 2, []).tolist() == [True, True, True, False]
    assert _leading(losses, 1, [3]).tolist() == [False, True, True, True]
