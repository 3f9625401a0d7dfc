"""Every user mistake of issue 9, through the CLI: exit code, one clear message, nothing
half-written (tests/test_config.py, test_concepts.py, test_load.py, test_images.py, ... pin
the wording of each message at its source; here each case runs end to end).

A case builds its inputs in ``tmp_path`` and returns the command line; the table says the
exit code and the message fragments expected. After every case: no traceback, no temporary
file left, files that existed before are unchanged (the manifest aside), no new results or
report after a failure, and every stage the manifest marks done has its outputs.

The shared run folders are built once per session (:func:`shared_run`) and copied per case;
tests/test_faults.py and tests/test_untrusted.py use them too.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_pipeline import TINY

from audit.cli import cli

# The outputs of each stage (the pipeline's), for "a stage marked done has its outputs".
STAGE_OUTPUTS = {"extract": ["activations"], "decoders": ["decoders"],
                 "decode": ["predictions.parquet"], "samples": ["samples"],
                 "measure": ["results.json"], "insight": ["insight"], "report": ["report.html"]}
FINAL = ("results.json", "report.html", "report.pdf", "predictions.parquet")
# TINY with the demo's trained weights: a rerun loads the same models (TINY's random-weight
# models differ on every load), so an interrupted run can resume and match one that was not.
FIXED = {**TINY, "discriminator": {**TINY["discriminator"], "spec": "builtin:digits-dcgan"},
         "generator": {**TINY["generator"], "spec": "builtin:digits-dcgan"}}

# A discriminator that misbehaves on some images, chosen by a hash of their pixels: a NaN
# score (activations fine) for about 1 in 13, infinite activations from the first block on
# (so every recorded layer and the score) for about 1 in 17.
MISBEHAVING = '''
import torch

from audit.demo.models import DigitsDiscriminator


def _pick(x, k):
    return (x.flatten(1).sum(1) * 1000).round().long() % k == 0


class Misbehaving(DigitsDiscriminator):
    def __init__(self):
        torch.manual_seed(0)
        super().__init__()

    def forward(self, x):
        h = self.blocks[0](x)
        h = torch.where(_pick(x, 17)[:, None, None, None], torch.full_like(h, float("inf")), h)
        out = self.head(self.blocks[1:](h))
        return torch.where(_pick(x, 13)[:, None], torch.full_like(out, float("nan")), out)
'''
# A skipped image whose file name is markup: the report must show it as text.
HOSTILE_NAME = "<b onmouseover=alert(1)>x.png"


# ---------------------------------------------------------------- shared run folders


def write_config(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def digit_pngs(folder: Path, *, n: int, source: str = "digits-audit",
               size: int | None = None) -> dict[str, dict[str, str]]:
    """``n`` demo digits as grey PNGs (``img-000.png`` ...); returns their labels by name."""
    from PIL import Image

    from audit.demo.data import builtin_source

    folder.mkdir(parents=True, exist_ok=True)
    images, table = builtin_source(source, n=n, seed=0)
    labels = {}
    for i, (image, row) in enumerate(zip(images, table.itertuples(), strict=True)):
        arr = ((image[0].numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        picture = Image.fromarray(arr)
        if size is not None:
            picture = picture.resize((size, size))
        name = f"img-{i:03d}.png"
        picture.save(folder / name)
        labels[name] = {"digit": str(row.digit), "tone": row.tone, "stroke": row.stroke}
    return labels


def write_labels(path: Path, labels: dict[str, dict[str, str]]) -> Path:
    lines = ["image,digit,tone,stroke"] + [f"{k},{v['digit']},{v['tone']},{v['stroke']}"
                                           for k, v in labels.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _dirty_config(root: Path) -> dict:
    """The tiny audit with a misbehaving discriminator and a real-image folder holding one
    unreadable file with a markup name (skipped, per on_bad_image: skip)."""
    real = root / "real_images"
    digit_pngs(real, n=60)
    (real / HOSTILE_NAME).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "misbehaving.py").write_text(MISBEHAVING, encoding="utf-8")
    return {**TINY, "name": "dirty",
            "discriminator": {**TINY["discriminator"],
                              "spec": f"python:{root / 'misbehaving.py'}:Misbehaving"},
            "generator": {**TINY["generator"], "n": 60},
            "real": {"source": f"folder:{real}", "on_bad_image": "skip"},
            "out": str(root / "run")}


def shared_run(factory: pytest.TempPathFactory, kind: str) -> Path:
    """A finished run folder, built once per test session: ``tiny`` (:data:`FIXED`) or
    ``dirty`` (:func:`_dirty_config`). Copy it before changing anything."""
    root = factory.getbasetemp() / f"shared-{kind}"
    out = root / "run"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        cfg = {**FIXED, "out": str(out)} if kind == "tiny" else _dirty_config(root)
        result = invoke("run", write_config(root / "audit.yaml", cfg))
        assert result.exit_code == 0, result.output
        (root / "done").write_text("")
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- checks after a case


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def temp_files(folder: Path) -> list[Path]:
    """Leftovers of atomic writes (``.<name>.<random>.tmp`` and the like)."""
    return [p for p in folder.rglob(".*") if p.is_file()]


def assert_consistent(folder: Path, before: dict[str, str], *, failed: bool) -> None:
    """Nothing half-written in ``folder`` after a command."""
    assert not temp_files(folder), temp_files(folder)
    after = snapshot(folder)
    # (a stage that reruns removes its stale outputs first: removal is not a change)
    changed = [k for k, v in before.items() if k in after and after[k] != v
               and k not in ("manifest.json", "config.yaml")]
    if failed:
        assert not changed, f"a failed command changed {changed}"
        assert not [k for k in FINAL if k in after and k not in before]
    manifest = folder / "manifest.json"
    if manifest.is_file():
        stages = json.loads(manifest.read_text())["stages"]
        for name, record in stages.items():
            if record.get("done"):
                assert all((folder / o).exists() for o in STAGE_OUTPUTS[name]), name


# ---------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One user mistake: ``make(tmp_path, shared)`` writes the inputs and returns the command
    line and the folder to check; ``code`` and ``fragments`` are what the user must see."""

    make: Callable[[Path, Callable[[str], Path]], tuple[list, Path]]
    code: int
    fragments: tuple[str, ...]
    after: Callable[[Path], None] | None = None  # further checks on the folder


