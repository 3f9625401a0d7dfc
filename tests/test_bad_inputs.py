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
from conftest import shared_folder
from test_pipeline import TINY

from audit.cli import cli

# The outputs of each stage (the pipeline's), for "a stage marked done has its outputs".
STAGE_OUTPUTS = {"extract": ["activations"], "decoders": ["decoders"], "baseline": ["baseline"],
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
    """A finished run folder, built once per test session (and shared by the xdist workers:
    conftest's :func:`shared_folder`): ``tiny`` (:data:`FIXED`) or ``dirty``
    (:func:`_dirty_config`). Copy it before changing anything."""
    def build(root: Path) -> None:
        cfg = {**FIXED, "out": str(root / "run")} if kind == "tiny" else _dirty_config(root)
        result = invoke("run", write_config(root / "audit.yaml", cfg))
        assert result.exit_code == 0, result.output

    return shared_folder(factory, f"shared-{kind}", build) / "run"


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
    """Leftovers of atomic writes (``.<name>.<random>.tmp`` and the like); the run folder's
    own marker and lock files are not leftovers."""
    from audit.runfolder import TOOL_FILES

    return [p for p in folder.rglob(".*") if p.is_file() and p.name not in TOOL_FILES]


def assert_consistent(folder: Path, before: dict[str, str], *, failed: bool) -> None:
    """Nothing half-written in ``folder`` after a command."""
    assert not temp_files(folder), temp_files(folder)
    after = snapshot(folder)
    # (a stage that reruns removes its stale outputs first: removal is not a change)
    changed = [k for k, v in before.items() if k in after and after[k] != v
               and k not in ("manifest.json", "config.yaml", ".gan-audit-run")]  # bookkeeping
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
    """Re-run a copy of the dirty audit (every stage reused) and check its folder. A copy:
    the shared run is read by other tests, on other xdist workers, at the same time."""
    src = shared("dirty")
    run = copy_run(src, tmp / "run")
    cfg = yaml.safe_load((src.parent / "audit.yaml").read_text(encoding="utf-8"))
    return ["run", write_config(tmp / "audit.yaml", {**cfg, "out": str(run)})], run


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
        from audit.manifest import record_artifacts

        record_artifacts(run, ["predictions.parquet"])  # as if the decoders had read them so
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


# ---------------------------------------------------------------- review log (issue 16)

# Every character str.splitlines() breaks a line at: each once split an entry in two.
AWKWARD_NOTE = "one\u2028two\u2029three\x85four\rfive\r\nsix\x0bseven\x0ceight\x1cnine"


def _reviewed_run(tmp: Path, shared) -> tuple[Path, str]:
    """A copy of the tiny run with one review recorded; returns it and the log's head."""
    from audit.report import append_review, verify_review_log

    run = copy_run(shared("tiny"), tmp / "run")
    finding = json.loads((run / "results.json").read_text())["findings"][0]["id"]
    append_review(run, finding, status="accepted", reviewer="A. Auditor", note="checked")
    return run, str(verify_review_log(run / "review.jsonl").head)


def _review_awkward_note(tmp: Path, shared) -> tuple[list, Path]:
    run = copy_run(shared("tiny"), tmp / "run")
    finding = json.loads((run / "results.json").read_text())["findings"][0]["id"]
    return ["review", run, finding, "--status", "disputed", "--note", AWKWARD_NOTE,
            "--reviewer", "B. Reviewer"], run


def _awkward_note_kept(run: Path) -> None:
    from audit.report import read_review_log

    log = read_review_log(run)
    assert log.verification.ok and [e["note"] for e in log.entries] == [AWKWARD_NOTE]
    assert (run / "review.jsonl").read_bytes().count(b"\n") == 1


def _review_edited_log(tmp: Path, shared) -> tuple[list, Path]:
    """A note changed in the log by hand (hash left as it was), then a new review."""
    run, _ = _reviewed_run(tmp, shared)
    path = run / "review.jsonl"
    entry = json.loads(path.read_text())
    path.write_text(json.dumps({**entry, "note": "never checked"}) + "\n")
    return ["review", run, entry["finding_id"], "--status", "mitigated", "--reviewer", "C"], run


def _review_forged_log(tmp: Path, shared) -> tuple[list, Path]:
    """The status changed and the hash recomputed (what anyone can do without a key); the
    reviewer recorded the head before."""
    run, head = _reviewed_run(tmp, shared)
    forge_review_log(run / "review.jsonl")
    return ["review", run, "--expect-head", f"sha256:{head}"], run


def forge_review_log(path: Path) -> None:
    """Rewrite a one-entry review log's status with its hash recomputed: what anyone can do
    to a log without keys."""
    entry = json.loads(path.read_text())
    entry["status"] = "false-positive"
    body = {k: v for k, v in entry.items() if k != "hash"}
    entry["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                              ensure_ascii=False).encode()).hexdigest()
    path.write_text(json.dumps(entry) + "\n")
# ---------------------------------------------------------------- issue 16: images


def _pictures(folder: Path, write: Callable[[np.ndarray, Path], None], *, n: int = 120) -> None:
    """The demo's audited digits as 8-bit grey pictures, each written by ``write``."""
    from PIL import Image

    digit_pngs(folder, n=n)
    for path in sorted(folder.glob("img-*.png")):
        picture = np.asarray(Image.open(path), dtype=np.uint8)
        path.unlink()
        write(picture, path)


def _sixteen_bit_or_float(picture: np.ndarray, path: Path) -> None:
    """Even images as 16-bit PNGs (full range: 255 -> 65535), odd ones as float TIFFs in
    [0, 1]; the same picture as an 8-bit PNG in ``../flat``."""
    from PIL import Image

    flat = path.parent.parent / "flat"
    flat.mkdir(exist_ok=True)
    Image.fromarray(picture).save(flat / path.name)
    if int(path.stem[-3:]) % 2 == 0:
        Image.fromarray(picture.astype(np.uint16) * 257).save(path)
    else:
        Image.fromarray(picture.astype(np.float32) / 255).save(path.with_suffix(".tif"))


def _float_tiffs(scale: float, shift: float) -> Callable[[Path], dict]:
    from PIL import Image

    def write(picture: np.ndarray, path: Path) -> None:
        values = picture.astype(np.float32) / 255 * scale + shift
        Image.fromarray(values.astype(np.float32)).save(path.with_suffix(".tif"))

    def real(tmp: Path) -> dict:
        _pictures(tmp / "tiffs", write, n=20)
        return {"source": f"folder:{tmp / 'tiffs'}"}
    return real


def _deep_images(tmp: Path, shared) -> tuple[list, Path]:
    """The tiny audit (fixed weights) of real images stored as 16-bit PNGs and float TIFFs."""
    _pictures(tmp / "deep", _sixteen_bit_or_float)
    cfg = {**FIXED, "real": {"source": f"folder:{tmp / 'deep'}"}, "out": str(tmp / "run")}
    return ["run", write_config(tmp / "audit.yaml", cfg)], tmp / "run"


def _read_at_their_depth(run: Path) -> None:
    """The audited 16-bit and float images got the probabilities and scores that the 8-bit
    PNGs of the same pictures get (the issue saw probabilities up to 1.0 apart)."""
    import pandas as pd

    from audit.decode.run import decode_images

    table = pd.read_parquet(run / "predictions.parquet")
    audited = table[(table["split"] == "audit") & (table["source"] == "real")]
    assert len(audited) == 120 and audited["image_id"].str.endswith(".tif").sum() == 60
    flat = decode_images(run, [str(run.parent / "flat")])
    assert [Path(i).stem for i in flat["image_id"]] == [Path(i).stem
                                                        for i in audited["image_id"]]
    columns = [c for c in flat.columns if c.startswith("prob__")] + ["score"]
    assert len(columns) > 1
    np.testing.assert_allclose(audited[columns].to_numpy(float), flat[columns].to_numpy(float),
                               atol=1e-5)


def _npz_real(images: np.ndarray) -> Callable[[Path], dict]:
    def real(tmp: Path) -> dict:
        np.savez(tmp / "real.npz", images=images)
        return {"source": f"npz:{tmp / 'real.npz'}"}
    return real


_BYTES_0_255 = np.random.default_rng(0).integers(0, 256, (8, 32, 32))


def _out_inside_the_images(tmp: Path, shared) -> tuple[list, Path]:
    """A first run whose folder (with its sample grids and generated PNGs) lies inside the
    real-image folder; the case is the second run."""
    digit_pngs(tmp / "real_images", n=120)
    run = tmp / "real_images" / "run"
    cfg = {**TINY, "real": {"source": f"folder:{tmp / 'real_images'}"}, "out": str(run),
           "generator": {**TINY["generator"], "save_png": True}}
    config = write_config(tmp / "audit.yaml", cfg)
    first = invoke("run", config)
    assert first.exit_code == 0, first.output
    assert len(list(run.rglob("*.png"))) > 120  # the run's own PNGs are there
    return ["run", config], run


def _own_pngs_left_out(run: Path) -> None:
    import pandas as pd

    manifest = json.loads((run / "manifest.json").read_text())
    real = manifest["data_sources"]["real"]
    assert real["n"] == 120  # the issue saw 120, then 140
    assert "lies inside this image folder" in real["notes"][0]
    table = pd.read_parquet(run / "predictions.parquet")
    ids = table.loc[(table["split"] == "audit") & (table["source"] == "real"), "image_id"]
    assert len(ids) == 120 and not ids.str.startswith("run/").any()
    assert "lies inside this image folder" in json.loads(
        (run / "results.json").read_text())["meta"]["data_sources"]["real"]["notes"][0]


def _names_not_utf8(tmp: Path) -> dict:
    """Real images, one renamed to bytes that are not UTF-8 and one unreadable such name."""
    real = tmp / "real_images"
    digit_pngs(real, n=60)
    raw = os.fsencode(real)
    os.rename(real / "img-007.png", os.fsdecode(raw + b"/img-\xff.png"))
    Path(os.fsdecode(raw + b"/cut-\xfe.png")).write_bytes(b"\x89PNG\r\n\x1a\n cut")
    return {"source": f"folder:{real}", "on_bad_image": "skip"}


def _names_written_safely(run: Path) -> None:
    import pandas as pd

    table = pd.read_parquet(run / "predictions.parquet")
    assert "img-\\xff.png" in set(table["image_id"])  # read, under a writable id
    for name in ("manifest.json", "results.json"):
        data = json.loads((run / name).read_text(encoding="utf-8"))
        skipped = (data if name == "manifest.json" else data["meta"])["skipped_images"]["real"]
        assert [s["image_id"] for s in skipped] == ["cut-\\xfe.png"], skipped
    assert "cut-\\xfe.png" in (run / "report.html").read_text(encoding="utf-8")
def _bomb_in_kwargs(tmp: Path, shared) -> tuple[list, Path]:
    """TINY whose discriminator kwargs hold a 'billion laughs' alias bomb (700 bytes)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    cfg = {**TINY, "out": str(tmp / "run")}
    text = yaml.safe_dump({k: v for k, v in cfg.items() if k != "discriminator"})
    text += "discriminator:\n  spec: builtin:digits-dcgan\n  kwargs:\n"
    text += "".join(f"    {line}\n" for line in lines)
    (tmp / "audit.yaml").write_text(text, encoding="utf-8")
    return ["run", tmp / "audit.yaml"], tmp


def _config_over_one_mib(tmp: Path, shared) -> tuple[list, Path]:
    cfg = {**TINY, "out": str(tmp / "run"), "name": "big"}
    text = yaml.safe_dump(cfg) + "# padding\n" * 120_000
    (tmp / "audit.yaml").write_text(text, encoding="utf-8")
    return ["run", tmp / "audit.yaml"], tmp


def _model_file(code: str) -> Callable[[Path], str]:
    """A ``python:`` spec of class ``D`` in a file ``model.py`` holding ``code``."""
    def spec(tmp: Path) -> str:
        (tmp / "model.py").write_text(code, encoding="utf-8")
        return f"python:{tmp / 'model.py'}:D"
    return spec


# A discriminator that averages its logits over the batch: one number, no score per image.
SCALAR_D = """
from audit.demo.models import DigitsDiscriminator


class D(DigitsDiscriminator):
    def forward(self, x):
        return super().forward(x).mean()
"""
FACTORY_RAISES = """
def D():
    raise ValueError("this checkpoint needs width 128")
"""


def _broken_repository(tmp: Path) -> dict:
    """A discriminator ``python:brokenrepo.nets:D`` in a repository (code_path) whose package
    fails at import."""
    (tmp / "repo" / "brokenrepo").mkdir(parents=True)
    (tmp / "repo" / "brokenrepo" / "__init__.py").write_text(
        "raise ImportError('libcudart.so.13: cannot open shared object file')\n")
    return {**TINY["discriminator"], "spec": "python:brokenrepo.nets:D",
            "code_path": str(tmp / "repo")}


# ---------------------------------------------------------------- issue 16: run folders


def _run_folder_naming_code(tmp: Path, shared) -> tuple[list, Path]:
    """A received run folder whose config.yaml names code with kwargs (the issue's attack;
    tests/test_run_folder_security.py checks that nothing runs)."""
    run = copy_run(shared("tiny"), tmp / "run")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["discriminator"] = {"spec": "python:subprocess:run", "layers": "auto",
                            "kwargs": {"args": ["touch", str(tmp / "pwned")]}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    digit_pngs(tmp / "new", n=2)
    return ["decode", run, tmp / "new"], run


def _results_json_a_link(tmp: Path, shared) -> tuple[list, Path]:
    run = copy_run(shared("tiny"), tmp / "run")
    (tmp / "elsewhere.json").write_bytes((run / "results.json").read_bytes())
    (run / "results.json").unlink()
    (run / "results.json").symlink_to(tmp / "elsewhere.json")
    return ["report", run, "--no-pdf"], run


def _results_of_an_older_version(tmp: Path, shared) -> tuple[list, Path]:
    run = copy_run(shared("tiny"), tmp / "run")
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({**results, "schema_version": 1}))
    return ["report", run, "--no-pdf"], run


def _user_files_at_run_names(tmp: Path, shared) -> tuple[list, Path]:
    mine = tmp / "mine"
    (mine / "samples").mkdir(parents=True)
    (mine / "samples" / "holiday.png").write_bytes(b"my photo")
    (mine / "decoders").mkdir()
    return ["run", write_config(tmp / "audit.yaml", {**FIXED, "out": str(mine)})], mine


def _compare_into_user_folder(tmp: Path, shared) -> tuple[list, Path]:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "compare.html").write_text("my own page")
    return ["compare", shared("tiny"), shared("tiny"), "--out", tmp / "mine", "--no-pdf"], \
        tmp / "mine"


def _disk_full_in_extraction(tmp: Path, shared) -> tuple[list, Path]:
    return ["run", write_config(tmp / "audit.yaml", {**FIXED, "out": str(tmp / "run")})], tmp


def _truncated_results(tmp: Path, shared) -> tuple[list, Path]:
    """A rerun of a finished audit whose results.json was cut short: measured again."""
    run = copy_run(shared("tiny"), tmp / "run")
    data = (run / "results.json").read_bytes()
    (run / "results.json").write_bytes(data[:len(data) // 3])
    return ["run", write_config(tmp / "audit.yaml", {**FIXED, "out": str(run)})], run


def _results_measured_again(run: Path) -> None:
    json.loads((run / "results.json").read_text())  # whole again
    assert invoke("verify", run).exit_code == 0
def _malformed_transfer(tmp: Path, shared) -> tuple[list, Path]:
    """A finished run whose decoders/transfer.json names a layer it has no numbers for."""
    run = copy_run(shared("tiny"), tmp / "run")
    doc = json.loads((run / "decoders" / "transfer.json").read_text())
    doc["layers"] = {}
    (run / "decoders" / "transfer.json").write_text(json.dumps(doc))
    return ["measure", write_config(tmp / "audit.yaml", {**FIXED, "out": str(run)})], run


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


# A generator whose images are in [0, 1] (lucidrains stylegan2-pytorch ends in a sigmoid):
# the trained demo generator's images, mapped from [-1, 1] to [0, 1].
SIGMOID_GENERATOR = '''
import torch

from audit.demo.models import LATENT_DIM, builtin_generator


class SigmoidDigits(torch.nn.Module):
    z_dim = LATENT_DIM

    def __init__(self):
        super().__init__()
        self.g = builtin_generator()

    def forward(self, z):
        return (self.g(z) + 1) / 2
'''


def _generator_in_0_1(tmp: Path) -> dict:
    (tmp / "sigmoid_g.py").write_text(SIGMOID_GENERATOR)
    return {**TINY["generator"], "spec": f"python:{tmp / 'sigmoid_g.py'}:SigmoidDigits"}


def _sign_with_a_wrong_passphrase(tmp: Path, shared) -> tuple[list, Path]:
    """#21: sign-pdf with a PKCS#12 file whose passphrase is not the one given (PATH's
    value, an environment variable every shell has: the case needs no variable of its own)."""
    pytest.importorskip("pyhanko", reason="pyHanko (the 'sign' extra) signs PDFs")
    from test_pdfsign import run_with_pdf

    from audit.pdfsign import self_signed_certificate

    run = run_with_pdf(tmp / "run")
    p12 = self_signed_certificate(name="A. Auditor", out_p12=tmp / "me.p12",
                                  passphrase=b"not the value of PATH")
    return ["sign-pdf", run, "--p12", p12, "--passphrase-env", "PATH"], run
# ---------------------------------------------------------------- #21 signing and gate


def _signing_run(tmp: Path, *, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """A small run folder that verifies (test_signing.make_run) and a key pair for it."""
    from test_signing import make_run

    from audit.signing import write_key_pair

    return make_run(tmp / "run"), write_key_pair(out=tmp / "keys" / "k",
                                                 passphrase=passphrase).private


def _sign_with_missing_key(tmp: Path, shared) -> tuple[list, Path]:
    run, _ = _signing_run(tmp)
    return ["sign", run, "--key", tmp / "no-such-key", "--name", "A", "--role", "B"], run


def _sign_with_wrong_passphrase(tmp: Path, shared) -> tuple[list, Path]:
    """The key is encrypted with one passphrase; PATH (always set) holds another."""
    run, key = _signing_run(tmp, passphrase=b"the right one")
    return ["sign", run, "--key", key, "--name", "A", "--role", "B",
            "--passphrase-env", "PATH"], run


def _sign_a_plain_folder(tmp: Path, shared) -> tuple[list, Path]:
    _, key = _signing_run(tmp)
    (tmp / "plain").mkdir()
    (tmp / "plain" / "notes.txt").write_text("mine")
    return ["sign", tmp / "plain", "--key", key, "--name", "A", "--role", "B"], tmp / "plain"


def _gate_a_plain_folder(tmp: Path, shared) -> tuple[list, Path]:
    (tmp / "plain").mkdir()
    return ["gate", tmp / "plain", "--fail-on", "high"], tmp / "plain"


def _trusted_keys_without_keys(tmp: Path, shared) -> tuple[list, Path]:
    run, _ = _signing_run(tmp)
    (tmp / "trusted").mkdir()
    return ["verify", run, "--trusted-keys", tmp / "trusted"], run


def _keygen_unset_passphrase(tmp: Path, shared) -> tuple[list, Path]:
    return ["keygen", "--out", tmp / "keys" / "k", "--passphrase-env",
            "GAN_AUDIT_NO_SUCH_VARIABLE"], tmp
def _fixture_run(tmp: Path) -> Path:
    """A run folder holding the report tests' results.json fixture (no pipeline run)."""
    from audit.runfolder import claim

    run = tmp / "run"
    with claim(run):
        pass
    shutil.copy(Path(__file__).parent / "fixtures" / "results_digits.json",
                run / "results.json")
    return run


def _card_without_results(tmp: Path, shared) -> tuple[list, Path]:
    run = _fixture_run(tmp)
    (run / "results.json").unlink()
    return ["card", run], run


def _card_onto_a_folder(tmp: Path, shared) -> tuple[list, Path]:
    run = _fixture_run(tmp)
    (tmp / "docs").mkdir()
    return ["card", run, "--out", tmp / "docs"], run


def _mitigation_without_finding(tmp: Path, shared) -> tuple[list, Path]:
    run = _fixture_run(tmp)
    return ["review", run, "--mitigation", "rebalance the data", "--owner", "ML team"], run


# ---------------------------------------------------------------- labels (#23 items 2-3)


def _label_import(content: str, *, name: str = "labels.csv", labeller: str | None = "Ann"
                  ) -> Callable:
    """``gan-audit label RUN --import FILE`` on a copy of the tiny run; ``content`` may name
    ``{ID}``, the first image of its labelling sample."""
    def make(tmp: Path, shared) -> tuple[list, Path]:
        from audit.labels import labelling_sample

        run = copy_run(shared("tiny"), tmp / "run")
        path = tmp / name
        path.write_text(content.replace("{ID}", labelling_sample(run)[0].image_id),
                        encoding="utf-8")
        extra = ["--labeller", labeller] if labeller is not None else []
        return ["label", run, "--import", path, *extra], run
    return make


def _label_export_without_sample(tmp: Path, shared) -> tuple[list, Path]:
    run = copy_run(shared("tiny"), tmp / "run")
    shutil.rmtree(run / "samples" / "labelling")
    return ["label", run, "--export", tmp / "to_label.csv"], run


def _no_labels_written(folder: Path) -> None:
    assert not (folder / "labels").exists()
# ---------------------------------------------------------------- #22 tracking


PLAIN_GENERATOR = '''
from audit.demo.models import DigitsGenerator


class Plain(DigitsGenerator):
    def forward(self, z):          # no truncation_psi: a generator without truncation
        return super().forward(z)
'''


def _track_config(tmp: Path, **changes) -> Path:
    return write_config(tmp / "audit.yaml", {**FIXED, "out": str(tmp / "out"), **changes})


def _track_glob_matching_nothing(tmp: Path, shared) -> tuple[list, Path]:
    return (["track", _track_config(tmp), "--checkpoints", str(tmp / "runs" / "*.pkl")],
            tmp / "out")


def _track_checkpoint_that_fails_to_load(tmp: Path, shared) -> tuple[list, Path]:
    (tmp / "runs").mkdir()
    for k in range(2):
        (tmp / "runs" / f"network-{k:06d}.pkl").write_bytes(b"not a pickle")
    model = {"spec": "pickle:x.pkl#D", "trust_pickle": True}
    cfg = _track_config(tmp, discriminator={**FIXED["discriminator"], **model},
                        generator={**FIXED["generator"], **model, "spec": "pickle:x.pkl#G_ema"})
    return ["track", cfg, "--checkpoints", str(tmp / "runs" / "*.pkl")], tmp / "out"


def _track_reference_of_another_concept_set(tmp: Path, shared) -> tuple[list, Path]:
    from audit.concepts import bundled_concept_sets

    run = tmp / "reference"
    shutil.copytree(shared("tiny"), run)
    other = tmp / "my_tone.yaml"
    other.write_text(bundled_concept_sets()["digits_tone"].read_text().replace(
        "name: digits_tone", "name: my_tone"))
    cfg = _track_config(tmp, concept_set=str(other))
    return (["track", cfg, "--truncation", "1.0", "0.5", "--reference-decoders", run],
            tmp / "out")


def _track_truncation_without_one(tmp: Path, shared) -> tuple[list, Path]:
    (tmp / "plain.py").write_text(PLAIN_GENERATOR, encoding="utf-8")
    cfg = _track_config(tmp, generator={**FIXED["generator"],
                                        "spec": f"python:{tmp / 'plain.py'}:Plain"})
    return ["track", cfg, "--truncation", "1.0", "0.5"], tmp / "out"


def _serve_without_results(tmp: Path, shared) -> tuple[list, Path]:
    run = _fixture_run(tmp)
    (run / "results.json").unlink()
    return ["serve", run, "--no-browser", "--port", "0"], run


def _serve_on_an_address_that_cannot_be_bound(tmp: Path, shared) -> tuple[list, Path]:
    run = _fixture_run(tmp)
    return ["serve", run, "--no-browser", "--port", "0", "--host", "256.0.0.1"], run


def _nothing_served_nothing_written(folder: Path) -> None:
    assert not (folder / "review.jsonl").exists() and not (folder / "labels").exists()


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
    # review log (issue 16)
    "review note with line separators (U+2028, U+0085, CR)": Case(
        _review_awkward_note, 0, ("review log: 1 entry, head sha256:",), _awkward_note_kept),
    "review log edited by hand": Case(
        _review_edited_log, 2, ("hash chain is broken, so no entry is added",
                                "line 1: its content does not match its hash")),
    "review log forged with recomputed hashes": Case(
        _review_forged_log, 2, ("does not verify against the recorded head",
                                "is not an entry of the log")),
    # issue 16: images
    "16-bit PNGs and float TIFFs in [0, 1]": Case(
        _deep_images, 0, ("verdicts:",), _read_at_their_depth),
    "float TIFFs with values 0..255": Case(
        _run_with(real=_float_tiffs(255.0, 0.0)), 2,
        ("img-000.tif: float pixel values must lie in [0, 1], found 0..", "x / 255")),
    "float TIFFs with negative values": Case(
        _run_with(real=_float_tiffs(2.0, -1.0)), 2,
        ("img-000.tif: float pixel values must lie in [0, 1], found -1..", "(x + 1) / 2")),
    "NPZ images of a signed integer type": Case(
        _run_with(real=_npz_real(_BYTES_0_255)), 2,
        ("real.npz: pixel values are int64, signed integers", "uint8 (0..255)")),
    "NPZ float images with values 0..255": Case(
        _run_with(real=_npz_real(_BYTES_0_255.astype(np.float32))), 2,
        ("real.npz: float pixel values must lie in [0, 1], found 0..255",)),
    "output folder inside the real-image folder": Case(
        _out_inside_the_images, 0, ("verdicts:",), _own_pngs_left_out),
    "image file name that is not valid UTF-8": Case(
        _run_with(real=_names_not_utf8), 0, ("verdicts:",), _names_written_safely),
    # issue 16: config, YAML and model code
    "YAML alias bomb in a config": Case(
        _bomb_in_kwargs, 2, ("audit.yaml: its aliases (*name) repeat", "10,000 allowed")),
    "config over 1 MiB": Case(_config_over_one_mib, 2, ("audit.yaml: larger than 1 MiB",)),
    "negative seed": Case(
        _run_with(measure={"n_boot": 50, "seed": -1}), 2,
        ("measure.seed: must be an integer >= 0 and <= 4294967295, got -1",)),
    "n_boot of 1e9": Case(
        _run_with(measure={"n_boot": 10**9}), 2,
        ("measure.n_boot: must be an integer >= 0 and <= 100000, got 1000000000",)),
    "discriminator returning a 0-dim tensor": Case(
        _run_with(discriminator=_discriminator(spec=_model_file(SCALAR_D))), 2,
        ("the discriminator returned a 0-dim tensor (one number) for a batch of",
         "expected N or N x 1 logits")),
    "model module raising at import": Case(
        _run_with(discriminator=_discriminator(
            spec=_model_file("raise RuntimeError('compiled for CUDA 13')\n"))), 2,
        ("model.py:D: importing", "raised RuntimeError at", "compiled for CUDA 13",
         "full traceback with --debug")),
    "model module with a syntax error": Case(
        _run_with(discriminator=_discriminator(spec=_model_file("def D(:\n    pass\n"))), 2,
        ("model.py:D: importing", "raised SyntaxError", "line 1")),
    "model factory raising": Case(
        _run_with(discriminator=_discriminator(spec=_model_file(FACTORY_RAISES))), 2,
        ("calling", "raised ValueError", "this checkpoint needs width 128",
         "full traceback with --debug")),
    "model code importing a package that is not installed": Case(
        _run_with(discriminator=_discriminator(
            spec=_model_file("import requestsx_not_installed\n"))), 2,
        ("the package 'requestsx_not_installed'", "pip install requestsx_not_installed")),
    "model code importing its repository's module without code_path": Case(
        _run_with(discriminator=_discriminator(spec=_model_file("import torch_utils\n"))), 2,
        ("the module 'torch_utils'", "set code_path to the folder that holds torch_utils/")),
    "model repository whose package fails at import": Case(
        _run_with(discriminator=_broken_repository), 2,
        ("python:brokenrepo.nets:D: importing 'brokenrepo.nets' raised ImportError at",
         "libcudart.so.13")),
    # issue 16: run folders
    "run folder whose config names code": Case(
        _run_folder_naming_code, 2, ("python:subprocess:run with kwargs",
                                     "--trust-run-config")),
    "run folder artifact that is a link": Case(
        _results_json_a_link, 2, ("results.json: is a link", "never through a link")),
    "output folder holding user files at names a run uses": Case(
        _user_files_at_run_names, 2, ("no .gan-audit-run marker", "holds decoders, samples")),
    "compare --out onto a folder of user files": Case(
        _compare_into_user_folder, 2, ("compare.html; no .gan-audit-run marker",)),
    "disk full during extraction": Case(
        _disk_full_in_extraction, 2, ("the disk is too full for the activations",
                                      "MiB are needed", "MiB are free")),
    "truncated results.json on rerun": Case(
        _truncated_results, 0, ("[measure] outputs differ from the manifest",),
        _results_measured_again),
    # evidence (#18): gan-audit plan
    "plan without labels for the protected concepts": Case(
        _plan_with(paired=_unlabelled_folder, real=_unlabelled_folder), 2,
        ("protected concept(s) tone, stroke", "group shares are unknown", "real.labels")),
    # third-party GANs (issue 17): the loader
    "generator in [0, 1] declared [-1, 1]": Case(
        _run_with(generator=_generator_in_0_1), 2,
        ("have values in [0.", "generator.value_range is [-1, 1] (the default)",
         "`generator: {value_range: [0, 1]}`")),
    # evidence (#18 item 7): decoder transfer
    "decoders/transfer.json without the numbers of a layer": Case(
        _malformed_transfer, 2, ("decoders/transfer.json is malformed",
                                 "run 'gan-audit train-decoders' again")),
    # Python API (#19 item 2): a results.json of another schema version
    "results.json written by an older gan-audit": Case(
        _results_of_an_older_version, 2, ("schema_version 1, but this gan-audit reads version 2",
                                          "written by an older gan-audit: re-run "
                                          "`gan-audit measure CONFIG`")),
    # #21 PDF signing
    "sign-pdf with a wrong passphrase": Case(
        _sign_with_a_wrong_passphrase, 2, ("me.p12: cannot be opened with the passphrase given",
                                           "--passphrase-env")),
    # #21 signing and gate
    "sign with a key file that does not exist": Case(
        _sign_with_missing_key, 2, ("no-such-key: cannot read the key", "gan-audit keygen")),
    "sign with a wrong passphrase": Case(
        _sign_with_wrong_passphrase, 2, ("the passphrase is wrong", "--passphrase-env")),
    "sign a folder that is not a run folder": Case(
        _sign_a_plain_folder, 2, ("not a gan-audit run folder (no .gan-audit-run marker)",)),
    "gate on a folder that is not a run folder": Case(
        _gate_a_plain_folder, 2, ("not a gan-audit run folder", "gan-audit run wrote")),
    "verify --trusted-keys naming a folder without public keys": Case(
        _trusted_keys_without_keys, 2, ("holds no public key (*.pub)",)),
    "keygen --passphrase-env naming an unset variable": Case(
        _keygen_unset_passphrase, 2, ("GAN_AUDIT_NO_SUCH_VARIABLE is not set or empty",)),
    # compliance (#21 items 4-5): mitigation plan and model card
    "model card of a run folder without results.json": Case(
        _card_without_results, 2, ("results.json: not found", "Run the measure stage first")),
    "model card --out onto a folder": Case(
        _card_onto_a_folder, 2, ("docs: is a folder", "--out", "model-card.md")),
    "review --mitigation without a finding id": Case(
        _mitigation_without_finding, 2, ("--mitigation and --owner need a FINDING_ID",)),
    # counterfactual treatment test (#22 item 4)
    "counterfactual test of a concept the concept set lacks": Case(
        _run_with(counterfactual={"enabled": True, "concepts": ["colour"]}), 2,
        ("counterfactual.concepts: 'colour' is not a concept of the concept set 'digits_tone'",
         "digit, stroke, tone", "Fix the name")),
    "counterfactual test of a concept that is not protected": Case(
        _run_with(counterfactual={"enabled": True, "concepts": ["tone", "digit"]}), 2,
        ("counterfactual.concepts: 'digit' is not protected", "(tone, stroke)",
         "mark it protected")),
    "counterfactual test without a generator (generated images have no latents)": Case(
        _run_with(generator=None, counterfactual={"enabled": True},
                  generated=lambda tmp: {"images": _unlabelled_folder(tmp)}), 2,
        ("counterfactual: enabled needs a generator", "no latents",
         "counterfactual.enabled: false")),
    # labels of generated images and decoder transfer (#23 items 2-3)
    "label --import: a CSV without a group column": Case(
        _label_import("image_id,concept\n{ID},tone\n"), 2,
        ("lacks the column(s) group", "image_id, concept and group"), _no_labels_written),
    "label --import: a row naming an image outside the sample": Case(
        _label_import("image_id,concept,group\n{ID},tone,dark\nnot-an-image,tone,dark\n"), 2,
        ("label row 2: unknown image id 'not-an-image'", "--export FILE"), _no_labels_written),
    "label --import: a group the concept does not have": Case(
        _label_import("image_id,concept,group\n{ID},tone,drak\n"), 2,
        ("label row 1: unknown group of tone 'drak'", "Did you mean 'dark'"),
        _no_labels_written),
    "label --import: a Label Studio export that is not JSON": Case(
        _label_import('[{"data": {"image_id": "{ID}"}, ', name="export.json"), 2,
        ("export.json: not valid JSON",), _no_labels_written),
    "label --import without --labeller": Case(
        _label_import("image_id,concept,group\n{ID},tone,dark\n", labeller=None), 2,
        ("give the labeller's name with --labeller NAME",), _no_labels_written),
    "label --export without a labelling sample": Case(
        _label_export_without_sample, 2,
        ("samples/labelling/index.json: not found", "gan-audit run CONFIG",
         "report.labelling_sample"), _no_labels_written),
    # #22 tracking: gan-audit track
    "track: a checkpoint glob that matches nothing": Case(
        _track_glob_matching_nothing, 2, ("matches no file", "*.pkl", "quote it")),
    "track: a checkpoint that fails to load": Case(
        _track_checkpoint_that_fails_to_load, 2, ("checkpoint network-000000 (",
                                                  "network-000000.pkl", "cannot unpickle")),
    "track: a reference run of another concept set": Case(
        _track_reference_of_another_concept_set, 2, ("--reference-decoders", "'digits_tone'",
                                                     "not the tracked 'my_tone'")),
    "track: a truncation sweep of a generator without truncation": Case(
        _track_truncation_without_one, 2, ("setting truncation-1", "takes no "
                                           "truncation_psi/truncation argument")),
    # the review web app (#23 items 1 and 5)
    "serve a folder without results.json": Case(
        _serve_without_results, 2, ("results.json: not found", "Run the measure stage first"),
        _nothing_served_nothing_written),
    "serve on an address that cannot be bound": Case(
        _serve_on_an_address_that_cannot_be_bound, 2,
        ("warning: serving on 256.0.0.1", "cannot listen on 256.0.0.1:0", "--host"),
        _nothing_served_nothing_written),
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
        if "w" in mode and Path(file).name.startswith(".gan-audit-tmp.results.json."):
            return HalfWritten(fh)
        return fh

    monkeypatch.setattr(audit.io, "open", open_, raising=False)


@pytest.fixture
def disk_nearly_full(monkeypatch) -> None:
    """The file system holds 1 KiB more: extraction's check before each shard stops."""
    import audit.io

    monkeypatch.setattr(audit.io, "free_bytes", lambda folder: 1024)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path, shared, request) -> None:
    case = CASES[name]
    args, folder = case.make(tmp_path, shared)  # (may build a shared run: before any fault)
    if name == "disk full":
        request.getfixturevalue("disk_fills_on_results")
    if name == "disk full during extraction":
        request.getfixturevalue("disk_nearly_full")
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
    assert len(CASES) == 84
