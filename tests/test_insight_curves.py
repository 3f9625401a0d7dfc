"""Decoder curves from the decoders folder's metadata; TensorBoard only with the extra."""

from __future__ import annotations

import importlib.util
import json

import pytest

from audit.errors import DependencyError
from audit.insight.curves import (
    TENSORBOARD_HINT,
    curves_to_tensorboard,
    decoder_curves,
    metadata_to_curves,
)

HAS_TB = importlib.util.find_spec("tensorboard") is not None

SWEEP = {"layers": ["a", "b"], "metric": "macro_auroc",
         "scores": {"tone": {"a": 0.9, "b": 0.99}}, "accuracy": {"tone": {"a": 0.8, "b": 0.95}},
         "files": {"a": "a", "b": "b"}}
META = {"a": {"epochs": 4, "settings": {"max_epochs": 12},
              "history": {"epoch": [1, 2, 3], "val_loss": [0.9, 0.5, 0.4],
                          "train_loss": [1.0, 0.6, 0.3]}},
        "b": {"epochs": 12, "settings": {"max_epochs": 12}}}


def test_curves_from_metadata():
    c = metadata_to_curves(META, SWEEP)
    assert c.layers == ["a", "b"] and c.best_epoch == {"a": 4, "b": 12} and c.max_epochs == 12
    assert {x.tag: x.values for x in c.history} == {"a/val_loss": [0.9, 0.5, 0.4],
                                                    "a/train_loss": [1.0, 0.6, 0.3]}
    assert {x.tag: x.values for x in c.sweep} == {"sweep_accuracy/tone": [0.8, 0.95],
                                                  "sweep_macro_auroc/tone": [0.9, 0.99]}
    tags = [x.tag for x in c.curves]
    assert "decoder/best_epoch" in tags and c.to_json()["has_history"]
    no_history = metadata_to_curves({k: {**v, "history": None} for k, v in META.items()}, SWEEP)
    assert no_history.history == [] and not no_history.to_json()["has_history"]


def test_reads_a_decoders_folder(tmp_path):
    (tmp_path / "layers.json").write_text(json.dumps(SWEEP))
    for layer, meta in META.items():
        (tmp_path / f"{layer}.json").write_text(json.dumps(meta))
    assert decoder_curves(tmp_path).best_epoch == {"a": 4, "b": 12}


@pytest.mark.skipif(HAS_TB, reason="tensorboard is installed: the missing-extra message "
                                   "cannot be shown")
def test_tensorboard_missing_fails_clearly(tmp_path):
    with pytest.raises(DependencyError) as err:
        curves_to_tensorboard(metadata_to_curves(META, SWEEP), tmp_path / "tb")
    assert TENSORBOARD_HINT in str(err.value) and "pip install 'gan-audit[tensorboard]'" in str(
        err.value)
    assert not (tmp_path / "tb").exists()


@pytest.mark.skipif(not HAS_TB, reason="tensorboard is not installed (optional extra "
                                       "gan-audit[tensorboard]); event files cannot be written")
def test_tensorboard_writes_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = curves_to_tensorboard(metadata_to_curves(META, SWEEP), tmp_path / "tb")
    assert files and all(f.name.startswith("events.out.tfevents.") for f in files)
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    assert [e.value for e in acc.Scalars("a/val_loss")] == pytest.approx([0.9, 0.5, 0.4])


def test_cli_insight_tensorboard_without_the_extra(tmp_path):
    from click.testing import CliRunner

    from audit.cli import cli
    from audit.runfolder import claim

    if HAS_TB:
        pytest.skip("tensorboard is installed")
    with claim(tmp_path):  # a run folder (empty): the missing extra is what is refused
        pass
    result = CliRunner().invoke(cli, ["insight", str(tmp_path), "--tensorboard",
                                      str(tmp_path / "tb")])
    assert result.exit_code == 2
    assert "pip install 'gan-audit[tensorboard]'" in result.output
    assert "Traceback" not in result.output
