"""Several processes, one job: ranks, devices and failures under ``torchrun``.

::

    torchrun --nproc-per-node 4 -m audit extract audit.yaml

``torchrun`` starts one process per rank and tells each who it is through environment
variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). :func:`process_group` reads them and joins PyTorch's process group:
``nccl`` when the work runs on CUDA, ``gloo`` otherwise. Each rank then takes its part of
the work with :func:`split_evenly` (contiguous, disjoint, no padding duplicates) and the
ranks agree on every step with :func:`all_succeed` and :func:`on_main`: a failure on any
rank becomes a :class:`DistributedError` on every rank, naming the rank and the cause, so
no rank waits forever for another that has given up.

The ranks exchange only small control messages (settings, shard lists, errors), never
activations: every rank writes its own shards into the shared run folder. Those messages
travel over a ``gloo`` group, also when the default group is ``nccl``, so a rank waiting
for a slower one waits on the CPU, up to :data:`DEFAULT_TIMEOUT`.

Outside ``torchrun`` (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) every helper degrades to the
single-process case: :func:`all_succeed` and :func:`on_main` just call the function.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

from audit.errors import AuditError

__all__ = ["RankInfo", "DistributedError", "rank_from_env", "backend_for", "device_for_rank",
           "split_evenly", "process_group", "current", "is_main", "barrier", "all_gather",
           "all_succeed", "on_main", "local_command", "free_port", "DEFAULT_TIMEOUT"]

T = TypeVar("T")

#: How long a rank waits for the others at a collective step (a slow rank finishing its
#: shards, rank 0 finalising a store) before giving up.
DEFAULT_TIMEOUT = timedelta(hours=24)

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(AuditError):
    """A rank failed (or the ranks disagree); raised on every rank with the same message."""


@dataclass(frozen=True)
class RankInfo:
    """Who this process is in a ``torchrun`` job.

    Attributes
    ----------
    rank : int
        Global rank, 0 .. world_size - 1. Rank 0 writes manifests and prints results.
    world_size : int
        Number of processes in the job (all machines).
    local_rank : int
        Rank on this machine: the index of its GPU.
    local_world_size : int
        Processes on this machine.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise DistributedError(f"environment variable {name}={text!r} is not an integer; it is "
                               f"set by torchrun, so start the job with `torchrun ... -m audit "
                               f"...` rather than setting it by hand.") from None


def rank_from_env(environ: Mapping[str, str] | None = None) -> RankInfo:
    """Read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``.

    Missing variables mean one process (rank 0 of 1). Raises :class:`DistributedError`
    for values that cannot describe a job (a rank outside ``0 .. WORLD_SIZE - 1``).
    """
    env = os.environ if environ is None else environ
    world = _int_env(env, "WORLD_SIZE", 1)
    rank = _int_env(env, "RANK", 0)
    local_world = _int_env(env, "LOCAL_WORLD_SIZE", world)
    local = _int_env(env, "LOCAL_RANK", rank % max(local_world, 1))
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} and WORLD_SIZE={world} do not describe a job "
                               f"(need 0 <= RANK < WORLD_SIZE); start it with torchrun.")
    if not 0 <= local < max(local_world, 1):
        raise DistributedError(f"LOCAL_RANK={local} and LOCAL_WORLD_SIZE={local_world} do not "
                               f"describe a job (need 0 <= LOCAL_RANK < LOCAL_WORLD_SIZE).")
    return RankInfo(rank=rank, world_size=world, local_rank=local, local_world_size=local_world)


def backend_for(device: str) -> Literal["gloo", "nccl"]:
    """``nccl`` for CUDA devices, ``gloo`` for everything else (CPU, MPS)."""
    return "nccl" if device.startswith("cuda") else "gloo"


def device_for_rank(device: str, info: RankInfo | None = None) -> str:
    """The device of this rank: plain ``cuda`` becomes ``cuda:<LOCAL_RANK>`` in a job of
    several processes; ``cpu``, ``mps`` and an explicit ``cuda:N`` are kept."""
    info = info if info is not None else current() or RankInfo()
    if device == "cuda" and info.distributed:
        return f"cuda:{info.local_rank}"
    return device


