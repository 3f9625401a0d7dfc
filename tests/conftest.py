"""Shared fixtures: tiny models and seeded data, so tests run in seconds on a CPU.

Later stages extend this file; keep fixtures small and seeded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

# Two cores are shared by everything here: keep torch to one thread in tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
#: The shared demo run's command line (fixture ``demo_run``): the README's, run in a folder.
DEMO_ARGV = ["demo", "--out", "reports/demo"]


#: The test files that take longest (seconds on two workers: pytest --durations=0), heaviest
#: first. pytest-xdist's ``--dist loadfile`` hands files to workers in queue order; by default
#: it queues the files with the most tests first, so the files of one or a few long tests
#: (the README walk-through, the browser, torchrun) came last, run by one worker while the
#: other had nothing left. test_demo_run builds the shared demo run (``demo_run``) that the
#: walk-through copies: it goes first and the walk-through later, so that no worker waits.
HEAVY_FIRST = (
    "test_demo_run.py", "test_bad_inputs.py", "test_distributed.py",
    "test_run_folder_security.py", "test_faults.py", "test_families.py", "test_track_run.py",
    "test_demo_checkpoints.py", "test_report.py", "test_compliance_walkthrough.py",
    "test_serve_browser.py", "test_serve.py", "test_measure_results.py",
    "test_measure_scale.py", "test_pipeline.py", "test_api_doctests.py", "test_api_front.py",
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, queue the files in collection order (see HEAVY_FIRST)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of HEAVY_FIRST first, in its order; each file's tests, and the other files,
    keep their order (the sort is stable)."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def shared_folder(tmp_path_factory: pytest.TempPathFactory, name: str,
                  build: Callable[[Path], None]) -> Path:
    """A folder that ``build`` fills once per test session, for every xdist worker.

    Under pytest-xdist each worker is a process with its own session: the first to ask
    builds the folder below the session's common temporary folder (the parent of the
    workers' own, pytest-xdist's recipe), holding a file lock; the others wait for it and
    reuse the folder. A folder left by a failed build is built again. Tests must not change
    what they get: a test that writes copies it first (shutil.copytree).
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER") is not None:
        root = root.parent  # the session's, common to the workers (the base is not: it lasts)
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    """``gan-audit demo --out reports/demo`` (PDF included) run in a folder of its own, once
    per test session, and shared (read-only: copy it to change it); returns the run folder
    and the command's stdout. test_demo_run.py checks what it finds; the README's
    walk-through (test_compliance_walkthrough.py) continues from a copy."""
    def build(folder: Path) -> None:
        from click.testing import CliRunner

        from audit.cli import cli

        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(folder)  # --out is relative, as in the README
            result = CliRunner().invoke(cli, DEMO_ARGV)
        assert result.exit_code == 0, result.output + repr(result.exception)
        (folder / "stdout.txt").write_text(result.stdout, encoding="utf-8")

    folder = shared_folder(tmp_path_factory, "demo", build)
    return folder / DEMO_ARGV[-1], (folder / "stdout.txt").read_text(encoding="utf-8")


@pytest.fixture
def quick_batch_norm(monkeypatch) -> None:
    """The demo trainer recalibrates batch norm on 2 batches, not 50 (most of a tiny training
    run's time), for tests whose assertions do not depend on the count."""
    import functools

    from audit.demo import train as train_module

    monkeypatch.setattr(train_module, "_recalibrate_batch_norm", functools.partial(
        train_module._recalibrate_batch_norm, batches=2))


@pytest.fixture(scope="session")
def cs():
    """The demo's concept set (digit, and the protected tone and stroke)."""
    from audit.concepts import load_concept_set

    return load_concept_set("digits_tone")


@pytest.fixture
def tiny_discriminator():
    """A two-conv-layer discriminator for 1 x 16 x 16 images; returns one logit per image."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),   # "0": 4 x 8 x 8
        nn.LeakyReLU(0.2),                          # "1"
        nn.Conv2d(4, 8, 3, stride=2, padding=1),   # "2": 8 x 4 x 4
        nn.LeakyReLU(0.2),                          # "3"
        nn.Flatten(),                               # "4"
        nn.Linear(8 * 4 * 4, 1),                    # "5"
    )
    return model.eval()


@pytest.fixture
def tiny_images():
    """32 seeded images, 1 x 16 x 16, values in [-1, 1]."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.rand(32, 1, 16, 16, generator=g) * 2 - 1
