"""The activation store: pooled layer activations on disk, in float16 shards (float32 for a
shard of a layer whose values exceed float16's range).

Layout of a store folder::

    manifest.json              settings, layers with pooling and dim, image ids in order,
                               shard list, skipped images, "complete": true once all are written
    <layer>/shard-00000.npy    float16 (float32 where a value exceeds float16's range),
                               rows x dim (one folder per layer)
    _scores/shard-00000.npy    float32, rows: the model's output score per image
    _shards/shard-00000.json   the shard's image ids and skipped images; written last, so a
                               shard counts as present only when all its files are
    labels.parquet             optional: the labels table of the images (image_id + concepts)

Shard ``k`` covers images ``[k * shard_size, (k + 1) * shard_size)`` of the source, in
source order; every file is written atomically (temp file + rename). A rerun with the same
settings skips shards already present and valid, so an interrupted extraction resumes;
shards are independent files, so several processes (ranks) can each write their own and one
of them finalises the manifest. A store made with other settings (model, layers, pooling,
batch size, images) is refused with a message saying what differs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.errors import RunFolderError
from audit.io import atomic_path, atomic_write_json, ensure_dir

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

__all__ = ["ActivationStore", "StoreSettings", "shard_ranges", "settings_differences",
           "stored_settings", "STORE_FORMAT"]

STORE_FORMAT = 1
_SCORES = "_scores"
_SHARDS = "_shards"
_RESERVED = (_SCORES, _SHARDS)


_FLOAT16_MAX = 65504.0


def storage_array(values: Any) -> np.ndarray:
    """``values`` as stored: float16, or float32 where a finite value exceeds float16's range."""
    import numpy as np

    arr = np.asarray(values)
    with np.errstate(invalid="ignore"):
        big = bool(np.any(np.abs(arr[np.isfinite(arr)]) > _FLOAT16_MAX)) if arr.size else False
    return arr.astype(np.float32 if big else np.float16, copy=False)


@dataclass(frozen=True)
class StoreSettings:
    """Everything that decides the content of a store; a resume must match all of it.

    ``batch_size`` and the shard layout fix the batch composition (consecutive images in
    source order, or with ``order_seed`` a seeded random order within each shard; see
    :mod:`audit.batches`), which matters for batch-dependent models.
    """

    model_sha256: str
    layers: tuple[str, ...]
    pooling: str
    max_dim: int
    batch_size: int
    shard_size: int
    n_images: int
    source_fingerprint: str
    projection_seed: int = 0
    batch_dependent: tuple[str, ...] = ()
    order_seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers)
        data["batch_dependent"] = list(self.batch_dependent)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreSettings:
        data = dict(data)
        data["layers"] = tuple(data["layers"])
        data["batch_dependent"] = tuple(data.get("batch_dependent", ()))
        return cls(**data)


_WHAT = {"model_sha256": "model (weights sha256)", "layers": "layers", "pooling": "pooling",
         "max_dim": "max_dim", "batch_size": "batch size", "shard_size": "shard size",
         "n_images": "number of images", "source_fingerprint": "images (source fingerprint)",
         "projection_seed": "projection seed", "batch_dependent": "batch-dependent layers",
         "order_seed": "batch order seed"}


def shard_ranges(n_images: int, shard_size: int) -> list[tuple[int, int]]:
    """Half-open image index ranges of the shards: [(0, s), (s, 2s), ..., (.., n)]."""
    return [(start, min(n_images, start + shard_size)) for start in range(0, n_images, shard_size)]


def settings_differences(old: StoreSettings | dict[str, Any], new: StoreSettings, *,
                         label: tuple[str, str] = ("store", "now")) -> list[str]:
    """Each setting that differs, as ``"<what> (<label0>: <old>, <label1>: <new>)"``."""
    a = old.to_json() if isinstance(old, StoreSettings) else old
    b = new.to_json()
    return [f"{_WHAT.get(k, k)} ({label[0]}: {_short(a.get(k))}, {label[1]}: {_short(b[k])})"
            for k in b if a.get(k) != b[k]]


def stored_settings(path: str | Path) -> StoreSettings | None:
    """The settings of the store at ``path``, or None when there is none yet."""
    manifest = _read_manifest(Path(path))
    if manifest is None:
        return None
    try:
        return StoreSettings.from_json(manifest["settings"])
    except (TypeError, KeyError):
        return None


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}"


