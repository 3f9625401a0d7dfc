"""Peak memory of the benchmark's own process, shared by the benchmarks that measure it in
a fresh child process (not a benchmark itself: ``make bench`` skips ``_*.py``)."""

from __future__ import annotations

from pathlib import Path


def own_peak_rss_mib() -> float:
    """This process's peak RSS in MiB: Linux's VmHWM, the high-water mark of its own memory
    since exec. (``ru_maxrss`` would do elsewhere, but on Linux a child started by vfork,
    as subprocess does, starts with the parent's peak in it: a benchmark's parent that held
    its data would be measured instead of the child.)"""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024                         # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # kB elsewhere
