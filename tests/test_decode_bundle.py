"""Decoding, refusals, file formats and persistence of trained decoders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audit.config import DecoderSettings
from audit.decode import activations_to_decoders, decode, load_decoders, save_decoders
from audit.errors import DataError, RunFolderError
from audit.validation.decoders import planted_activations

SHA = "a" * 64


@pytest.fixture(scope="module")
def planted():
    return planted_activations(500, n_layers=2, dim=12, seed=3, missing=0.05)


@pytest.fixture(scope="module")
def bundle(planted):
    features, labels, cs = planted
    settings = DecoderSettings(hidden=[16], lr=1e-2, max_epochs=60, patience=10)
    return activations_to_decoders(features, labels, cs, settings=settings, model_sha256=SHA,
                                   pooling="avg")


def test_predict_columns_and_heads(planted, bundle):
    features, _, cs = planted
    table = bundle.predict(features, model_sha256=SHA, pooling="avg")
    assert len(table) == 500
    for c in cs.concepts:
        probs = table[[f"prob__{c.name}__{g}" for g in c.groups]].to_numpy()
        assert probs.shape[1] == (2 if c.kind == "binary" else 4)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
        pred = table[f"pred__{c.name}"].to_numpy()
        if c.kind == "binary":       # positive group where p >= 0.5
            expected = np.where(probs[:, 1] >= 0.5, c.groups[1], c.groups[0])
        else:
            expected = np.asarray(c.groups)[probs.argmax(axis=1)]
        assert (pred == expected).all()
    strict = bundle.predict(features, model_sha256=SHA, pooling="avg", threshold=0.99)
    assert (strict["pred__tone"] == "dark").sum() < (table["pred__tone"] == "dark").sum()


def test_decode_adds_ids_and_scores(planted, bundle):
    features, labels, _ = planted
    scores = np.linspace(-1, 1, 500)
    out = decode(bundle, features, scores, model_sha256=SHA, pooling="avg",
                 image_ids=labels["image_id"].tolist())
    assert list(out.columns[:2]) == ["image_id", "score"]
    np.testing.assert_array_equal(out["score"], scores)
    with pytest.raises(DataError, match="3 score values for 500 images"):
        decode(bundle, features, scores[:3], model_sha256=SHA, pooling="avg")


def test_probabilities_use_each_concepts_chosen_layer(planted, bundle):
    features, _, _ = planted
    probs = bundle.probabilities(features, model_sha256=SHA, pooling="avg")
    for c, layer in bundle.best.items():
        dec = bundle.decoders[layer]
        from audit.decode.model import logits_to_probabilities

        direct = logits_to_probabilities(dec.logits(features[layer]), bundle.layout,
                                         dec.temperatures)[c]
        np.testing.assert_array_equal(probs[c], direct)
    # Only the chosen layers are needed.
    needed = {layer: features[layer] for layer in set(bundle.best.values())}
    bundle.predict(needed, model_sha256=SHA, pooling="avg")


def test_refuses_other_model_layer_and_pooling(planted, bundle):
    features, _, _ = planted
    with pytest.raises(DataError, match=r"another model: the decoders were trained on the "
                                        r"discriminator with sha256 aaaaaaaaaaaaaaaa\.\.\., the "
                                        r"activations are from bbbbbbbbbbbbbbbb"):
        bundle.predict(features, model_sha256="b" * 64, pooling="avg")
    with pytest.raises(DataError, match=r"another pooling: the decoders were trained on 'avg' "
                                        r"pooled activations, these are 'avgmax' pooled"):
        bundle.predict(features, model_sha256=SHA, pooling="avgmax")
    layer = bundle.best["tone"]
    with pytest.raises(DataError, match=rf"no layer '{layer}', which the decoder\(s\) of "
                                        r"\[.*'tone'.*\] read"):
        bundle.predict({k: v for k, v in features.items() if k != layer}, model_sha256=SHA,
                       pooling="avg")
    swapped = dict(features)
    swapped[layer] = np.zeros((500, 7), np.float32)
    with pytest.raises(DataError, match=rf"layer '{layer}': the activations have shape "
                                        r"\(500, 7\) but its decoder expects N x 12 features; "
                                        r"they come from another layer or pooling"):
        bundle.predict(swapped, model_sha256=SHA, pooling="avg")


def test_validity_and_layers_follow_the_contract(planted, bundle, tmp_path):
    _, labels, cs = planted
    save_decoders(bundle, tmp_path)
    validity = json.loads((tmp_path / "validity.json").read_text())
    assert validity["concept_set"] == {"name": cs.name, "sha256": cs.sha256}
    assert validity["model_sha256"] == SHA
    assert list(validity["concepts"]) == cs.names
    keys = {"layer", "groups", "n_test", "confusion", "accuracy", "balanced_accuracy", "auroc",
            "ece", "probe_accuracy", "control_accuracy", "selectivity", "decodable",
            "group_accuracy"}
    n_test = len(bundle.splits["test"])
    for c in cs.concepts:
        v = validity["concepts"][c.name]
        assert keys <= set(v)
        assert v["groups"] == list(c.groups) and v["layer"] == bundle.best[c.name]
        confusion = np.asarray(v["confusion"])
        assert confusion.shape == (len(c.groups),) * 2 and confusion.dtype.kind == "i"
        known = labels.set_index("image_id").loc[bundle.splits["test"], c.name].notna().sum()
        assert confusion.sum() == v["n_test"] == known <= n_test
        assert v["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
        assert v["selectivity"] == pytest.approx(v["balanced_accuracy"]
                                                 - v["control_balanced_accuracy"])
        assert v["selectivity_accuracy"] == pytest.approx(v["accuracy"] - v["control_accuracy"])
        assert v["decodable"] == (v["selectivity"] >= bundle.settings.min_selectivity)
        assert set(v["group_accuracy"]) == {"tone", "stroke"}
        assert list(v["group_accuracy"]["tone"]) == ["light", "dark"]
    layers = json.loads((tmp_path / "layers.json").read_text())
    assert layers["layers"] == ["layer0", "layer1"] and layers["metric"] == "macro_auroc"
    for c in cs.names:
        assert set(layers["scores"][c]) == set(layers["accuracy"][c]) == {"layer0", "layer1"}
        # The layer is chosen on the validation split (ties to the later layer), not on test.
        assert layers["chosen_on"] == "validation"
        val = layers["val_scores"][c]
        assert set(val) == {"layer0", "layer1"}
        assert val[layers["best"][c]] == max(val.values())
        assert set(layers["decoder"][c].values()) <= {"mlp", "linear"}
    splits = json.loads((tmp_path / "splits.json").read_text())
    ids = splits["train"] + splits["val"] + splits["test"]
    assert sorted(ids) == sorted(labels["image_id"]) and len(set(ids)) == len(ids)
    meta = json.loads((tmp_path / "layer0.json").read_text())
    for key in ("layer", "pooling", "concept_set", "mean", "std", "temperatures", "hidden",
                "settings", "metrics", "model_sha256"):
        assert key in meta
    assert meta["concept_set"]["sha256"] == cs.sha256 and len(meta["mean"]) == 12


def test_save_load_gives_identical_probabilities(planted, bundle, tmp_path):
    features, _, _ = planted
    save_decoders(bundle, tmp_path / "decoders")
    loaded = load_decoders(tmp_path / "decoders")
    assert loaded.best == bundle.best and loaded.layers == bundle.layers
    assert loaded.concept_set == bundle.concept_set and loaded.settings == bundle.settings
    a = bundle.predict(features, model_sha256=SHA, pooling="avg")
    b = loaded.predict(features, model_sha256=SHA, pooling="avg")
    assert a.equals(b)
    with pytest.raises(DataError, match="another pooling"):
        loaded.predict(features, model_sha256=SHA, pooling="grid2")


def test_layer_names_with_separators(planted, tmp_path):
    features, labels, cs = planted
    named = {"blocks/0.conv": features["layer0"], "blocks/1.conv": features["layer1"]}
    b = activations_to_decoders(named, labels, cs, settings=DecoderSettings(
        hidden=[8], max_epochs=3), model_sha256=SHA, pooling="avg")
    save_decoders(b, tmp_path)
    assert (tmp_path / "blocks_0.conv.safetensors").is_file()
    assert load_decoders(tmp_path).layers == ("blocks/0.conv", "blocks/1.conv")


def test_loading_never_unpickles_and_reports_bad_files(bundle, tmp_path):
    save_decoders(bundle, tmp_path)
    # Only safetensors and JSON are written.
    assert {p.suffix for p in tmp_path.iterdir()} == {".json", ".safetensors"}
    (tmp_path / "layer1.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RunFolderError, match=r"layer1\.safetensors: not a readable safetensors "
                                             r"file .*Train the decoders again"):
        load_decoders(tmp_path)
    (tmp_path / "layer1.safetensors").unlink()
    with pytest.raises(RunFolderError, match=r"layer1\.safetensors: missing"):
        load_decoders(tmp_path)
    (tmp_path / "validity.json").write_text("{not json")
    with pytest.raises(RunFolderError, match=r"validity\.json: not readable JSON"):
        load_decoders(tmp_path)
    with pytest.raises(RunFolderError, match="no decoders folder here"):
        load_decoders(tmp_path / "nowhere")
    save_decoders(bundle, tmp_path)
    meta = json.loads((tmp_path / "layer0.json").read_text())
    del meta["temperatures"]
    (tmp_path / "layer0.json").write_text(json.dumps(meta))
    with pytest.raises(RunFolderError, match=r"layer0\.json: missing or malformed field"):
        load_decoders(tmp_path)