class ActivationStore:
    """A folder of pooled activations (see the module docstring for the layout).

    Open a finished store with :meth:`open`; :func:`audit.extract.extract` creates one.
    """

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._ids: list[str] | None = None

    # ------------------------------------------------------------ reading

    @classmethod
    def open(cls, path: str | Path, *, allow_incomplete: bool = False) -> ActivationStore:
        """Open a store folder.

        Raises :class:`RunFolderError` when the folder holds no store, a store of another
        format, or (unless ``allow_incomplete``) an unfinished one.
        """
        from audit.runfolder import refuse_links

        path = refuse_links(Path(path))
        manifest = _read_manifest(path)
        if manifest is None:
            raise RunFolderError(f"{path}: no activation store here (manifest.json is missing). "
                                 f"Run `gan-audit extract CONFIG` first.")
        if not allow_incomplete and not manifest.get("complete"):
            raise RunFolderError(f"{path}: the activation store is incomplete (an extraction was "
                                 f"interrupted). Run the same extract command again to resume.")
        return cls(path, manifest)

    @property
    def settings(self) -> StoreSettings:
        return StoreSettings.from_json(self.manifest["settings"])

    @property
    def layers(self) -> list[str]:
        """Layer names in the order they were requested."""
        return list(self.manifest["settings"]["layers"])

    @property
    def dims(self) -> dict[str, int]:
        """Feature count per layer after pooling."""
        return {name: int(v["dim"]) for name, v in self.manifest.get("layer_dims", {}).items()}

    @property
    def image_ids(self) -> list[str]:
        """Ids of the stored images, in row order (skipped images left out)."""
        if self._ids is None:
            if self.manifest.get("complete"):
                self._ids = list(self.manifest["image_ids"])
            else:
                self._ids = [i for s in self._present_shards() for i in
                             json.loads(self._meta_path(s).read_text())["image_ids"]]
        return self._ids

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Images that could not be read: ``{"image_id", "reason"}`` each."""
        return list(self.manifest.get("skipped", []))

    @property
    def info(self) -> dict[str, Any]:
        """The manifest (settings, layer dims, counts, source description)."""
        return self.manifest

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    def _files(self, folder: str) -> list[Path]:
        return [self.path / folder / f"{_shard_name(s)}.npy" for s in self._present_shards()]

    def read(self, layer: str) -> np.ndarray:
        """Activations of ``layer``: N x D float16 (float32 if a shard needed it), rows in
        :attr:`image_ids` order.

        Shards are memory-mapped; several shards are concatenated into one array.
        """
        import numpy as np

        if layer not in self.layers:
            from audit.errors import LayerError
            from audit.hooks import closest_names

            close = closest_names(layer, self.layers)
            raise LayerError(f"{self.path}: layer {layer!r} was not recorded; the store has "
                             f"{self.layers}" + (f" (closest: {', '.join(close)})" if close
                                                 else "") + ".")
        parts = [_load_shard(f) for f in self._files(layer)]
        if not parts:
            return np.empty((0, self.dims.get(layer, 0)), dtype=np.float16)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def scores(self) -> np.ndarray:
        """The model's output score per image: N float32, rows in :attr:`image_ids` order."""
        import numpy as np

        parts = [_load_shard(f) for f in self._files(_SCORES)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)

    def labels(self) -> pd.DataFrame | None:
        """The labels table saved with the store (``image_id`` + one column per concept)."""
        path = self.path / "labels.parquet"
        if not path.is_file():
            return None
        import pandas as pd

        return pd.read_parquet(path)

    # ------------------------------------------------------------ writing

    @classmethod
    def create_or_resume(cls, path: str | Path, settings: StoreSettings, *,
                         extra: dict[str, Any] | None = None) -> ActivationStore:
        """A store at ``path`` for ``settings``: new, or the existing one to resume.

        Raises :class:`RunFolderError` when ``path`` holds a store with other settings,
        naming each setting that differs.
        """
        path = Path(path)
        existing = _read_manifest(path)
        if existing is not None:
            diffs = settings_differences(existing.get("settings", {}), settings,
                                         label=("store", "now"))
            if existing.get("format") != STORE_FORMAT:
                diffs.insert(0, f"store format (store: {existing.get('format')}, now: "
                                f"{STORE_FORMAT})")
            if diffs:
                raise RunFolderError(
                    f"{path}: holds activations recorded with other settings: "
                    + "; ".join(diffs) + ". Activations taken with different settings are "
                    "never mixed: choose another output folder, or delete this one to start "
                    "over.")
            return cls(path, existing)
        ensure_dir(path)
        manifest = {"format": STORE_FORMAT, "complete": False, "settings": settings.to_json(),
                    "n_shards": len(shard_ranges(settings.n_images, settings.shard_size)),
                    **(extra or {})}
        atomic_write_json(path / "manifest.json", manifest)
        return cls(path, manifest)

    def shard_ranges(self) -> list[tuple[int, int]]:
        s = self.settings
        return shard_ranges(s.n_images, s.shard_size)

    def _meta_path(self, index: int) -> Path:
        return self.path / _SHARDS / f"{_shard_name(index)}.json"

    def _valid_meta(self, index: int) -> dict[str, Any] | None:
        """Shard ``index``'s meta when the shard is fully written and its files agree with
        it, else None."""
        import numpy as np

        meta_path = self._meta_path(index)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            rows = len(meta["image_ids"])
            for name in [*self.layers, _SCORES]:
                arr = np.load(self.path / name / f"{_shard_name(index)}.npy", mmap_mode="r")
                want = (rows,) if name == _SCORES else (rows, int(meta["dims"][name]))
                if arr.shape != want:
                    return None
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None
        return meta

    def has_shard(self, index: int) -> bool:
        """Whether shard ``index`` is fully written and its files agree with its meta."""
        return self._valid_meta(index) is not None

    def _present_shards(self) -> list[int]:
        n = int(self.manifest.get("n_shards", 0))
        return [i for i in range(n) if self._meta_path(i).is_file()]

    def write_shard(self, index: int, *, image_ids: list[str], activations: dict[str, np.ndarray],
                    scores: np.ndarray, skipped: list[dict[str, str]] | None = None,
                    padded_rows: int = 0) -> None:
        """Write shard ``index``: one file per layer, float32 scores, then its meta.

        ``padded_rows``: repeated images that filled this shard's batches up to the batch
        size (their outputs dropped; see :mod:`audit.batches`), counted in the manifest.

        ``activations`` maps every layer to rows x D; rows = ``len(image_ids)``. A layer's
        shard is float16 unless one of its values is beyond float16's range (65504), which
        would turn it into infinity: then float32, so no image is lost to the storage format.
        """
        import numpy as np

        rows = len(image_ids)
        if set(activations) != set(self.layers):
            raise ValueError(f"shard {index}: layers {sorted(activations)} != {self.layers}")
        name = _shard_name(index)
        for layer in self.layers:
            arr = storage_array(activations[layer])
            if arr.shape[0] != rows:
                raise ValueError(f"shard {index}, layer {layer}: {arr.shape[0]} rows for "
                                 f"{rows} image ids")
            _save_npy(self.path / layer / f"{name}.npy", arr)
        _save_npy(self.path / _SCORES / f"{name}.npy",
                  np.asarray(scores, dtype=np.float32).reshape(rows))
        meta = {"index": index, "image_ids": list(image_ids), "skipped": skipped or [],
                "padded_rows": int(padded_rows),
                "dims": {k: int(np.shape(v)[1]) for k, v in activations.items()}}
        atomic_write_json(self._meta_path(index), meta)

    def finalize(self, *, extra: dict[str, Any] | None = None) -> ActivationStore:
        """Check every shard, then write the manifest with ``complete: true``.

        Raises :class:`RunFolderError` naming the shards still missing.
        """
        n = int(self.manifest["n_shards"])
        checked = [self._valid_meta(i) for i in range(n)]
        missing = [i for i, meta in enumerate(checked) if meta is None]
        if missing:
            raise RunFolderError(f"{self.path}: shards {missing[:10]} are missing or broken; "
                                 f"run the same extract command again to write them.")
        metas = [meta for meta in checked if meta is not None]
        dims = metas[0]["dims"] if metas else {}
        for meta in metas:
            if meta["dims"] != dims:
                raise RunFolderError(f"{self.path}: shard {meta['index']} has layer sizes "
                                     f"{meta['dims']} but shard 0 has {dims}; delete the folder "
                                     f"and extract again.")
        manifest = dict(self.manifest)
        manifest.update(extra or {})
        settings = manifest["settings"]
        manifest.update({
            "complete": True,
            "layer_dims": {k: {"dim": int(dims.get(k, 0)), "pooling": settings["pooling"]}
                           for k in settings["layers"]},
            "n_images": sum(len(m["image_ids"]) for m in metas),
            "image_ids": [i for m in metas for i in m["image_ids"]],
            "skipped": [s for m in metas for s in m["skipped"]],
            "shards": [{"index": i, "file": f"{_shard_name(i)}.npy",
                        "rows": len(m["image_ids"]), "padded_rows": int(m.get("padded_rows", 0))}
                       for i, m in enumerate(metas)],
            "padded_rows": sum(int(m.get("padded_rows", 0)) for m in metas),
        })
        atomic_write_json(self.path / "manifest.json", manifest)
        self.manifest = manifest
        self._ids = None
        return self

    def write_labels(self, labels: pd.DataFrame) -> None:
        """Save the labels table of the images next to the activations (parquet)."""
        with atomic_path(self.path / "labels.parquet", suffix=".parquet") as tmp:
            labels.to_parquet(tmp, index=False)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    import numpy as np

    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, arr)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:16] + "..."


def _load_shard(file: Path) -> np.ndarray:
    """One shard file, memory-mapped; a damaged (truncated, overwritten) or linked file is a
    :class:`RunFolderError` saying how to recompute it, not a traceback."""
    import numpy as np

    from audit.runfolder import refuse_links

    try:
        return np.load(refuse_links(file), mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise RunFolderError(
            f"{file}: damaged or truncated ({exc}). `gan-audit run` with the same config "
            f"extracts it again (it recomputes every output that differs from the manifest); "
            f"`gan-audit verify RUN_DIR` lists what differs.") from exc


def _read_manifest(path: Path) -> dict[str, Any] | None:
    file = Path(path) / "manifest.json"
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{file}: not valid JSON ({exc}); delete the folder and extract "
                             f"again.") from exc
    if not isinstance(data, dict) or "settings" not in data:
        raise RunFolderError(f"{file}: not an activation store manifest. Choose another output "
                             f"folder.")
    return data