def _run_with(**changes) -> Callable:
    """``gan-audit run`` on TINY with top-level sections replaced (None removes one)."""
    def make(tmp: Path, shared) -> tuple[list, Path]:
        cfg = {**TINY, "out": str(tmp / "run")}
        for key, value in changes.items():
            value = value(tmp) if callable(value) else value
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
        return ["run", write_config(tmp / "audit.yaml", cfg)], tmp / "run"
    return make


def _config_text(text: str) -> Callable:
    def make(tmp: Path, shared) -> tuple[list, Path]:
        (tmp / "audit.yaml").write_text(text, encoding="utf-8")
        return ["run", tmp / "audit.yaml"], tmp / "run"
    return make


def _concept_set(mutate: Callable[[dict], None]) -> Callable:
    def concept_set(tmp: Path) -> str:
        from audit.concepts import bundled_concept_sets

        data = yaml.safe_load(bundled_concept_sets()["digits_tone"].read_text())
        mutate(data)
        return str(write_config(tmp / "concepts.yaml", data))
    return _run_with(concept_set=concept_set)


def _dup_concept(data: dict) -> None:
    data["concepts"].append(dict(data["concepts"][1]))


def _bad_reference(data: dict) -> None:
    data["concepts"][1]["reference"] = "purple"


def _labelled_folder(*, edit_labels: Callable[[dict], None] | None = None,
                     extra: Callable[[Path], None] | None = None, n: int = 40,
                     size: int | None = None, **source) -> Callable:
    """``paired`` from a folder of PNGs with a labels CSV (optionally edited)."""
    def paired(tmp: Path) -> dict:
        labels = digit_pngs(tmp / "images", n=n, source="digits-paired", size=size)
        if extra is not None:
            extra(tmp / "images")
        if edit_labels is not None:
            edit_labels(labels)
        csv = write_labels(tmp / "labels.csv", labels)
        return {"source": f"folder:{tmp / 'images'}", "labels": str(csv), **source}
    return paired


