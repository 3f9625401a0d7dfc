"""Set-up from nothing: `make demo` on a fresh clone, with uv against pip alone.

Issue #24's goal 4: `make demo` on a fresh clone (set-up included) in <= 45 s on this
machine. Each path clones the repository's committed HEAD into a temporary folder and runs
`make demo` there from nothing (no .venv), timing the wall clock:

* uv: tools/setup-venv.sh as `make demo` runs it (uv fetched into .venv/.uv, torch, the
  project and pip in one uv step, no byte-compiling at install);
* pip: the same script with ``GAN_AUDIT_NO_UV=1``: ensurepip, then pip installs torch and
  the project (and byte-compiles everything, pip's default): the set-up before issue #24.

Both use the machine's package caches as they are (uv's and pip's; the first run on a new
machine downloads once more) and the local torch wheel where PIP_FIND_LINKS names one. The
set-up's own seconds (from the Makefile's start to the demo's first stage) and the demo's
stages (as the demo prints them) are shown apart. The last line is
``ratio=<pip seconds / uv seconds>`` (the speedup of the whole `make demo`).

    .venv/bin/python benchmarks/setup.py            # both paths, one `make demo` each
    .venv/bin/python benchmarks/setup.py --quick    # uv only, set-up, no demo (last line:
                                                    # setup_seconds=, not a ratio)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_S = 45.0


def fresh_clone(parent: Path, name: str) -> Path:
    """A clone of the repository's committed HEAD (what CI and a new user get)."""
    out = parent / name
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(out)], check=True)
    return out


def make(clone: Path, target: str, *, pip_only: bool) -> tuple[float, str]:
    """Wall seconds of ``make TARGET`` in ``clone``, and its output (stdout + stderr)."""
    env = {**os.environ, "GAN_AUDIT_NO_UV": "1" if pip_only else ""}
    start = time.perf_counter()
    proc = subprocess.run(["make", "-C", str(clone), target], env=env, capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"make {target} failed in {clone} (exit {proc.returncode}):\n"
                         f"{output[-3000:]}")
    return seconds, output


def stages_line(output: str) -> str:
    """The demo's "stages: ..." line, or a note that it printed none."""
    match = re.search(r"^stages: .*$", output, re.M)
    return match.group(0) if match else "(no stages line)"


def stage_total(output: str) -> float:
    match = re.search(r"\(total ([0-9.]+) s\)", output)
    return float(match.group(1)) if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="time the uv set-up alone (no demo, no pip path)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gan-audit-setup-") as tmp:
        if args.quick:
            clone = fresh_clone(Path(tmp), "uv")
            seconds, _ = make(clone, ".venv/.gan-audit-base", pip_only=False)
            print(f"uv set-up (no demo): {seconds:.1f} s wall")
            print("--quick: the pip path and the demo are not run: no speedup, no claim")
            print(f"setup_seconds={seconds:.1f}")
            return
        results = {}
        for path in ("uv", "pip"):
            clone = fresh_clone(Path(tmp), path)
            seconds, output = make(clone, "demo", pip_only=path == "pip")
            stages = stage_total(output)
            results[path] = seconds
            print(f"{path:>4}: make demo from nothing {seconds:6.1f} s wall (set-up, start-up "
                  f"and imports {seconds - stages:5.1f} s, demo stages {stages:5.1f} s)")
            print(f"      {stages_line(output)}")
        verdict = "met" if results["uv"] <= GOAL_S else "missed"
        print(f"goal <= {GOAL_S:.0f} s with uv: {verdict}")
        print(f"ratio={results['pip'] / results['uv']:.2f}")


if __name__ == "__main__":
    main()
