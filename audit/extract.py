"""Extract stage: one forward pass per batch records the chosen layers and the score.

::

    model = load_discriminator("builtin:digits-dcgan")
    store = extract(model, "auto", images, out=Path("run/activations/real"))
    store.read("blocks.2.1")     # N x D float16 (float32 beyond float16's range)
    store.scores()               # N float32, the model's realness output

Activations are pooled inside the forward hooks, on the model's device (``avg``,
``avgmax``, ``grid2``, ``flatten`` with a fixed seeded projection to at most ``max_dim``
features); only the pooled rows are copied to a host buffer of the shard
(:mod:`audit.shardbuffer`: pinned memory and non-blocking copies on CUDA, one wait per
shard) and each finished shard is written into an :class:`~audit.store.ActivationStore` on
a background thread while the next shard's forward passes run (:mod:`audit.writer`: one
shard in flight). Memory stays flat whatever the number of images (at most two shards), and
an interrupted run resumes from the first missing shard.

Under ``torchrun`` (see :mod:`audit.distributed`) the missing shards are split between the
ranks, each writes its own into the same store, and rank 0 checks them all and writes the
manifest; a failure on any rank fails every rank, naming it.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from audit.errors import DataError, LayerError, ModelLoadError
from audit.store import _RESERVED, ActivationStore, StoreSettings, shard_ranges, storage_array

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from audit.config import AuditConfig
    from audit.images import Batch, ImageSource
    from audit.load import LoadedModel
    from audit.shardbuffer import ShardBuffer, ShardRows

__all__ = ["extract", "extract_from_config", "resolve_layers", "pool_activation",
           "activations_to_store", "activations_in_memory", "InMemory",
           "DEFAULT_SHARD_IMAGES"]

Pooling = Literal["avg", "avgmax", "grid2", "flatten"]
POOLINGS = ("avg", "avgmax", "grid2", "flatten")
DEFAULT_SHARD_IMAGES = 8192


# ---------------------------------------------------------------- pooling


def _sketch(dim: int, max_dim: int, seed: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed count sketch: each of ``dim`` features goes to one of ``max_dim`` outputs with a
    random sign (seeded, so the same layer always gets the same projection)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    bucket = torch.randint(max_dim, (dim,), generator=g)
    sign = torch.randint(2, (dim,), generator=g).float() * 2 - 1
    return bucket.to(device), sign.to(device)


def pool_activation(t: torch.Tensor, pooling: Pooling, *, max_dim: int = 4096,
                    seed: int = 0) -> torch.Tensor:
    """Pool one layer's output to N x D float32.

    Parameters
    ----------
    t : Tensor
        N x C x (spatial...) (channels first, as convolutions give), or N x D.
    pooling : {"avg", "avgmax", "grid2", "flatten"}
        ``avg``: mean over spatial positions (D = C). ``avgmax``: mean and max (D = 2C).
        ``grid2``: average over a 2 x 2 grid (D = 4C for images). ``flatten``: every value;
        when there are more than ``max_dim``, a fixed random projection (a count sketch seeded
        by ``seed``: each value is added with a random sign to one of ``max_dim`` outputs).
        An N x D output is kept as is (flatten may still project it).
    """
    import torch
    import torch.nn.functional as F

    t = t.detach().float()
    if t.ndim == 1:
        t = t[:, None]
    if pooling == "flatten":
        flat = t.reshape(t.shape[0], -1)
        if flat.shape[1] <= max_dim:
            return flat
        bucket, sign = _sketch(flat.shape[1], max_dim, seed, flat.device)
        return flat.new_zeros(flat.shape[0], max_dim).index_add_(1, bucket, flat * sign)
    if t.ndim == 2:
        return t
    spatial = t.reshape(t.shape[0], t.shape[1], -1)
    if pooling == "avg":
        return spatial.mean(dim=2)
    if pooling == "avgmax":
        return torch.cat([spatial.mean(dim=2), spatial.amax(dim=2)], dim=1)
    if pooling == "grid2":
        pool = {3: F.adaptive_avg_pool1d, 4: F.adaptive_avg_pool2d, 5: F.adaptive_avg_pool3d}
        if t.ndim not in pool:
            raise LayerError(f"grid2 pooling needs 1-3 spatial dimensions, got a tensor of shape "
                             f"{tuple(t.shape)}; use avg or flatten for this layer.")
        return pool[t.ndim](t, 2).reshape(t.shape[0], -1)
    raise LayerError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}.")


def _layer_seed(projection_seed: int, layer: str) -> int:
    digest = hashlib.sha256(f"{projection_seed}/{layer}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------- layers


def resolve_layers(model: LoadedModel, layers: Sequence[str] | str, *,
                   include_batch_dependent: bool = False) -> list[str]:
    """``"auto"`` -> :func:`audit.load.auto_layers`; a list is checked against
    ``named_modules()`` (:class:`LayerError` with the closest names) and against modules
    called several times per forward pass (:func:`audit.models.probe.check_hook_points`)."""
    from audit.hooks import check_layers
    from audit.models.probe import auto_layers, check_hook_points

    if isinstance(layers, str):
        if layers != "auto":
            raise LayerError(f"layers must be 'auto' or a list of layer names, got {layers!r}.")
        return auto_layers(model, include_batch_dependent=include_batch_dependent)
    names = list(layers)
    check_layers(model.module, names)
    check_hook_points(model, names)
    reserved = [n for n in names if n in _RESERVED]
    if reserved:
        raise LayerError(f"layer name(s) {reserved} collide with the store's own folders; "
                         f"rename the modules.")
    return names


# ---------------------------------------------------------------- sources


class _Batches:
    """A dataset of whole batches, so that DataLoader workers build batches in parallel."""

    def __init__(self, source: ImageSource, batches: list[list[int]]) -> None:
        self.source = source
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> Batch:
        return self.source.get_batch(self.batches[k])


def _iter_batches(source: ImageSource, batches: list[list[int]], *, num_workers: int,
                  pin: bool) -> Iterator[Batch]:
    if source.in_process or num_workers == 0:
        for b in batches:
            yield source.get_batch(b)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(_Batches(source, batches), batch_size=None, shuffle=False,
                        num_workers=num_workers, pin_memory=pin, collate_fn=_identity)
    yield from loader


def _as_source(images: Any) -> ImageSource:
    import numpy as np
    import torch

    from audit.images import ImageSource, TensorSource

    if isinstance(images, ImageSource):
        return images
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, torch.Tensor):
        return TensorSource(images)
    raise DataError(f"images must be an image source, a tensor or an array, got "
                    f"{type(images).__name__}.")


def _identity(batch: Any) -> Any:
    return batch


# ---------------------------------------------------------------- extraction


def extract(model: LoadedModel, layers: Sequence[str] | str, images: Any, *, out: Path,
            pooling: Pooling = "avg", batch_size: int = 64, device: str = "cpu",
            max_dim: int = 4096, num_workers: int = 0, progress: bool = True,
            include_batch_dependent: bool = False, shard_size: int | None = None,
            precision: Literal["auto", "fp32", "bf16"] = "fp32",
            class_labels: Sequence[int] | None = None, projection_seed: int = 0,
            batch_seed: int = 0, given: Callable[[Any], Any] | None = None) -> ActivationStore:
    """Record pooled activations of ``layers`` and the score of every image.

    Parameters
    ----------
    model : LoadedModel
        From :func:`audit.load.load_discriminator`.
    layers : list of str or "auto"
        Module names (checked before the first pass) or ``"auto"``.
    images : ImageSource, Tensor or ndarray
        A source from :func:`audit.images.load_images`, or N x C x H x W already in the
        model's input range (ids ``"0"``, ``"1"``, ...).
    out : Path
        The store folder; an existing store with the same settings is resumed.
    pooling, max_dim : see :func:`pool_activation`.
    batch_size : int
        Images per forward pass: consecutive images in source order, so the batch
        composition is fixed by it (recorded in the manifest). A batch-dependent model
        (minibatch standard deviation): rounded up to whole groups, a seeded order within
        each shard, short batches padded (:mod:`audit.batches`, :func:`_batching`).
    device, num_workers, progress : str, int, bool
        ``cpu``, ``cuda``, ``mps`` or ``auto``; DataLoader workers decoding image files;
        a progress bar with images/s on stderr.
    include_batch_dependent : bool
        Let ``"auto"`` pick batch-dependent layers too.
    shard_size : int, optional
        Images per shard, rounded up to a multiple of ``batch_size``
        (default about :data:`DEFAULT_SHARD_IMAGES`).
    precision : {"fp32", "bf16", "auto"}
        Default fp32: audit numbers (the D score above all) stay exact. ``bf16``: autocast
        on CUDA, faster but rounds scores to about 3 significant digits; ``auto``: bf16 on
        CUDA, fp32 elsewhere. A model that fails under autocast runs in fp32.
    class_labels : sequence of int, optional
        Per-image class labels for a conditional model (default: its config's class_label);
        ignored by an unconditional one (whatever classes a generator was given).
    projection_seed, batch_seed : int
        Seeds of the flatten projection and of a batch-dependent model's batch order.
    given : callable, optional
        Renames paths in the store manifest's record of the model and images (a config's
        :func:`audit.config.as_given`: no directory of this disk); default: as resolved.

    Returns
    -------
    ActivationStore
        Complete: every shard written, manifest ``complete: true``.
    """
    from audit import distributed
    from audit.load import resolve_device

    _check_arguments(pooling, batch_size)
    device = distributed.device_for_rank(resolve_device(device))
    source = _as_source(images)
    settings, class_labels = _store_settings(
        model, layers, source, out, pooling=pooling, batch_size=batch_size, max_dim=max_dim,
        include_batch_dependent=include_batch_dependent, shard_size=shard_size,
        class_labels=class_labels, projection_seed=projection_seed, batch_seed=batch_seed)
    _check_ranks_agree(settings, out)
    rename = given or (lambda record: record)
    store, mine, opened = _open_store(out, settings, extra=rename(_describe(model, source)))
    _to_device(model, device)
    rank = distributed.current()
    distributed.all_succeed(
        lambda: _extract_to_store(model, source, store, mine,
                                  desc=f"extract {Path(out).name}", device=device,
                                  num_workers=num_workers,
                                  progress=progress and (rank is None or rank.is_main),
                                  precision=precision, class_labels=class_labels),
        what=f"extracting the shards of {out}")
    distributed.on_main(lambda: _finalize(store, model, source, rename),
                        what=f"checking the shards of every rank in {out} (the run folder "
                             f"must be shared by all machines)")
    return store if opened else ActivationStore.open(out)


@dataclass
class InMemory:
    """Activations recorded in memory by :func:`activations_in_memory`.

    ``features``: layer -> (N, D) float16 (float32 for a layer past float16's range: as a
    store keeps them); ``scores``: (N,)
    float32; ``image_ids``: N ids in source order (images skipped, unreadable or with
    non-finite activations, are left out and listed in ``skipped``); ``settings``: the
    batches, pooling and seeds used, as a store would record them; ``source``: the
    images (its ``labels`` table among them).
    """

    features: dict[str, np.ndarray]
    scores: np.ndarray
    image_ids: list[str]
    skipped: list[dict[str, str]]
    settings: StoreSettings
    source: ImageSource


def activations_in_memory(model: LoadedModel, images: Any, *,
                          layers: Sequence[str] | str = "auto", pooling: Pooling = "avg",
                          batch_size: int = 64, max_dim: int = 4096, device: str = "cpu",
                          progress: bool = False, include_batch_dependent: bool = False,
                          precision: Literal["auto", "fp32", "bf16"] = "fp32",
                          class_labels: Sequence[int] | None = None, projection_seed: int = 0,
                          batch_seed: int = 0) -> InMemory:
    """Record pooled activations and scores like :func:`extract`, but in memory: no store,
    no files. The same batches, pooling and seeds give the same numbers as a store of one
    shard; for sets that do not fit in memory, use :func:`extract`.

    Parameters are those of :func:`extract` (without ``out``, ``shard_size``,
    ``num_workers`` and ``given``). Returns an :class:`InMemory`.
    """
    import numpy as np

    from audit.load import resolve_device

    _check_arguments(pooling, batch_size)
    device = resolve_device(device)
    source = _as_source(images)
    settings, class_labels = _store_settings(
        model, layers, source, Path(), pooling=pooling, batch_size=batch_size,
        max_dim=max_dim, include_batch_dependent=include_batch_dependent,
        shard_size=max(len(source), 1), class_labels=class_labels,
        projection_seed=projection_seed, batch_seed=batch_seed)
    _to_device(model, device)
    shards: list[ShardRows] = []
    _extract_shards(model, source, settings, [0], on_shard=lambda _k, p: shards.append(p),
                    device=device, progress=progress, precision=precision,
                    class_labels=class_labels, desc="record activations")
    ids, acts, scores = _in_source_order(shards[0], settings.order_seed)
    # as a store keeps them (float16, float32 past its range): the API and the command
    # line decode the same numbers
    return InMemory(features={n: storage_array(a) for n, a in acts.items()},
                    scores=scores.astype(np.float32, copy=False), image_ids=[str(i) for i in ids],
                    skipped=list(shards[0].skipped), settings=settings, source=source)


def _to_device(model: LoadedModel, device: str) -> None:
    """Move ``model`` to ``device`` (once; its record says where it is)."""
    if model.device != device:
        model.module.to(device)
        model.device = device


def _check_arguments(pooling: str, batch_size: int) -> None:
    """Refuse an unknown pooling or a batch size under 1."""
    if pooling not in POOLINGS:
        raise LayerError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}.")
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}.")


def _store_settings(model: LoadedModel, layers: Sequence[str] | str, source: ImageSource,
                    out: Path, *, pooling: str, batch_size: int, max_dim: int,
                    include_batch_dependent: bool, shard_size: int | None,
                    class_labels: Sequence[int] | None, projection_seed: int,
                    batch_seed: int) -> tuple[StoreSettings, Sequence[int] | None]:
    """What decides the store's content (checked: the source holds images, the layers
    exist, the classes fit the model), and the class labels the model takes (None for an
    unconditional one, whatever classes the images carry)."""
    from audit import distributed

    if len(source) == 0:
        raise DataError(f"{source.spec}: no images to extract; give a source that holds "
                        f"readable images.")
    names = resolve_layers(model, layers, include_batch_dependent=include_batch_dependent)
    batch_size, order_seed, dependent = _batching(model, names, batch_size, batch_seed)
    if model.conditioning is None:
        class_labels = None     # an unconditional discriminator takes no classes
    _check_classes(model, source, class_labels)
    rank = distributed.current()
    world = rank.world_size if rank is not None else 1
    return StoreSettings(
        model_sha256=model.sha256, layers=tuple(names), pooling=pooling, max_dim=max_dim,
        batch_size=batch_size,
        shard_size=_shard_images(out, shard_size, batch_size, n_images=len(source), world=world),
        n_images=len(source), source_fingerprint=_with_classes(source.fingerprint,
                                                                class_labels),
        projection_seed=projection_seed, batch_dependent=dependent,
        order_seed=order_seed), class_labels


def _finalize(store: ActivationStore, model: LoadedModel, source: ImageSource,
              rename: Callable[[Any], Any]) -> None:
    """Rank 0: check every shard and write the manifest, with the source's record taken
    again (what generation saw, e.g. values clamped, is known only now) and how the model
    was batched."""
    from audit.batches import describe_batches

    s = store.settings
    store.finalize(extra=rename({"notes": list(model.notes), "source": source.describe(),
                                 "batches": describe_batches(model, batch_size=s.batch_size,
                                                             order_seed=s.order_seed)}))


def _batching(model: LoadedModel, names: list[str], batch_size: int, batch_seed: int
              ) -> tuple[int, int | None, tuple[str, ...]]:
    """How ``model`` is batched: the batch size (rounded up to whole minibatch-stddev groups),
    the seed of the batch order (None: source order) and the recorded ``names`` whose output
    depends on the other images of a batch (a warning names them)."""
    from audit.batches import full_batch_size, is_batch_dependent

    batch_size = full_batch_size(model, batch_size)
    order_seed = batch_seed if is_batch_dependent(model) else None
    dependent = tuple(n for n in names if n in model.batch_dependent_layers)
    if dependent:
        warnings.warn(f"layers {list(dependent)} depend on the other images in the batch: "
                      f"their activations hold only for batch size {batch_size} and this image "
                      f"order (both recorded in the store manifest).", stacklevel=4)
    return batch_size, order_seed, dependent


def _open_store(out: Path, settings: StoreSettings, *, extra: dict[str, Any]
                ) -> tuple[ActivationStore, list[int], bool]:
    """The store at ``out``, created or resumed by rank 0 (or the only process); the shards
    this process still has to write; and whether this process opened it (rank 0), so that
    the others open it again once rank 0 has finalised it."""
    from audit import distributed

    opened: list[ActivationStore] = []

    def open_store() -> list[int]:  # rank 0 (or the only process): the shards still to do
        opened.append(ActivationStore.create_or_resume(out, settings, extra=extra))
        return [k for k in range(len(opened[0].shard_ranges())) if not opened[0].has_shard(k)]

    todo = distributed.on_main(open_store, what=f"opening the store {out}")
    store = opened[0] if opened else ActivationStore.open(out, allow_incomplete=True)
    rank = distributed.current()
    mine = todo if rank is None else distributed.split_evenly(todo, rank.rank, rank.world_size)
    return store, mine, bool(opened)


def _extract_shards(model: LoadedModel, source: ImageSource, settings: StoreSettings,
                    shards: list[int], **options: Any) -> None:
    """Record ``shards``: hooks on the layers pool each output as ``settings`` say
    (:func:`pool_activation`, a seeded projection per layer), then :func:`_forward_shards`
    runs the forward passes (``options``: its keywords, ``on_shard`` among them)."""
    from audit.hooks import capture

    if not shards:
        return
    s = settings
    pooling: Any = s.pooling  # one of POOLINGS: checked before
    seeds = {n: _layer_seed(s.projection_seed, n) for n in s.layers}

    def pool(name: str, t: torch.Tensor) -> torch.Tensor:
        return pool_activation(t, pooling, max_dim=s.max_dim, seed=seeds[name])

    with capture(model.module, list(s.layers), transform=pool) as cap:
        _forward_shards(model, source, s, shards, cap=cap, **options)


def _extract_to_store(model: LoadedModel, source: ImageSource, store: ActivationStore,
                      shards: list[int], **options: Any) -> None:
    """Record ``shards`` into ``store`` (``options``: keywords of :func:`_forward_shards`):
    each finished shard is written on a background thread while the next shard's forward
    passes run (:class:`audit.writer.BackgroundWriter`: one shard in flight, its errors
    raised here)."""
    from audit.writer import BackgroundWriter

    with BackgroundWriter(_store_writer(store, shards), name="gan-audit-store") as write:
        _extract_shards(model, source, store.settings, shards, on_shard=write, **options)


def _shard_images(out: Path, shard_size: int | None, batch_size: int, *, n_images: int,
                  world: int) -> int:
    """Images per shard, a multiple of ``batch_size`` (so every process makes the same batches).

    Given: rounded up. Not given: the existing store's (so a rerun with another number of
    processes resumes it), else :data:`DEFAULT_SHARD_IMAGES`, but no more than an equal part
    per process so that every rank of a job has work.
    """
    from audit.store import stored_settings

    if shard_size is None:
        old = stored_settings(out)
        if old is not None and old.batch_size == batch_size and old.n_images == n_images:
            return old.shard_size
        shard_size = DEFAULT_SHARD_IMAGES if world == 1 else min(DEFAULT_SHARD_IMAGES,
                                                                 -(-n_images // world))
    return max(1, -(-shard_size // batch_size)) * batch_size


def _check_ranks_agree(settings: StoreSettings, out: Path) -> None:
    """Every rank must extract the same images with the same model and settings."""
    from audit import distributed
    from audit.store import settings_differences

    views = distributed.all_gather(settings)
    for r, theirs in enumerate(views[1:], start=1):
        diffs = settings_differences(views[0], theirs, label=("rank 0", f"rank {r}"))
        if diffs:
            raise distributed.DistributedError(
                f"rank {r} would extract something else than rank 0 into {out}: "
                + "; ".join(diffs) + ". Every rank must see the same config, model weights "
                "and images: put the run folder, the images and the weights on a filesystem "
                "shared by all machines (or identical copies at the same paths).")


def activations_to_store(model: LoadedModel, source: ImageSource, store: ActivationStore,
                         shards: list[int], *, cap: Any, device: str, num_workers: int = 0,
                         progress: bool = True, precision: str = "fp32",
                         class_labels: Sequence[int] | None = None) -> None:
    """Run the forward passes of the given shards and write each shard when it is full.

    The heavy loop of :func:`extract`, separate so that a distributed run can give each
    process its own shards of the same store. A batch-dependent model gets full batches in
    the store's seeded order (:mod:`audit.batches`); each shard's rows are written in
    source order.
    """
    from audit.writer import BackgroundWriter

    with BackgroundWriter(_store_writer(store, shards), name="gan-audit-store") as write:
        _forward_shards(model, source, store.settings, shards, cap=cap, on_shard=write,
                        device=device, num_workers=num_workers, progress=progress,
                        precision=precision, class_labels=class_labels,
                        desc=f"extract {Path(store.path).name}")


def _store_writer(store: ActivationStore, shards: list[int]
                  ) -> Callable[[int, ShardRows], None]:
    """What to do with each finished shard (on the writer's thread): check the disk has room
    for the rest, write it with its rows in source order."""
    ranges = shard_ranges(store.settings.n_images, store.settings.shard_size)
    total = sum(ranges[k][1] - ranges[k][0] for k in shards)
    written = 0

    def write(k: int, rows: ShardRows) -> None:
        nonlocal written
        written += len(rows.ids)
        _check_room(store, rows.acts, rows=len(rows.ids),
                    remaining=total - written + len(rows.ids))
        _write_pending(store, k, rows)

    return write


def _forward_shards(model: LoadedModel, source: ImageSource, settings: StoreSettings,
                    shards: list[int], *, cap: Any, on_shard: Callable[[int, ShardRows], None],
                    device: str, num_workers: int = 0, progress: bool = True,
                    precision: str = "fp32", class_labels: Sequence[int] | None = None,
                    desc: str = "extract") -> None:
    """The forward passes of ``shards`` (batches as ``settings`` say). Each shard's pooled
    rows and scores gather on the host (:class:`audit.shardbuffer.ShardBuffer`: one copy per
    layer and batch, pinned and non-blocking on CUDA) and go to ``on_shard(k, rows)`` once
    its last batch has run: written to a store, or kept in memory
    (:func:`activations_in_memory`)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from audit.batches import group_size, is_batch_dependent
    from audit.shardbuffer import ShardBuffer

    s = settings
    ranges = shard_ranges(s.n_images, s.shard_size)
    plan, owner = _batch_plan(ranges, shards, batch_size=s.batch_size, seed=s.order_seed)
    full = is_batch_dependent(model)
    group = group_size(model) if full else None
    last_batch_of = {o: i for i, o in enumerate(owner)}
    amp = precision == "bf16" or (precision == "auto" and device.startswith("cuda"))
    labels = None if class_labels is None else np.asarray(class_labels)
    pending: ShardBuffer | None = None
    bar = tqdm(total=sum(ranges[k][1] - ranges[k][0] for k in shards), unit="img",
               unit_scale=True, file=sys.stderr, disable=not progress, desc=desc, leave=False)
    try:
        with torch.inference_mode():
            for i, batch in enumerate(_iter_batches(source, plan, num_workers=num_workers,
                                                    pin=device.startswith("cuda"))):
                k = owner[i]
                if pending is None:
                    pending = ShardBuffer(s.layers, ranges[k][1] - ranges[k][0], device=device)
                pending.begin_batch(batch.skipped)
                if batch.image_ids:
                    amp = _record_batch(model, batch, pending, cap=cap, device=device,
                                        classes=labels, size=s.batch_size if full else None,
                                        group=group, amp=amp, first=i == 0, rows=plan[i])
                bar.update(len(plan[i]))
                if i == last_batch_of[k]:
                    rows = pending.finish(stop=source.on_bad_image == "stop")
                    source.skipped += rows.skipped
                    on_shard(k, rows)
                    pending = None
    finally:
        bar.close()


def _batch_plan(ranges: list[tuple[int, int]], shards: list[int], *, batch_size: int,
                seed: int | None) -> tuple[list[list[int]], list[int]]:
    """The batches of ``shards`` (source indices, in the store's order: consecutive, or
    seeded within each shard; :func:`audit.batches.batch_order`) and the shard of each."""
    from audit.batches import batch_order

    plan: list[list[int]] = []
    owner: list[int] = []
    for k in shards:
        for batch_indices in batch_order(*ranges[k], batch_size=batch_size, seed=seed):
            plan.append(batch_indices)
            owner.append(k)
    return plan, owner


def _record_batch(model: LoadedModel, batch: Batch, pending: ShardBuffer, *, cap: Any,
                  device: str, classes: np.ndarray | None, size: int | None, group: int | None,
                  amp: bool, first: bool, rows: list[int]) -> bool:
    """One forward pass over ``batch`` (filled up to ``size`` rows for a batch-dependent
    model); its images' pooled rows and scores go to ``pending`` (the padding rows' are left
    on the device); returns whether autocast is still on (:func:`_forward` may fall back to
    fp32)."""
    n = len(batch.image_ids)
    x = batch.images.to(device, non_blocking=True)
    c = None if classes is None else classes[batch.indices]
    x, c, pad = _fill_batch(x, c, size or n, group=group)
    pending.padded += pad
    out, amp = _forward(model, x, c, amp=amp, first=first)
    pending.add(cap.take(), model.scores(out[:n]), batch.image_ids,
                list(batch.indices or rows))
    return amp


def _write_pending(store: ActivationStore, k: int, rows: ShardRows) -> None:
    """Write shard ``k`` from what it gathered, its rows back in source order."""
    ids, acts, scores = _in_source_order(rows, store.settings.order_seed)
    store.write_shard(k, image_ids=ids, activations=acts, scores=scores,
                      skipped=rows.skipped, padded_rows=rows.padded)


def _in_source_order(rows: ShardRows, order_seed: int | None
                     ) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    """A shard's ids, activations per layer and scores, rows back in source order (a no-op,
    and no copy, when batches ran in source order: ``order_seed`` None)."""
    import numpy as np

    if order_seed is None:
        return list(rows.ids), dict(rows.acts), rows.scores
    order = np.argsort(np.asarray(rows.rows, dtype=np.int64), kind="stable")
    return ([rows.ids[j] for j in order], {n: a[order] for n, a in rows.acts.items()},
            rows.scores[order])


def _fill_batch(x: torch.Tensor, c: Any, size: int, *, group: int | None = None
                ) -> tuple[torch.Tensor, Any, int]:
    """Images ``x`` (N x C x H x W) and their classes ``c`` (N, or None) filled up to
    ``size`` rows with repeats of the batch's own images, never twice in one
    minibatch-stddev ``group`` when N >= its size (:func:`audit.batches.padding_rows`); and
    the number of rows added. The caller keeps the first N rows of every output."""
    import torch

    from audit.batches import padding_rows

    if len(x) >= size:
        return x, c, 0
    rows = padding_rows(len(x), size, group=group)
    filled = x[torch.as_tensor(rows, device=x.device)]
    return filled, None if c is None else c[rows], size - len(x)


def _check_room(store: ActivationStore, acts: dict[str, np.ndarray], *, rows: int,
                remaining: int) -> None:
    """Before a shard is written: stop with one message when the disk cannot hold what is
    left of the store (about ``remaining`` images at this shard's bytes per image)."""
    from audit.errors import RunFolderError
    from audit.io import free_bytes

    if rows == 0:
        return
    per_image = sum(2 * a.shape[1] for a in acts.values()) + 4
    needed = per_image * remaining
    free = free_bytes(Path(store.path))
    if needed > free:
        raise RunFolderError(
            f"{store.path}: the disk is too full for the activations: about "
            f"{needed / 2**20:,.1f} MiB are needed for {remaining} more images, "
            f"{free / 2**20:,.1f} MiB are free. Free some space or choose an output folder "
            f"on a larger disk (--out); shards already written are kept and a rerun resumes.")


def _forward(model: LoadedModel, x: torch.Tensor, c: Any, *, amp: bool,
             first: bool) -> tuple[torch.Tensor, bool]:
    """One forward pass (bf16 autocast if ``amp``); on the first batch, a failure under
    autocast falls back to fp32, and a failure in fp32 says what the images looked like."""
    import torch

    try:
        if amp:
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                return model.forward(x, c), True
        return model.forward(x, c), False
    except (LayerError, ModelLoadError):
        raise
    except Exception as exc:
        if not first:
            raise
        if amp:
            model.notes.append(f"bf16 autocast failed ({type(exc).__name__}); ran in fp32")
            return _forward(model, x, c, amp=False, first=True)
        raise ModelLoadError(
            f"{model.spec}: the model failed on the first batch of images "
            f"({' x '.join(map(str, x.shape))}, values {float(x.min()):.2f}..{float(x.max()):.2f})"
            f": {type(exc).__name__}: {exc}. Check the discriminator's image_size, channels "
            f"and value_range against what the model expects.") from exc


def _describe(model: LoadedModel, source: ImageSource) -> dict[str, Any]:
    import torch

    return {"model": {"spec": model.spec, "sha256": model.sha256, "dtype": model.dtype,
                      "identity": model.identity,
                      "input": {"image_size": model.input.image_size,
                                "channels": model.input.channels,
                                "value_range": list(model.input.value_range)}},
            "source": source.describe(), "torch": torch.__version__}


# ---------------------------------------------------------------- from a config


def extract_from_config(cfg: AuditConfig, *, out: Path | None = None, device: str | None = None,
                        progress: bool = True) -> dict[str, ActivationStore]:
    """Extract every image set a config names into ``RUN_DIR/activations/<name>/``.

    ``paired`` (labels required), ``real`` and ``generated`` (sampled from the generator,
    or a folder of images). The same layers are recorded for all three (``auto`` is
    resolved once). Each store also gets ``labels.parquet``; sampled images are written as
    PNGs under ``RUN_DIR/generated/`` when the generator config says ``save_png``.

    Under ``torchrun`` (a process group joined with :func:`audit.distributed.process_group`)
    each rank extracts, and samples, its own shards of every store, on its own GPU
    (``LOCAL_RANK``); rank 0 finalises the manifests and writes the labels tables. The
    stores hold the same images, ids and activations as one process would write.

    Returns
    -------
    dict
        ``{"paired": store, "real": store, "generated": store}``.
    """
    from audit import distributed
    from audit.batches import full_batch_size
    from audit.concepts import load_concept_set
    from audit.config import as_given
    from audit.images import generated_images, load_images
    from audit.load import load_discriminator, resolve_device

    run_dir = Path(out if out is not None else cfg.out)
    device = distributed.device_for_rank(resolve_device(device or cfg.device))
    d = cfg.discriminator
    concept_set = load_concept_set(cfg.concept_set)
    model = load_discriminator(d, device=device)
    layers = resolve_layers(model, d.layers, include_batch_dependent=d.include_batch_dependent)
    batch_size = full_batch_size(model, d.batch_size)   # rounded (and said) once for all stores
    classes = d.class_source
    sources: dict[str, ImageSource] = {
        "paired": load_images(cfg.paired, concept_set=concept_set, input=model.input,
                              require_labels=True, class_source=classes, run_dir=run_dir),
        "real": load_images(cfg.real, concept_set=concept_set, input=model.input,
                            class_source=classes, run_dir=run_dir),
    }
    g = cfg.generator
    sources["generated"] = generated_images(
        cfg, concept_set=concept_set, input=model.input, device=device, run_dir=run_dir,
        png_dir=run_dir / "generated" if g is not None and g.save_png else None)
    generated = sources["generated"].class_labels
    if (model.conditioning is not None and classes is None and generated is not None
            and len(set(generated.tolist())) > 1):
        warnings.warn(f"the generated images carry {len(set(generated.tolist()))} classes but "
                      f"every real image is scored with discriminator.class_label "
                      f"({d.class_label}); real and generated scores then compare different "
                      f"classes. Give the real images their classes with "
                      f"discriminator.class_source.", stacklevel=2)
    stores = {}
    for name, source in sources.items():
        store = extract(model, layers, source, out=run_dir / "activations" / name,
                        pooling=d.pooling, batch_size=batch_size, device=device,
                        max_dim=d.max_dim, progress=progress, precision=d.precision,
                        include_batch_dependent=d.include_batch_dependent,
                        class_labels=source.class_labels,
                        given=lambda record: as_given(cfg, record))
        if distributed.is_main():
            store.write_labels(source.labels)
        stores[name] = store
    return stores


def _check_classes(model: LoadedModel, source: ImageSource,
                   class_labels: Sequence[int] | None) -> None:
    """Refuse class labels that do not fit the conditional model, naming the first image."""
    if class_labels is None:
        return
    import numpy as np

    from audit.load import class_count

    labels = np.asarray(class_labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(source):
        raise DataError(f"{len(labels)} class labels for {len(source)} images; give one per "
                        f"image.")
    k = class_count(model)
    bad = np.flatnonzero((labels < 0) | (labels >= k if k else False))
    if len(bad):
        where = f"0..{k - 1}" if k else "0 or more"
        raise DataError(f"image {source.image_ids[bad[0]]!r} has class {int(labels[bad[0]])}, "
                        f"but {model.spec} takes classes {where} ({len(bad)} image(s) out of "
                        f"range). Fix the class labels (class_source, its values mapping) or "
                        f"num_classes.")


def _with_classes(fingerprint: str, class_labels: Sequence[int] | None) -> str:
    """The source fingerprint, and the images' class labels when there are any: other
    classes give other scores, so a store made with them is not resumed."""
    if class_labels is None:
        return fingerprint
    import numpy as np

    labels = np.asarray(class_labels, dtype=np.int64)
    return hashlib.sha256(fingerprint.encode() + labels.tobytes()).hexdigest()