def _unknown_value(labels: dict) -> None:
    labels["img-003.png"]["tone"] = "grey"


def _missing_row(labels: dict) -> None:
    del labels["img-007.png"]


def _truncated(folder: Path) -> None:
    data = (folder / "img-005.png").read_bytes()
    (folder / "img-005.png").write_bytes(data[:len(data) // 2])


def _empty_folder(tmp: Path) -> dict:
    (tmp / "empty").mkdir()
    (tmp / "empty" / "notes.txt").write_text("no images here")
    return {"source": f"folder:{tmp / 'empty'}"}


def _two_channel_npz(tmp: Path) -> dict:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 2, 32, 32), dtype=np.uint8)
    np.savez(tmp / "real.npz", images=images)
    return {"source": f"npz:{tmp / 'real.npz'}"}


def _discriminator(**changes) -> Callable:
    def section(tmp: Path) -> dict:
        d = {**TINY["discriminator"]}
        for key, value in changes.items():
            d[key] = value(tmp) if callable(value) else value
        return d
    return section


def _misbehaving(tmp: Path) -> str:
    (tmp / "misbehaving.py").write_text(MISBEHAVING, encoding="utf-8")
    return f"python:{tmp / 'misbehaving.py'}:Misbehaving"


def _misfit_weights(tmp: Path) -> str:
    import torch

    from audit.demo.models import DigitsDiscriminator

    state = DigitsDiscriminator().state_dict()
    state["head.1.bias_renamed"] = state.pop("head.1.bias")
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp / "weights.pt")
    return str(tmp / "weights.pt")


def _decoders_of_another_model(tmp: Path, shared) -> tuple[list, Path]:
    run = copy_run(shared("tiny"), tmp / "run")
    for path in (run / "decoders").glob("blocks.*.json"):
        meta = json.loads(path.read_text())
        meta["model_sha256"] = "0" * 64  # trained on another discriminator
        path.write_text(json.dumps(meta))
    digit_pngs(tmp / "new", n=3)
    return ["decode", run, tmp / "new"], run


