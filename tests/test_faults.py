"""Fault injection: a run that fails in any stage (an exception, Ctrl-C) leaves a consistent
run folder, and the next run resumes it to the same results.json as an uninterrupted run.

Each case starts from a copy of the shared tiny run cut back to the moment the stage was
about to start the first time (its outputs and those of every later stage removed, and their
manifest records), then fails inside the stage: at the rename of its second atomic write
(so some of its files are in place and one is not), or at its end when it writes fewer.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_bad_inputs import FIXED, STAGE_OUTPUTS, copy_run, invoke, shared_run, temp_files

import audit.pipeline
from audit.pipeline import STAGES

# The function each stage of audit.pipeline.run_audit calls (looked up at call time).
STAGE_FUNCTIONS = {"extract": "_extract", "decoders": "_train", "baseline": "_baseline",
                   "decode": "predictions_from_run",
                   "samples": "_samples", "measure": "_measure", "insight": "_insight",
                   "report": "_report"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (built once per session, shared with test_bad_inputs.py)."""
    return shared_run(tmp_path_factory, "tiny")


def cut_back(run: Path, stage: str) -> None:
    """The run folder as it was when ``stage`` was about to run for the first time."""
    later = STAGES[STAGES.index(stage):]
    manifest = json.loads((run / "manifest.json").read_text())
    for name in later:
        manifest["stages"].pop(name, None)
        for output in STAGE_OUTPUTS[name]:
            path = run / output
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    if stage == "extract":
        for key in ("hashes", "model", "data_sources", "skipped_images"):
            manifest.pop(key, None)
    (run / "manifest.json").write_text(json.dumps(manifest))


def inject(monkeypatch: pytest.MonkeyPatch, stage: str, fault: BaseException) -> list[str]:
    """Make ``stage`` fail with ``fault`` at its second atomic rename (or at its end).

    Returns the list of files the stage renamed into place before failing.
    """
    name = STAGE_FUNCTIONS[stage]
    real_stage = getattr(audit.pipeline, name)
    real_replace = os.replace
    renamed: list[str] = []

    def replace(src, dst, *args, **kwargs):
        if len(renamed) == 1:
            raise fault
        real_replace(src, dst, *args, **kwargs)
        renamed.append(str(dst))

    def failing_stage(*args, **kwargs):
        monkeypatch.setattr(os, "replace", replace)
        try:
            real_stage(*args, **kwargs)
        finally:
            monkeypatch.setattr(os, "replace", real_replace)
        raise fault  # the stage wrote fewer than two files: fail before it is marked done

    monkeypatch.setattr(audit.pipeline, name, failing_stage)
    return renamed


def assert_interrupted_consistently(run: Path, stage: str) -> None:
    assert not temp_files(run), temp_files(run)  # nothing half-written
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages[stage]["done"] is False
    later = STAGES[STAGES.index(stage) + 1:]
    assert not [s for s in later if s in stages]
    for name in later:
        assert not any((run / o).exists() for o in STAGE_OUTPUTS[name]), name
    for name in STAGES[:STAGES.index(stage)]:
        assert stages[name]["done"] is True


def without_volatile(results: dict) -> dict:
    """results.json less what names the folder (the config's ``out`` is in its hash)."""
    meta = dict(results["meta"])
    meta["hashes"] = {k: v for k, v in meta["hashes"].items() if k != "config"}
    return {**results, "meta": meta}


CASES = [(stage, RuntimeError(f"injected fault in {stage}")) for stage in STAGES] + [
    ("decoders", KeyboardInterrupt())]


@pytest.mark.parametrize(("stage", "fault"), CASES,
                         ids=[f"{s}-{type(f).__name__}" for s, f in CASES])
def test_a_fault_in_a_stage_leaves_a_folder_that_resumes(stage, fault, reference, tmp_path,
                                                         monkeypatch):
    run = copy_run(reference, tmp_path / "run")
    cut_back(run, stage)
    config = tmp_path / "audit.yaml"
    config.write_text(json.dumps({**FIXED, "out": str(run)}))  # JSON is YAML

    with monkeypatch.context() as patch:
        renamed = inject(patch, stage, fault)
        result = invoke("run", config)
    if isinstance(fault, KeyboardInterrupt):
        assert result.exit_code == 130
        assert "interrupted: the run folder is consistent" in result.output
    else:
        assert result.exception is fault
    assert_interrupted_consistently(run, stage)
    # the fault came with one of the stage's files in place: a half-done stage, not done
    assert len(renamed) == 1 and Path(renamed[0]).is_relative_to(run)

    result = invoke("run", config)
    assert result.exit_code == 0, result.output
    for name in STAGES[:STAGES.index(stage)]:
        assert f"[{name}] up to date" in result.output
    assert f"[{stage}] done" in result.output
    resumed = json.loads((run / "results.json").read_text())
    uninterrupted = json.loads((reference / "results.json").read_text())
    assert without_volatile(resumed) == without_volatile(uninterrupted)
    assert all(r["done"] for r in json.loads((run / "manifest.json").read_text())
               ["stages"].values())


def test_the_fault_table_covers_every_stage() -> None:
    assert {s for s, _ in CASES} == set(STAGES) and len(CASES) == len(STAGES) + 1