def split_evenly(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s part of ``items``: contiguous, in order, sizes differing by at most one.

    The parts of ranks ``0 .. world_size - 1`` are disjoint and together are ``items`` in
    order; nothing is repeated to even them out (a rank may get nothing).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    n = len(items)
    return list(items[rank * n // world_size:(rank + 1) * n // world_size])


# ---------------------------------------------------------------- the process group

_control: dict[str, Any] = {}


def current() -> RankInfo | None:
    """This process's place in an initialised process group of several ranks, else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    rank, world = dist.get_rank(), dist.get_world_size()
    env = rank_from_env()
    if env.world_size == world:
        return RankInfo(rank=rank, world_size=world, local_rank=env.local_rank,
                        local_world_size=env.local_world_size)
    # joined without torchrun's variables (e.g. torch.multiprocessing.spawn): one machine
    return RankInfo(rank=rank, world_size=world, local_rank=rank, local_world_size=world)


def is_main() -> bool:
    """Rank 0, or the only process."""
    info = current()
    return info is None or info.is_main


@contextmanager
def process_group(device: str, *, environ: Mapping[str, str] | None = None,
                  timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[RankInfo]:
    """Join the ``torchrun`` job described by the environment, for the block.

    Parameters
    ----------
    device : str
        The resolved device (``cpu``, ``cuda``, ``mps``): picks the backend
        (:func:`backend_for`); on CUDA, this rank's GPU is ``LOCAL_RANK``.
    environ : mapping, optional
        The environment (default ``os.environ``).
    timeout : timedelta
        How long a rank waits for the others at a collective step.

    Yields
    ------
    RankInfo
        ``world_size == 1`` (and nothing initialised) outside torchrun.
    """
    import torch
    import torch.distributed as dist

    env = os.environ if environ is None else environ
    info = rank_from_env(env)
    if not info.distributed:
        yield info
        return
    if dist.is_initialized():  # joined already (by the caller): use it, leave it open
        yield current() or info
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise DistributedError(f"WORLD_SIZE={info.world_size} but {' and '.join(missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} not set; start the job "
                               f"with `torchrun --nproc-per-node N -m audit ...`, which sets "
                               f"them.")
    backend = backend_for(device)
    if backend == "nccl":
        count = torch.cuda.device_count()
        if info.local_rank >= count:
            raise DistributedError(f"rank {info.rank}: LOCAL_RANK={info.local_rank} but only "
                                   f"{count} GPU(s) are visible on this machine; start at most "
                                   f"{count} processes per machine (--nproc-per-node {count}).")
        torch.cuda.set_device(info.local_rank)
    try:
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size,
                                init_method=f"tcp://{env['MASTER_ADDR']}:{env['MASTER_PORT']}",
                                timeout=timeout)
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"rank {info.rank}: could not join the job at "
                               f"{env.get('MASTER_ADDR')}:{env.get('MASTER_PORT')} "
                               f"({backend}): {exc}") from exc
    _control["timeout"] = timeout
    try:
        yield info
    finally:
        _control.clear()
        dist.destroy_process_group()


def _group() -> Any:
    """The group for control messages: the default one if it is gloo, else a gloo group
    (made once, by every rank, the first time it is needed)."""
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return None
    if "group" not in _control:
        _control["group"] = dist.new_group(backend="gloo",
                                           timeout=_control.get("timeout", DEFAULT_TIMEOUT))
    return _control["group"]


def barrier() -> None:
    """Wait until every rank is here (nothing to do in one process)."""
    import torch.distributed as dist

    if current() is not None:
        dist.barrier(group=_group())


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    import torch.distributed as dist

    info = current()
    if info is None:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj, group=_group())
    return out


def _failure(exc: BaseException) -> str:
    if isinstance(exc, AuditError):
        return str(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1:] or None
    where = f" (at {frame[0].filename}:{frame[0].lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _raise_failures(failures: list[str | None], what: str,
                    cause: BaseException | None) -> None:
    bad = [(r, f.rstrip(". ")) for r, f in enumerate(failures) if f is not None]
    if not bad:
        return
    if len(bad) == 1:
        head = f"rank {bad[0][0]} of {len(failures)} failed while {what}: {bad[0][1]}"
    else:
        head = (f"ranks {', '.join(str(r) for r, _ in bad)} of {len(failures)} failed while "
                f"{what}: " + "; ".join(f"rank {r}: {f}" for r, f in bad))
    raise DistributedError(f"{head}. Fix the cause and run the same command again: finished "
                           f"shards are kept and only the missing ones are redone.") from cause


def _record(exc: BaseException) -> None:
    """Leave this rank's error where torchrun looks for it (``TORCHELASTIC_ERROR_FILE``), so
    torchrun's summary names this rank, with its error, as the root cause."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    import warnings

    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ErrorHandler().record_exception(exc)


def all_succeed(fn: Callable[[], T], *, what: str) -> T:
    """Run ``fn`` on every rank; if it fails on any, raise on every rank.

    Every rank reaches the exchange of outcomes whatever happened to it, so a failure on
    one rank never leaves the others waiting. In one process, ``fn()`` is returned (and
    its errors raised) unchanged.

    Parameters
    ----------
    fn : callable
        This rank's part of the step.
    what : str
        The step, for the message (``"extracting shards of real"``).

    Raises
    ------
    DistributedError
        Naming each failed rank and its error (chained to the local error on that rank).
    """
    if current() is None:
        return fn()
    result: Any = None
    error: Exception | None = None
    try:
        result = fn()
    except Exception as exc:  # reported to every rank below
        error = exc
        _record(exc)
    _raise_failures(all_gather(None if error is None else _failure(error)), what, error)
    return result


def on_main(fn: Callable[[], T], *, what: str) -> T:
    """Run ``fn`` on rank 0 and give its result (picklable) to every rank.

    A failure on rank 0 is raised on every rank as :class:`DistributedError`. In one
    process, ``fn()`` is returned (and its errors raised) unchanged.
    """
    import torch.distributed as dist

    info = current()
    if info is None:
        return fn()
    box: list[Any] = [None]
    error: Exception | None = None
    if info.is_main:
        try:
            box[0] = (fn(), None)
        except Exception as exc:  # reported to every rank below
            error = exc
            _record(exc)
            box[0] = (None, _failure(exc))
    dist.broadcast_object_list(box, src=0, group=_group())
    result, failure = box[0]
    _raise_failures([failure] + [None] * (info.world_size - 1), what, error)
    return result


# ---------------------------------------------------------------- launching on one machine


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for ``--master-port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def local_command(args: Sequence[str], *, nproc: int, port: int | None = None,
                  host: str = "127.0.0.1") -> tuple[list[str], dict[str, str]]:
    """The ``torchrun`` command (and environment) running ``python -m <args>`` as ``nproc``
    processes of this machine over loopback, one CPU thread each.

    ``local_command(["audit", "extract", "audit.yaml"], nproc=2)`` is
    ``python -m torch.distributed.run --nproc-per-node 2 --master-addr 127.0.0.1
    --master-port <free> -m audit extract audit.yaml``.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--nnodes", "1", "--master-addr", host, "--master-port", str(port or free_port(host)),
           "--monitor-interval", "0.2", "-m", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if sys.platform.startswith("linux") and host.startswith("127."):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return cmd, env
