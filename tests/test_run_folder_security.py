"""Issue 16: a run folder is data, never code; nothing of the user's is lost; one writer;
integrity checked on rerun and by `gan-audit verify`.

Each test is one attack or accident of the issue, run end to end through the CLI on a copy
of a finished run (:func:`test_bad_inputs.shared_run`), and fails on the code before the fix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from test_bad_inputs import (
    FIXED,
    copy_run,
    digit_pngs,
    forge_review_log,
    invoke,
    shared_run,
    snapshot,
    write_config,
)

from audit.runfolder import LOCK, MARKER, created_files


@pytest.fixture
def run(tmp_path_factory, tmp_path) -> Path:
    """A copy of a finished tiny audit (builtin models, no PDF)."""
    return copy_run(shared_run(tmp_path_factory, "tiny"), tmp_path / "run")


def _set_config(run: Path, **sections) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg.update(sections)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


# ---------------------------------------------------------------- 1. a run folder is data


def test_a_run_folders_config_never_runs_code_without_trust(run, tmp_path):
    """The issue's attack: a saved config naming ``python:`` code with kwargs ran on
    decode, insight, diagnose and interpolate. Without --trust-run-config nothing runs."""
    marker = tmp_path / "pwned"
    attack = {"spec": "python:subprocess:run", "kwargs": {"args": ["touch", str(marker)]}}
    _set_config(run, discriminator={**attack, "layers": "auto"}, generator={**attack, "n": 10})
    digit_pngs(tmp_path / "imgs", n=2)
    for args in (["decode", run, tmp_path / "imgs"], ["insight", run], ["diagnose", run],
                 ["interpolate", run, "--from", "1", "--to", "2"]):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "python:subprocess:run with kwargs" in result.output, result.output
        assert "--trust-run-config" in result.output and "Traceback" not in result.output
        assert not marker.exists(), f"{args[0]} ran the run folder's code"
    # the test can fail: with the user's explicit trust, the same folder does run that code
    invoke("decode", run, tmp_path / "imgs", "--trust-run-config")
    assert marker.exists()


def test_commands_that_need_no_model_import_no_model_code(run, tmp_path):
    """report, review, compare, verify and measure never import what a config names."""
    marker = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\nclass D:\n    pass\n")
    _set_config(run, discriminator={"spec": f"python:{evil}:D", "layers": "auto"})
    other = copy_run(run, tmp_path / "other")
    measure_cfg = yaml.safe_load((run / "config.yaml").read_text())
    measure_cfg["out"] = str(run)
    for args, code in ((["report", run, "--no-pdf"], 0), (["review", run], 0),
                       (["verify", run], 1),  # 1: config.yaml was edited (by this test)
                       (["compare", run, other, "--out", tmp_path / "cmp", "--no-pdf"], 0),
                       (["measure", write_config(tmp_path / "m.yaml", measure_cfg)], 0)):
        result = invoke(*args)
        assert result.exit_code == code, (args, result.output)
        assert not marker.exists(), f"{args[0]} imported model code"


# ---------------------------------------------------------------- 2. nothing read through it


SECRET = b"\x89PNG\r\n\x1a\n" + b"TOP-SECRET-BYTES-OF-THE-USER" * 20


def test_links_in_a_run_folder_never_bring_outside_files_into_the_report(run, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    sample = sorted((run / "samples").glob("generated-*.png"))[0]
    sample.unlink()
    sample.symlink_to(secret)  # a symbolic link
    insight_png = run / "insight" / "leak.png"
    os.link(secret, insight_png)  # a hard link
    placed = run / "samples" / "real-lowest.png"  # a file the run did not write
    placed.unlink(missing_ok=True)
    placed.write_bytes(SECRET)
    result = invoke("report", run, "--no-pdf")
    assert result.exit_code == 0, result.output
    html = (run / "report.html").read_text()
    encoded = base64.b64encode(SECRET).decode()
    assert encoded[:60] not in html and "TOP-SECRET" not in html
    assert f"samples/{sample.name} is not shown" in html  # and says why
    assert "real-lowest.png is not shown" in html
    # a link in place of results.json is refused outright
    (run / "results.json").unlink()
    (run / "results.json").symlink_to(secret)
    refused = invoke("report", run, "--no-pdf")
    assert refused.exit_code == 2 and "is a link" in refused.output


# ---------------------------------------------------------------- 3. ownership


def test_out_on_a_folder_of_user_files_at_run_names_is_refused_untouched(tmp_path):
    mine = tmp_path / "mine"
    (mine / "samples").mkdir(parents=True)
    (mine / "decoders").mkdir()
    (mine / "samples" / "holiday.png").write_bytes(b"my photo")
    (mine / "decoders" / "thesis.tex").write_text("my thesis")
    before = snapshot(mine)
    result = invoke("run", write_config(tmp_path / "a.yaml", {**FIXED, "out": str(mine)}))
    assert result.exit_code == 2 and "no .gan-audit-run marker" in result.output
    assert snapshot(mine) == before and not (mine / MARKER).exists()


def test_a_rerun_deletes_only_files_the_tool_wrote(run, tmp_path):
    """A file placed in an output of a finished run survives a rerun that must replace that
    output; the rerun says which file and stops before deleting anything."""
    (run / "samples" / "my-notes.txt").write_text("mine")
    before = snapshot(run / "samples")
    cfg = {**FIXED, "out": str(run), "report": {**FIXED["report"], "samples_per_group": 3}}
    result = invoke("run", write_config(tmp_path / "a.yaml", cfg))
    assert result.exit_code == 2, result.output
    assert "my-notes.txt" in result.output and "Nothing was deleted" in result.output
    assert snapshot(run / "samples") == before
    (run / "samples" / "my-notes.txt").unlink()
    assert invoke("run", write_config(tmp_path / "a.yaml", cfg)).exit_code == 0


def test_the_journal_lists_every_file_the_run_wrote(run):
    written = created_files(run)
    files = {p.relative_to(run).as_posix() for p in run.rglob("*")
             if p.is_file() and p.name not in (MARKER, LOCK)}
    assert files <= written, files - written


def test_a_failed_first_run_leaves_nothing_behind(tmp_path):
    out = tmp_path / "new"
    cfg = {**FIXED, "out": str(out),
           "discriminator": {**FIXED["discriminator"], "layers": ["blocks.0.l"]}}
    result = invoke("run", write_config(tmp_path / "a.yaml", cfg))
    assert result.exit_code == 2 and "blocks.0.l" in result.output
    assert not out.exists()


def test_compare_out_never_overwrites_a_folder_of_something_else(run, tmp_path):
    other = copy_run(run, tmp_path / "other")
    user = tmp_path / "user"
    user.mkdir()
    (user / "compare.html").write_text("my own page")
    for out in (user, other):
        before = snapshot(out)
        result = invoke("compare", run, other, "--out", out, "--no-pdf")
        assert result.exit_code == 2, result.output
        assert snapshot(out) == before
    fresh = tmp_path / "cmp"
    for _ in range(2):  # a comparison folder of its own may be written again
        assert invoke("compare", run, other, "--out", fresh, "--no-pdf").exit_code == 0


# ---------------------------------------------------------------- 4. one writer


def test_a_second_writer_stops_at_once_naming_the_first(run, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from audit.runfolder import claim
            with claim({str(run)!r}, create=False):
                print("ready", flush=True)
                sys.stdin.readline()
            """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = snapshot(run)
        cfg = {**FIXED, "out": str(run), "measure": {**FIXED["measure"], "alpha": 0.01}}
        result = invoke("run", write_config(tmp_path / "a.yaml", cfg))
        assert result.exit_code == 2, result.output
        assert f"in use by process {holder.pid}" in result.output
        assert snapshot(run) == before
    finally:
        holder.kill()  # a crash: the kernel releases the lock
        holder.wait()
    result = invoke("run", write_config(tmp_path / "a.yaml", cfg))
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- 5. integrity