def _old_format(tmp: Path, shared) -> tuple[list, Path]:
    run = copy_run(shared("tiny"), tmp / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["format"] = 99
    (run / "manifest.json").write_text(json.dumps(manifest))
    return ["run", write_config(tmp / "audit.yaml", {**FIXED, "out": str(run)})], run


def _out_is_a_file(tmp: Path, shared) -> tuple[list, Path]:
    (tmp / "taken").write_text("not a folder")
    return ["run", write_config(tmp / "audit.yaml", {**TINY, "out": str(tmp / "taken")})], tmp


def _out_not_writable(tmp: Path, shared) -> tuple[list, Path]:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod cannot make a folder unwritable")
    (tmp / "locked").mkdir()
    (tmp / "locked").chmod(0o500)
    cfg = {**TINY, "out": str(tmp / "locked" / "run")}
    return ["run", write_config(tmp / "audit.yaml", cfg)], tmp


def _disk_full(tmp: Path, shared) -> tuple[list, Path]:
    """Re-measure a finished run (new alpha) while the disk fills up on results.json."""
    run = copy_run(shared("tiny"), tmp / "run")
    cfg = {**FIXED, "out": str(run), "measure": {**FIXED["measure"], "alpha": 0.01}}
    return ["run", write_config(tmp / "audit.yaml", cfg)], run


def _dirty(tmp: Path, shared) -> tuple[list, Path]:
    """Re-run the dirty audit (every stage reused) and check its folder."""
    run = shared("dirty")
    return ["run", run.parent / "audit.yaml"], run


def _decoded_as(assign: dict[str, Callable]) -> Callable:
    """Re-measure a finished run whose audited images are decoded (and, for real images,
    labelled) as ``assign`` says: ``{concept: f(current groups) -> new groups}``
    (probabilities follow). numpy's division warnings are errors in these cases."""
    def make(tmp: Path, shared) -> tuple[list, Path]:
        import pandas as pd

        from audit.concepts import load_concept_set

        run = copy_run(shared("tiny"), tmp / "run")
        table = pd.read_parquet(run / "predictions.parquet")
        audited = table["split"] == "audit"
        concepts = {c.name: c for c in load_concept_set("digits_tone").concepts}
        for name, f in assign.items():
            new = f(table.loc[audited, f"pred__{name}"])
            table.loc[audited, f"pred__{name}"] = new
            known = audited & table[f"true__{name}"].notna()  # real images: the truth too
            table.loc[known, f"true__{name}"] = f(table.loc[known, f"true__{name}"])
            for g in concepts[name].groups:
                table.loc[audited, f"prob__{name}__{g}"] = (new == g).astype(float)
        table.to_parquet(run / "predictions.parquet", index=False)
        cfg = {**FIXED, "out": str(run), "measure": {**FIXED["measure"], "n_boot": 40}}
        return ["run", write_config(tmp / "audit.yaml", cfg)], run
    return make


def _states(*expected: tuple[str, str, str]) -> Callable[[Path], None]:
    """results.json lists each ``(kind, concept, source)`` and the report shows its message."""
    def check(run: Path) -> None:
        import html

        from audit.measure import validate_results

        results = json.loads((run / "results.json").read_text())
        validate_results(results)
        page = html.unescape((run / "report.html").read_text())
        for kind, concept, source in expected:
            found = [d for d in results["degenerate"] if (d["kind"], d["concept"],
                                                          d["source"]) == (kind, concept, source)]
            assert found, (kind, concept, source)
            assert found[0]["message"] in page
        verdicts = {v["concept"]: v["verdict"] for v in results["verdicts"]}
        for kind, concept, _ in expected:
            if kind == "single_group_present" and concept in verdicts:
                assert verdicts[concept] != "no gap found", verdicts  # never a clean bill
    return check


def _skipped_listed(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    skipped = manifest["skipped_images"]["real"]
    assert [s["image_id"] for s in skipped
            if "cannot read" in s["reason"]] == [HOSTILE_NAME]
    html = (run / "report.html").read_text()
    row = html[html.index("real image(s) were skipped"):]
    assert "cannot read the image" in row[:200]
    assert "(&lt;b onmouseover=alert(1)&gt;x.png" in row[:400]  # listed, as text


def _nan_scores_reported(run: Path) -> None:
    import pandas as pd

    results = json.loads((run / "results.json").read_text())
    table = pd.read_parquet(run / "predictions.parquet")
    audited = table[table["split"] == "audit"]
    bad = audited.loc[~np.isfinite(audited["score"]), "image_id"].tolist()
    assert bad, "the misbehaving discriminator gave no NaN score"
    case = next(d for d in results["degenerate"] if d["kind"] == "invalid_scores")
    assert case["image_ids"] == bad and case["count"] == len(bad)
    assert results["counts"]["invalid_scores"] == len(bad)
    # not averaged in: each group's mean score is the mean of its finite scores alone
    for section in results["treatment"]:
        for row in section["rows"]:
            rows = audited[(audited[f"pred__{section['concept']}"] == row["group"])
                           & (audited["source"] == row["source"])]
            finite = rows["score"][np.isfinite(rows["score"])]
            assert row["n_invalid_score"] == len(rows) - len(finite)
            assert row["mean_score"]["n"] == len(finite)
            if len(finite):
                assert row["mean_score"]["value"] == pytest.approx(finite.mean(), rel=1e-6)
    assert bad[0] in (run / "report.html").read_text()


def _nonfinite_activations_listed(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    skipped = [s for name in ("paired", "real", "generated")
               for s in manifest["skipped_images"].get(name, [])
               if "non-finite activations" in s["reason"]]
    assert skipped, "no image was skipped for infinite activations"
    from audit.store import ActivationStore

    for name in ("paired", "real", "generated"):
        store = ActivationStore.open(run / "activations" / name)
        kept = set(store.image_ids)
        assert not kept & {s["image_id"] for s in skipped}
        for layer in store.layers:
            assert np.isfinite(np.asarray(store.read(layer), dtype=np.float32)).all()
    html = (run / "report.html").read_text()
    row = html[html.index("paired image(s) were skipped"):][:400]
    assert "non-finite activations" in row and skipped[0]["image_id"] in row


def _unlabelled_folder(tmp: Path) -> dict:
    """A folder of demo digits without a labels CSV."""
    digit_pngs(tmp / "unlabelled", n=12)
    return {"source": f"folder:{tmp / 'unlabelled'}"}


def _plan_with(**changes) -> Callable:
    """``gan-audit plan`` on the config of :func:`_run_with`."""
    run = _run_with(**changes)

    def make(tmp: Path, shared) -> tuple[list, Path]:
        args, folder = run(tmp, shared)
        return ["plan", args[1]], folder
    return make


CASES: dict[str, Case] = {
    "malformed YAML": Case(
        _config_text("name: tiny\ndiscriminator: {spec: builtin:digits-dcgan\npaired: x\n"),
        2, ("malformed YAML at line", "column")),
    "unknown config key": Case(
        _run_with(measure={"n_bot": 50}), 2,
        ("measure.n_bot: unknown key", "did you mean 'n_boot'")),
    "wrong type": Case(
        _run_with(decoders={"max_epochs": "many"}), 2,
        ("decoders.max_epochs: must be an integer", "got 'many'")),
    "duplicate concept names": Case(
        _concept_set(_dup_concept), 2, ("concepts.yaml", "tone")),
    "reference group that does not exist": Case(
        _concept_set(_bad_reference), 2, ("reference group 'purple'", "light")),
    "label file with unknown values": Case(
        _run_with(paired=_labelled_folder(edit_labels=_unknown_value)), 2,
        ("'grey' (1 images)", "not among its groups")),
    "label file with missing rows": Case(
        _run_with(paired=_labelled_folder(edit_labels=_missing_row)), 2,
        ("1 image(s) have no row in", "img-007.png")),
    "image folder with no images": Case(
        _run_with(real=_empty_folder), 2, ("no images (.png", "empty")),
    "truncated image, on_bad_image stop": Case(
        _run_with(paired=_labelled_folder(extra=_truncated, on_bad_image="stop")), 2,
        ("img-005.png: cannot read the image", "on_bad_image: skip")),
    "corrupt image, on_bad_image skip": Case(_dirty, 0, ("verdicts:",), _skipped_listed),
    "image of the wrong size": Case(
        _run_with(paired=_labelled_folder(size=48),
                  discriminator=_discriminator(layers=["blocks.3.1"])), 2,
        ("failed on the first batch", "1 x 48 x 48", "image_size")),
    "image with a channel count the model cannot take": Case(
        _run_with(real=_two_channel_npz), 2, ("cannot tell the channel axis",)),
    "misspelled layer": Case(
        _run_with(discriminator=_discriminator(layers=["blocks.0.l"])), 2,
        ("blocks.0.l", "blocks.0.1")),
    "model module that does not resolve": Case(
        _run_with(discriminator=_discriminator(spec="python:no_such_module:D")), 2,
        ("cannot import module 'no_such_module'",)),
    "model callable that does not resolve": Case(
        _run_with(discriminator=_discriminator(spec="python:audit.demo.models:Discrimintor")),
        2, ("has no 'Discrimintor'", "DigitsDiscriminator")),
    "model file that does not resolve": Case(
        _run_with(discriminator=_discriminator(spec="torchscript:missing.pt")), 2,
        ("missing.pt does not exist",)),
    "weights that do not fit": Case(
        _run_with(discriminator=_discriminator(weights=_misfit_weights)), 2,
        ("missing keys: head.1.bias", "unexpected keys: extra.weight, head.1.bias_renamed")),
    "decoders from another model": Case(
        _decoders_of_another_model, 2, ("come from another model", "00000000")),
    "run folder of an incompatible version": Case(
        _old_format, 2, ("run folder format 99", "another version")),
    "output folder that is a file": Case(_out_is_a_file, 2, ("exists and is a file",)),
    "output folder not writable": Case(_out_not_writable, 2, ("not writable",)),
    "disk full": Case(_disk_full, 2, ("results.json: the disk is full", "nothing was")),
    "NaN scores": Case(_dirty, 0, ("verdicts:",), _nan_scores_reported),
    "a concept with a single group present": Case(
        _decoded_as({"stroke": lambda p: p.where(p == "thin", "thin")}), 0, ("[measure] done",),
        _states(("single_group_present", "stroke", "real"),
                ("single_group_present", "stroke", "generated"))),
    "a group with zero members": Case(
        _decoded_as({"digit": lambda p: p.where(p != "3", "4")}), 0, ("[measure] done",),
        _states(("empty_group", "digit", "real"), ("empty_group", "digit", "generated"))),
    "all images decoded to one group": Case(
        _decoded_as({"digit": lambda p: p.where(p == "0", "0"),
                     "tone": lambda p: p.where(p == "light", "light"),
                     "stroke": lambda p: p.where(p == "thin", "thin")}), 0, ("[measure] done",),
        _states(*[("single_group_present", c, s) for c in ("digit", "tone", "stroke",
                                                           "tone+stroke")
                  for s in ("real", "generated")])),
    "NaN or infinite activations": Case(_dirty, 0, ("verdicts:",),
                                        _nonfinite_activations_listed),
    "NaN or infinite activations, on_bad_image stop": Case(
        _run_with(discriminator=_discriminator(spec=_misbehaving),
                  paired={**TINY["paired"], "on_bad_image": "stop"}), 2,
        ("digits-paired-", "non-finite activations (NaN or infinite", "on_bad_image: skip")),
    # evidence (#18): gan-audit plan
    "plan without labels for the protected concepts": Case(
        _plan_with(paired=_unlabelled_folder, real=_unlabelled_folder), 2,
        ("protected concept(s) tone, stroke", "group shares are unknown", "real.labels")),
}


@pytest.fixture
def shared(tmp_path_factory) -> Callable[[str], Path]:
    return lambda kind: shared_run(tmp_path_factory, kind)


@pytest.fixture
def disk_fills_on_results(monkeypatch) -> None:
    """Writes of results.json through audit.io fail with ENOSPC after half the bytes."""
    import builtins

    import audit.io

    real_open = builtins.open

    class HalfWritten:
        def __init__(self, fh) -> None:
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

        def write(self, data: bytes) -> int:
            self.fh.write(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(self.fh, name)

    def open_(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        if "w" in mode and Path(file).name.startswith(".results.json."):
            return HalfWritten(fh)
        return fh

    monkeypatch.setattr(audit.io, "open", open_, raising=False)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path, shared, request) -> None:
    case = CASES[name]
    if name == "disk full":
        request.getfixturevalue("disk_fills_on_results")
    args, folder = case.make(tmp_path, shared)
    before = snapshot(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a division by zero is an error here
        result = invoke(*args)
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    for fragment in case.fragments:
        assert fragment in result.output, f"{fragment!r} not in:\n{result.output}"
    if case.code == 2:
        assert result.output.count("error:") == 1  # one message
    assert_consistent(folder, before, failed=case.code != 0)
    if case.after is not None:
        case.after(folder)


def test_the_table_covers_every_item_of_the_issue() -> None:
    assert len(CASES) == 29
