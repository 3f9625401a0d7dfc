"""`gan-audit train-decoders` on a run folder with a hand-made paired store."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml
from click.testing import CliRunner

from audit.cli import cli
from audit.decode import load_decoders
from audit.validation.decoders import planted_activations


def _store(path, features, labels, *, with_labels=True):
    from audit.store import ActivationStore, StoreSettings

    n = len(labels)
    settings = StoreSettings(model_sha256="d" * 64, layers=tuple(features), pooling="avg",
                             max_dim=4096, batch_size=n, shard_size=n, n_images=n,
                             source_fingerprint="synthetic")
    store = ActivationStore.create_or_resume(path, settings)
    store.write_shard(0, image_ids=labels["image_id"].tolist(),
                      activations={k: v.astype(np.float16) for k, v in features.items()},
                      scores=np.zeros(n, np.float32))
    store = store.finalize()
    if with_labels:
        store.write_labels(labels)
    return store


def test_train_decoders_command(tmp_path):
    features, labels, cs = planted_activations(300, n_layers=2, dim=8, seed=0)
    run = tmp_path / "run"
    from audit.runfolder import claim

    with claim(run):  # the folder `gan-audit extract` made
        pass
    _store(run / "activations" / "paired", features, labels.iloc[::-1])
    # The command also decodes the audited stores into predictions.parquet.
    tail = {k: v[-40:] for k, v in features.items()}
    _store(run / "activations" / "real", tail,
           labels.iloc[-40:].assign(image_id=[f"real-{i}" for i in range(40)]))
    _store(run / "activations" / "generated", tail,
           labels.iloc[-40:].assign(image_id=[f"gen-0-{i}" for i in range(40)]),
           with_labels=False)
    concept_file = tmp_path / "planted.yaml"
    concept_file.write_text(yaml.safe_dump(cs.model_dump(mode="json")))
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump({
        "concept_set": str(concept_file),
        "discriminator": {"spec": "builtin:digits-dcgan"},
        "generator": {"spec": "builtin:digits-dcgan"},
        "paired": {"source": "builtin:digits"}, "real": {"source": "builtin:digits"},
        "decoders": {"hidden": [8], "max_epochs": 20, "lr": 0.01},
        "out": str(run)}))
    result = CliRunner().invoke(cli, ["train-decoders", str(config)])
    assert result.exit_code == 0, result.output
    assert "tone: layer layer" in result.output and "selectivity" in result.output
    bundle = load_decoders(run / "decoders")
    assert bundle.model_sha256 == "d" * 64 and bundle.pooling == "avg"
    validity = json.loads((run / "decoders" / "validity.json").read_text())
    assert set(validity["concepts"]) == set(cs.names)
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert predictions["split"].value_counts().to_dict() == {
        **{part: len(bundle.splits[part]) for part in ("train", "val", "test")}, "audit": 80}
    assert set(predictions.loc[predictions["split"] == "audit", "source"]) == {
        "real", "generated"}


def test_train_decoders_without_store(tmp_path):
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump({
        "discriminator": {"spec": "builtin:digits-dcgan"},
        "generator": {"spec": "builtin:digits-dcgan"},
        "paired": {"source": "builtin:digits"}, "real": {"source": "builtin:digits"},
        "out": str(tmp_path / "run")}))
    result = CliRunner().invoke(cli, ["train-decoders", str(config)])
    assert result.exit_code == 2
    assert "not a folder. Run `gan-audit extract CONFIG.yaml` first" in result.output