def test_a_truncated_result_or_shard_is_recomputed_not_trusted(run, tmp_path):
    results = (run / "results.json").read_bytes()
    (run / "results.json").write_bytes(results[:len(results) // 2])
    shard = sorted((run / "activations" / "real").rglob("shard-*.npy"))[0]
    good_shard = shard.read_bytes()
    shard.write_bytes(good_shard[:200])
    verify = invoke("verify", run)
    assert verify.exit_code == 1
    assert "results.json" in verify.output and shard.relative_to(run).as_posix() in verify.output
    result = invoke("run", write_config(tmp_path / "a.yaml", {**FIXED, "out": str(run)}))
    assert result.exit_code == 0, result.output
    assert "[extract] outputs differ from the manifest" in result.output
    assert "up to date" not in result.output  # every later stage ran again too
    assert shard.read_bytes() == good_shard
    again = json.loads((run / "results.json").read_text())
    first = json.loads(results)
    again.pop("meta"), first.pop("meta")  # when and under which out: it was measured
    assert again == first
    assert invoke("verify", run).exit_code == 0


def test_verify_names_every_difference(run):
    ok = invoke("verify", run)
    assert ok.exit_code == 0 and "intact" in ok.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["artifacts"]["results.json"]["sha256"] == hashlib.sha256(
        (run / "results.json").read_bytes()).hexdigest()
    (run / "config.yaml").write_text((run / "config.yaml").read_text() + "# edited\n")
    (run / "tables" / "extra.csv").write_text("a,b\n")
    (run / "decoders" / "layers.json").unlink()
    html = run / "report.html"
    html.write_text(html.read_text().replace("four-fifths", "five-fifths"))
    result = invoke("verify", run)
    assert result.exit_code == 1
    for expected in ("config.yaml: its sha256 differs", "tables/extra.csv: not written by",
                     "decoders/layers.json: missing", "report.html: its sha256 differs"):
        assert expected in result.output, result.output


def test_a_damaged_shard_read_directly_is_a_message_not_a_traceback(run):
    from audit.errors import RunFolderError
    from audit.store import ActivationStore

    store = ActivationStore.open(run / "activations" / "paired")
    shard = sorted((run / "activations" / "paired").rglob("shard-*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    layer = shard.parent.name
    with pytest.raises(RunFolderError, match="damaged or truncated"):
        store.scores() if layer == "_scores" else store.read(layer)


def test_the_report_is_recorded_after_a_review_re_renders_it(run):
    finding = json.loads((run / "results.json").read_text())["findings"][0]["id"]
    result = invoke("review", run, finding, "--status", "accepted", "--reviewer", "A. B.")
    assert result.exit_code == 0, result.output
    assert invoke("verify", run).exit_code == 0


def test_a_run_folder_moved_elsewhere_still_verifies(run, tmp_path):
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(run, moved)
    assert invoke("verify", moved).exit_code == 0


# ---------------------------------------------------------------- leftovers of killed writes


@pytest.mark.parametrize("blocked", [False, True], ids=["", "SIGTERM blocked by the parent"])
def test_a_killed_write_leaves_no_temporary(tmp_path, blocked):
    """SIGTERM in the middle of a write: the temporary is removed (the issue saw 0-byte
    temporary PDFs left behind), also when the process inherited SIGTERM blocked (a signal
    mask survives exec: it hung until killed, once under pytest-xdist)."""
    import signal

    script = textwrap.dedent(f"""
        import signal, time
        from pathlib import Path
        if {blocked!r}:
            signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})  # as inherited
        from audit.cli import interrupt_on_sigterm
        from audit.io import atomic_path
        interrupt_on_sigterm()
        with atomic_path(Path({str(tmp_path / 'report.pdf')!r}), suffix=".pdf"):
            print("writing", flush=True)
            time.sleep(60)
        """)
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.glob(".gan-audit-tmp.report.pdf.*"))) == 1
    writer.send_signal(signal.SIGTERM)
    writer.wait(timeout=30)
    assert list(tmp_path.iterdir()) == []


def test_a_rerun_sweeps_what_a_killed_run_left(run, tmp_path):
    left = [run / ".gan-audit-tmp.report.pdf.k2j3ab_9.pdf",
            run / "decoders" / ".gan-audit-tmp.blocks.1.1.safetensors.zz00aa11.safetensors"]
    for path in left:
        path.write_bytes(b"")
    mine = run / ".notes.personal.json"  # a user's file, however it is named: left alone
    mine.write_text("mine")
    cfg = {**FIXED, "out": str(run), "measure": {**FIXED["measure"], "alpha": 0.01}}
    assert invoke("run", write_config(tmp_path / "a.yaml", cfg)).exit_code == 0
    assert not any(path.exists() for path in left) and mine.read_text() == "mine"


def test_stores_decoders_and_predictions_are_never_read_through_a_link(run, tmp_path):
    """A linked store folder, decoders folder or predictions file is refused by the readers
    (the measure stage, decode, insight) instead of reading files from elsewhere."""
    from audit.decode import load_decoders
    from audit.errors import RunFolderError
    from audit.store import ActivationStore

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for rel in ("activations/real", "decoders", "predictions.parquet"):
        target = elsewhere / rel.replace("/", "-")
        shutil.move(run / rel, target)
        (run / rel).symlink_to(target)
    with pytest.raises(RunFolderError, match="is a link"):
        ActivationStore.open(run / "activations" / "real")
    with pytest.raises(RunFolderError, match="is a link"):
        load_decoders(run / "decoders")
    result = invoke("diagnose", run, "--no-images")
    assert result.exit_code == 2 and "predictions.parquet: is a link" in result.output


def test_verify_against_a_recorded_head_catches_a_forged_review_log(run):
    """Without keys a log rewritten with recomputed hashes is internally consistent (the
    limit docs/SECURITY.md states); against the head printed earlier it fails."""
    finding = json.loads((run / "results.json").read_text())["findings"][0]["id"]
    assert invoke("review", run, finding, "--status", "accepted", "--reviewer", "A").exit_code == 0
    printed = invoke("verify", run)
    assert printed.exit_code == 0
    head = printed.output.split("head sha256:")[1].split(")")[0]
    forge_review_log(run / "review.jsonl")
    assert invoke("verify", run).exit_code == 0  # consistent: nothing to tell without keys
    forged = invoke("verify", run, "--expect-head", f"sha256:{head}")
    assert forged.exit_code == 1 and head in forged.output


# ---------------------------------------------------------------- found in review


def test_a_marker_link_in_a_subfolder_never_redirects_the_journal(run, tmp_path):
    """A received run folder with insight/.gan-audit-run linked to a user's file: the tool's
    journal lines never land in that file."""
    users = tmp_path / "bashrc"
    users.write_text("export PATH=...\n")
    (run / "insight" / MARKER).symlink_to(users)
    invoke("diagnose", run, "--no-images")
    assert users.read_text() == "export PATH=...\n"
    assert "insight/diagnosis.json" in created_files(run)


def test_a_linked_folder_in_a_run_folder_is_neither_read_nor_written(run, tmp_path):
    """RUN/x linking to another run folder (which has a marker of its own) does not make x
    a run folder of its own: reading or writing through it is refused."""
    from audit.errors import RunFolderError
    from audit.io import atomic_write_text
    from audit.runfolder import read_run_file, refuse_links

    other = copy_run(run, tmp_path / "other")
    (run / "x").symlink_to(other)
    with pytest.raises(RunFolderError, match="link"):
        refuse_links(run / "x" / "results.json")
    with pytest.raises(RunFolderError, match="link"):
        read_run_file(run / "x" / "results.json")
    (run / "samples").rename(tmp_path / "moved-samples")
    (run / "samples").symlink_to(tmp_path / "moved-samples")
    with pytest.raises(RunFolderError, match="link"):
        atomic_write_text(run / "samples" / "index.json", "{}")  # never written through it


def test_a_pipe_in_place_of_a_run_file_is_a_message_not_a_hang(run):
    (run / "results.json").unlink()
    os.mkfifo(run / "results.json")
    for args in (["report", run, "--no-pdf"], ["review", run], ["verify", run]):
        result = invoke(*args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert "not a regular file" in result.output, (args, result.output)


def test_stage_commands_keep_the_folder_verifiable_and_the_run_recomputes(run, tmp_path):
    cfg = {**FIXED, "out": str(run), "measure": {**FIXED["measure"], "alpha": 0.01}}
    measured = invoke("measure", write_config(tmp_path / "a.yaml", cfg))
    assert measured.exit_code == 0, measured.output
    assert invoke("verify", run).exit_code == 0
    again = invoke("run", write_config(tmp_path / "a.yaml", cfg))
    assert again.exit_code == 0 and "[measure] running" in again.output


def test_saved_generated_pngs_are_recorded(tmp_path):
    cfg = {**FIXED, "out": str(tmp_path / "run"),
           "generator": {**FIXED["generator"], "save_png": True}}
    assert invoke("run", write_config(tmp_path / "a.yaml", cfg)).exit_code == 0
    assert list((tmp_path / "run" / "generated").glob("*.png"))
    assert invoke("verify", tmp_path / "run").exit_code == 0


def test_a_manifest_naming_paths_outside_the_folder_is_a_finding_not_a_walk(run):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["artifacts"]["../outside"] = {"sha256": "0" * 64, "size": 1}
    manifest["artifacts"]["odd"] = "not a record"
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("verify", run)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "'../outside' is not a path inside the run folder" in result.output
    assert "'odd' is not a path inside" in result.output


def test_a_first_run_that_failed_after_some_work_keeps_it(tmp_path, monkeypatch):
    """Disk full at the second store: the first store's shards stay for the rerun."""
    import audit.extract
    from audit.errors import RunFolderError

    real = audit.extract._check_room
    calls = []

    def full_on_second_store(store, *args, **kwargs):
        calls.append(store.path.name)
        if len(set(calls)) > 1:
            raise RunFolderError(f"{store.path}: the disk is too full")
        return real(store, *args, **kwargs)

    monkeypatch.setattr(audit.extract, "_check_room", full_on_second_store)
    out = tmp_path / "run"
    result = invoke("run", write_config(tmp_path / "a.yaml", {**FIXED, "out": str(out)}))
    assert result.exit_code == 2
    assert list((out / "activations" / "paired").rglob("shard-*.npy"))


def test_a_received_config_cannot_make_diagnose_show_the_receivers_pictures(run, tmp_path):
    """A run folder whose config points its real images at a folder of the receiver's: the
    diagnosis grids would render them into the run folder (and a report sent back)."""
    private = tmp_path / "Pictures"
    digit_pngs(private, n=8)
    _set_config(run, real={"source": f"folder:{private}"})
    before = snapshot(run / "insight")
    for args in (["diagnose", run], ["insight", run]):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert f"real: folder:{private} (its images would be read and shown)" in result.output
    assert snapshot(run / "insight") == before  # no grid of the receiver's pictures
    assert invoke("diagnose", run, "--no-images").exit_code == 0  # numbers only: fine
