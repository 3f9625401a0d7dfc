"""Image sources: images (as the model expects them) with ids, and their labels table.

Sources (``ImageSourceConfig.source``)::

    folder:DIR          every image under DIR (recursive); labels from a CSV (``labels``,
                        column ``image_column`` holds the path relative to DIR or the file name)
    celeba:DIR          DIR/img_align_celeba/ + DIR/list_attr_celeba.txt (-1/1), optional
                        DIR/list_eval_partition.txt for ``partition``
    classfolders:DIR    DIR/<class>/<image>; the folder name is a label (``folder`` sources)
    idx:FILE            MNIST-style IDX images (gz or not), ``label_file`` for labels
    npz:FILE            array ``images`` (N x H x W, N x H x W x C or N x C x H x W; see pixel
                        values below); optional ``labels`` and other 1-D arrays
    builtin:NAME        the demo sets (``digits-paired``, ``digits-audit``)

Every source yields images transformed to the model's input (resize of the shorter side +
center crop, grey <-> RGB, value range) with a stable ``image_id``, and a labels table
(``image_id`` + one column per concept holding group names or None) built from the
concept set's label sources. An unreadable image is reported by path and skipped (listed in
``skipped`` and in the store manifest) or stops the run, per ``on_bad_image``.

Pixel values (:func:`pixels_to_unit`) are read at their stored depth and scaled by its full
range, never clipped: 8-bit / 255, 16-bit / 65535 (16-bit PNG, TIFF, PGM; NPZ/IDX uint16),
32-bit integer TIFFs by their bit depth; float images (``F`` TIFFs, float arrays) are taken
as [0, 1], and values outside (or NaN) are an error naming the image and the values found,
since 0..255 and [-1, 1] cannot be told apart from a dark [0, 1] image. Palette, grey+alpha,
RGBA and CMYK images go through Pillow's 8-bit grey or RGB. (16-bit colour images: Pillow
keeps their high byte, which is within 1/255 of the scaled value.)

A run folder inside an image folder (``out`` below a ``folder:`` or ``classfolders:``
source) is left out of the walk: its files are the run's own PNGs. The source says so in its
``notes`` (the store manifest's ``source``) and once on stderr. (``celeba:`` reads only the
files its attribute list names.)

A file name that is not valid UTF-8 gets an id with the undecodable bytes written as
``\\xff`` (:func:`path_text`), so that it survives JSON, parquet and the report.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.errors import CHECK_PATH, DataError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    import torch

    from audit.concepts import ConceptSet
    from audit.config import AuditConfig, GeneratorConfig, ImageSourceConfig
    from audit.load import InputSpec, LoadedGenerator

__all__ = ["ImageSource", "FileSource", "ArraySource", "TensorSource", "GeneratedSource", "Batch",
           "load_images", "generated_images", "sampled_images", "to_model_input",
           "pixels_to_unit", "files_under",
           "path_text", "concept_labels", "read_idx", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".pgm")
_PARTITIONS = {"train": 0, "valid": 1, "test": 2}
#: Pillow modes holding one channel deeper than 8 bits: read as they are (converting them to
#: 8-bit "L" clips 16-bit values at 255 and float values at 1/255).
_DEEP_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
#: How far float pixels may stray outside [0, 1] by rounding (kept as they are, not clipped).
_FLOAT_SLACK = 1e-6
#: Notes about sources already shown on stderr in this process.
_TOLD: set[str] = set()


@dataclass
class Batch:
    """A batch of images ready for the model: N x C x H x W float32, their ids, and the
    images of the requested indices that could not be read (``{"image_id", "reason"}``)."""

    images: torch.Tensor
    image_ids: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)


# ---------------------------------------------------------------- pixel values


def pixels_to_unit(values: np.ndarray, *, where: str, white: int | None = None) -> np.ndarray:
    """Pixel values of any stored type -> float in [0, 1], scaled by the type's full range.

    Never clips: values that do not fit the rule are an error.

    Parameters
    ----------
    values : ndarray
        Any shape; bool, unsigned or signed integers, or floats.
    where : str
        The image or file, named in messages.
    white : int, optional
        The value of full intensity where the dtype is wider than the stored samples
        (Pillow holds 16- and 32-bit integer images as int32): ``2 ** bits - 1``, or
        ``2 ** (bits - 1) - 1`` for signed samples. Default: the dtype's maximum (uint8:
        255, uint16: 65535); signed integers need it.

    Returns
    -------
    ndarray
        Same shape, float32 in [0, 1]: integers divided by ``white``, floats as they are,
        bool as 0 / 1.

    Raises
    ------
    DataError
        Floats outside [0, 1] or not finite (0..255 and [-1, 1] images cannot be told from
        a dark [0, 1] image), integers below 0 or above ``white``, signed integers of
        unknown depth (an int64 array of 0..255 would read as black), other dtypes.
    """
    import numpy as np

    kind = values.dtype.kind
    if kind == "b":
        return values.astype(np.float32)
    if kind == "f":
        if not np.isfinite(values).all():
            raise DataError(f"{where}: pixel values include NaN or infinity; give finite "
                            f"values in [0, 1].")
        lo, hi = _extent(values)
        if lo < -_FLOAT_SLACK or hi > 1 + _FLOAT_SLACK:
            raise DataError(
                f"{where}: float pixel values must lie in [0, 1], found {lo:.6g}..{hi:.6g}. "
                f"Values 0..255 or in [-1, 1] are not guessed (a dark image would read "
                f"differently from a bright one): rescale the images to [0, 1] (x / 255, "
                f"(x + 1) / 2) or save them as 8- or 16-bit integers.")
        return values.astype(np.float32)
    if kind not in "ui":
        raise DataError(f"{where}: pixel values of type {values.dtype} are not an image; give "
                        f"unsigned integers (uint8, uint16) or floats in [0, 1].")
    if white is None:
        if kind == "i":
            raise DataError(f"{where}: pixel values are {values.dtype}, signed integers whose "
                            f"full range is not an image's; save them as uint8 (0..255), uint16 "
                            f"(0..65535) or float in [0, 1], e.g. images.astype(numpy.uint8).")
        white = int(np.iinfo(values.dtype).max)
    lo, hi = _extent(values)
    if lo < 0 or hi > white:
        raise DataError(f"{where}: pixel values {lo:g}..{hi:g} lie outside 0..{white}, the range "
                        f"of the file's samples; save the image with non-negative values of "
                        f"its declared bit depth.")
    return values.astype(np.float32) / np.float32(white)


def _extent(values: np.ndarray) -> tuple[float, float]:
    """(min, max) of an array as Python numbers; (0, 0) when empty."""
    return (values.min().item(), values.max().item()) if values.size else (0.0, 0.0)


def _pil_pixels(img: Any, channels: int | None) -> tuple[np.ndarray, int | None]:
    """An opened Pillow image's pixels at their stored depth and the value of white.

    Returns
    -------
    pixels : ndarray
        H x W (grey: 8-bit, or one deep channel: 16/32-bit integer or float) or H x W x 3
        (RGB, 8-bit): deep images keep one channel (:func:`to_model_input` repeats it);
        palette, grey+alpha, RGBA, CMYK, ... go through Pillow's 8-bit grey (``channels``
        1) or RGB.
    white : int or None
        Full intensity of a Pillow int32 image (mode ``I``); None: the dtype's maximum.
    """
    import numpy as np

    if img.mode in _DEEP_MODES:
        return np.asarray(img), _stored_white(img) if img.mode == "I" else None
    grey = channels == 1 or (channels is None and img.mode in ("1", "L"))
    return np.asarray(img.convert("L" if grey else "RGB"), dtype=np.uint8), None


def _stored_white(img: Any) -> int:
    """Full intensity of a Pillow ``I`` (int32) image: a TIFF's bit depth and sample format
    say it; PNG and PGM/PPM hold at most 16 bits (Pillow scales a PGM's maxval to 65535)."""
    if img.format != "TIFF":
        return 65535

    def tag(number: int, default: int) -> int:
        value = img.tag_v2.get(number, default)
        return int(value[0] if isinstance(value, tuple) else value)

    bits, signed = tag(258, 32), tag(339, 1) == 2  # BitsPerSample, SampleFormat
    return 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1


# ---------------------------------------------------------------- transforms


def to_model_input(x: torch.Tensor, target: InputSpec | None) -> torch.Tensor:
    """Transform images to a model's input.

    Parameters
    ----------
    x : Tensor
        N x C x H x W float in [0, 1].
    target : InputSpec or None
        Channels (1 <-> 3 by luminance / repetition; 4 drops alpha), size (shorter side
        resized with antialiasing, then center crop to a square), value range. None: only
        the default range [-1, 1] is applied.

    Returns
    -------
    Tensor
        N x channels x image_size x image_size, float32 in ``target.value_range``.
    """
    import torch
    import torch.nn.functional as F

    x = x.float()
    channels = target.channels if target else None
    if channels is not None and x.shape[1] != channels:
        c = x.shape[1]
        if c == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif c in (3, 4) and channels == 1:
            w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
            x = (x[:, :3] * w.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        elif c == 4 and channels == 3:
            x = x[:, :3]
        else:
            raise DataError(f"images have {c} channels but the model expects {channels}; only "
                            f"grey (1), RGB (3) and RGBA (4) images can be converted.")
    size = target.image_size if target else None
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        new = (max(size, round(h * scale)), max(size, round(w * scale)))
        if new != (h, w):
            x = F.interpolate(x, size=new, mode="bilinear", align_corners=False,
                              antialias=new[0] < h)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        x = x[..., top:top + size, left:left + size]
    lo, hi = target.value_range if target else (-1.0, 1.0)
    return (x * (hi - lo) + lo).contiguous()


# ---------------------------------------------------------------- sources


class ImageSource:
    """Images with ids and labels; a map-style dataset of ``(image, image_id)``.

    Attributes
    ----------
    spec : str
        Where the images come from.
    image_ids : list of str
        Ids in source order (file path relative to the source, or ``<file>#<index>``).
    labels : DataFrame
        ``image_id`` + one column per concept of the concept set (group name or None).
    skipped : list of dict
        Images found unreadable so far: ``{"image_id", "reason"}``.
    notes : list of str
        What the user should know about how the images were read (in :meth:`describe`).
    class_labels : int array or None
        Each image's class (source order) for a conditional discriminator; None: the
        model's configured ``class_label`` for all.
    fingerprint : str
        sha256 identifying the images and their order (and the transform).
    in_process : bool
        Batches must be made in the main process (a generator on the device).
    """

    in_process = False

    def __init__(self, spec: str, image_ids: list[str], *, target: InputSpec | None,
                 on_bad_image: str = "skip") -> None:
        import pandas as pd

        self.spec = spec
        self.image_ids = image_ids
        self.target = target
        self.on_bad_image = on_bad_image
        self.skipped: list[dict[str, str]] = []
        self.notes: list[str] = []
        self.labels: pd.DataFrame = pd.DataFrame({"image_id": image_ids})
        self.class_labels: np.ndarray | None = None
        self._content = ""

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        batch = self.get_batch([index])
        if not batch.image_ids:
            raise DataError(f"{batch.skipped[0]['image_id']}: {batch.skipped[0]['reason']}")
        return batch.images[0], batch.image_ids[0]

    def get_batch(self, indices: Sequence[int]) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        target = self.target
        data = {"spec": self.spec, "ids": self.image_ids, "content": self._content,
                "target": None if target is None else [target.image_size, target.channels,
                                                       list(target.value_range)]}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        """Plain data for manifests: spec, count, fingerprint (and notes, if any)."""
        notes = {"notes": list(self.notes)} if self.notes else {}
        return {"spec": self.spec, "n_images": len(self), "fingerprint": self.fingerprint,
                **notes}


class ArraySource(ImageSource):
    """Images held in memory: N x C x H x W float in [0, 1] or uint8 (transformed per
    batch)."""

    def __init__(self, spec: str, images: torch.Tensor, image_ids: list[str], *,
                 target: InputSpec | None, content: str | None = None) -> None:
        super().__init__(spec, image_ids, target=target)
        self.images = images
        self._content = content or _tensor_sha256(images)

    def get_batch(self, indices: Sequence[int]) -> Batch:
        import torch

        idx = torch.as_tensor(list(indices), dtype=torch.long)
        x = self.images[idx]
        if not x.is_floating_point():  # uint8 stays compact in memory; scaled per batch
            x = torch.from_numpy(pixels_to_unit(x.numpy(), where=self.spec))
        return Batch(to_model_input(x, self.target), [self.image_ids[i] for i in indices],
                     indices=list(indices))


class TensorSource(ImageSource):
    """Images already in the model's input form: N x C x H x W, used as they are.

    Ids are ``"0"``, ``"1"``, ... unless given.
    """

    def __init__(self, images: torch.Tensor, image_ids: list[str] | None = None, *,
                 spec: str = "tensor") -> None:
        if images.ndim != 4:
            raise DataError(f"images must be N x C x H x W, got shape {tuple(images.shape)}.")
        ids = image_ids if image_ids is not None else [str(i) for i in range(images.shape[0])]
        super().__init__(spec, ids, target=None)
        self.images = images
        self._content = _tensor_sha256(images)

    def get_batch(self, indices: Sequence[int]) -> Batch:
        idx = list(indices)
        if idx == list(range(idx[0], idx[-1] + 1)):
            x = self.images[idx[0]:idx[-1] + 1]
        else:
            x = self.images[idx]
        return Batch(x.float(), [self.image_ids[i] for i in idx], indices=idx)


class FileSource(ImageSource):
    """Image files, decoded with Pillow when a batch is asked for."""

    def __init__(self, spec: str, root: Path, paths: list[Path], *, target: InputSpec | None,
                 on_bad_image: str = "skip") -> None:
        ids = [path_text(p.relative_to(root).as_posix()) for p in paths]
        super().__init__(spec, ids, target=target, on_bad_image=on_bad_image)
        self.root = root
        self.paths = paths
        sizes = []
        for p in paths:
            try:
                sizes.append(p.stat().st_size)
            except OSError:
                sizes.append(-1)
        self._content = hashlib.sha256(json.dumps(sizes).encode()).hexdigest()

    def _read(self, path: Path) -> torch.Tensor:
        """One image file -> 1 x C x H x W float in [0, 1] (:func:`pixels_to_unit`)."""
        import torch
        from PIL import Image, ImageFile

        # WeasyPrint sets PIL's global LOAD_TRUNCATED_IMAGES on import (weasyprint/images.py),
        # after which a truncated file reads as a partly grey picture without an error: in a
        # process that rendered a PDF first, an audit would read damaged images silently.
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        with Image.open(path) as img:
            pixels, white = _pil_pixels(img, self.target.channels if self.target else None)
        t = torch.from_numpy(pixels_to_unit(pixels, where=path_text(path), white=white))
        return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]

    def get_batch(self, indices: Sequence[int]) -> Batch:
        import torch
        from PIL import Image

        images, ids, skipped, kept = [], [], [], []
        for i in indices:
            path = self.paths[i]
            try:
                images.append(to_model_input(self._read(path), self.target))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                # named by its id (its path inside the source's folder): the record goes
                # into the run folder, which names no directory of this disk
                text = str(exc).replace(str(path), self.image_ids[i])
                reason = path_text(f"cannot read the image ({type(exc).__name__}: {text})")
                if self.on_bad_image == "stop":
                    raise DataError(f"{path_text(path)}: {reason}. Fix or remove the file, or "
                                    f"set on_bad_image: skip to skip unreadable images (they "
                                    f"are listed in the manifest and the report).") from exc
                skipped.append({"image_id": self.image_ids[i], "reason": reason})
                continue
            ids.append(self.image_ids[i])
            kept.append(i)
        shapes = {tuple(x.shape) for x in images}
        if len(shapes) > 1:
            raise DataError(f"{self.spec}: images have different sizes {sorted(shapes)[:4]}; "
                            f"set the discriminator's image_size so that they are resized to "
                            f"the model's input.")
        stacked = torch.cat(images) if images else torch.empty(0)
        return Batch(stacked, ids, skipped, kept)


class GeneratedSource(ImageSource):
    """Images sampled from a generator batch by batch (never all in memory).

    Image ``i`` has id ``gen-<seed>-<i>`` and is the same whatever the batch or process
    (see :func:`audit.load.sample_generated`).
    """

    in_process = True

    def __init__(self, generator: LoadedGenerator, *, n: int, seed: int,
                 target: InputSpec | None, batch_size: int = 64,
                 truncation: float | None = None, class_label: int | None = None,
                 class_sampling: str = "fixed", png_dir: Path | None = None) -> None:
        from audit.load import generated_classes

        super().__init__(generator.spec, [f"gen-{seed}-{i}" for i in range(n)], target=target)
        self.generator = generator
        self.seed = seed
        self.truncation = truncation
        self.png_dir = png_dir
        self.batch_size = batch_size
        self.class_labels = generated_classes(generator, range(n), seed=seed,
                                              class_label=class_label, sampling=class_sampling)
        self._content = json.dumps([generator.sha256, list(generator.latent_shape), seed,
                                    truncation, class_label, class_sampling,
                                    list(generator.value_range), generator.call_kwargs],
                                   sort_keys=True, default=str)

    def describe(self) -> dict[str, Any]:
        """The source's record, with the generator's output range: declared, observed, and
        the count of values clamped to it (``generator_output``); and how it ran
        (``generator``: sha256, dtype, identity, forward keywords)."""
        g = self.generator
        return {**super().describe(), "generator_output": g.output.to_dict(),
                "generator": {"sha256": g.sha256, "dtype": g.dtype, "identity": g.identity,
                              "call_kwargs": json.loads(json.dumps(g.call_kwargs,
                                                                   default=str))}}

    def get_batch(self, indices: Sequence[int]) -> Batch:
        import torch

        from audit.load import generate_batch, save_png

        indices = list(indices)
        images = torch.cat([
            generate_batch(self.generator, part, seed=self.seed, truncation=self.truncation,
                           class_label=None if self.class_labels is None
                           else self.class_labels[part].tolist())
            for part in (indices[i:i + self.batch_size]
                         for i in range(0, len(indices), self.batch_size))])
        if self.png_dir is not None:
            for i, image in zip(indices, images, strict=True):
                save_png(image, Path(self.png_dir) / f"{self.image_ids[i]}.png")
        x = to_model_input((images + 1) / 2, self.target)
        return Batch(x, [self.image_ids[i] for i in indices], indices=indices)


class RenderedSource(ImageSource):
    """The demo's digits, each rendered when a batch asks for it (``builtin:`` sources):
    a rank of a distributed run renders only its own shards."""

    def __init__(self, spec: str, plan: Any, image_ids: list[str], *,
                 target: InputSpec | None, content: str) -> None:
        super().__init__(spec, image_ids, target=target)
        self.plan = plan
        self._content = content

    def get_batch(self, indices: Sequence[int]) -> Batch:
        indices = list(indices)
        x = (self.plan.render(indices).float() + 1) / 2
        return Batch(to_model_input(x, self.target), [self.image_ids[i] for i in indices],
                     indices=indices)


def _tensor_sha256(x: torch.Tensor) -> str:
    import torch

    t = x.detach().cpu().contiguous()
    return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


# ---------------------------------------------------------------- readers


def read_idx(path: Path) -> np.ndarray:
    """Read an MNIST-style IDX file (gzipped or not) into a numpy array."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: IDX file not found.{CHECK_PATH}")
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc}); give an MNIST-style IDX file, "
                        f"gzipped or not.") from exc
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in dtypes:
        raise DataError(f"{path}: not an IDX file (bad magic number); expected MNIST-style "
                        f"files such as train-images-idx3-ubyte(.gz).")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(dtypes[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise DataError(f"{path}: truncated or damaged IDX file (header says {dims}, "
                        f"{expected} bytes of data, found {len(body)}).")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _array_images(arr: np.ndarray, where: str) -> torch.Tensor:
    """N x H x W / N x H x W x C / N x C x H x W array -> N x C x H x W float in [0, 1]
    (:func:`pixels_to_unit`), or uint8 0..255 (scaled per batch by :class:`ArraySource`)."""
    import numpy as np
    import torch

    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
            arr = np.transpose(arr, (0, 3, 1, 2))
        elif arr.shape[1] not in (1, 3, 4):
            raise DataError(f"{where}: cannot tell the channel axis of images shaped "
                            f"{arr.shape}; give N x H x W x C or N x C x H x W with C in 1, 3, 4.")
    else:
        raise DataError(f"{where}: images must be N x H x W or N x H x W x C or N x C x H x W, "
                        f"got shape {arr.shape}.")
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr))  # 4 times smaller than float
    return torch.from_numpy(np.ascontiguousarray(pixels_to_unit(arr, where=where)))


def path_text(path: str | Path) -> str:
    """A path (or a message naming one) as text that any writer takes: the bytes of a file
    name that are not valid UTF-8 (``surrogateescape`` characters in Python's str) written
    as ``\\xff``; other text unchanged."""
    text = os.fspath(path)
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def files_under(root: Path, *, skip: Path | None = None) -> list[Path]:
    """Every file below ``root`` (recursive; links to folders are not followed), except
    those inside the folder ``skip`` (a run folder inside an image folder: its own files).

    Returns paths starting with ``root``, in walking order.
    """
    def identity(folder: str | Path) -> tuple[int, int] | None:
        try:
            st = os.stat(folder)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    skipped = identity(skip) if skip is not None else None
    found = []
    for folder, subfolders, names in os.walk(root):
        if skipped is not None:
            subfolders[:] = [d for d in subfolders
                             if identity(os.path.join(folder, d)) != skipped]
        found += [path for path in (Path(folder, n) for n in names) if path.is_file()]
    return found


def _list_images(folder: Path, where: str, *, skip: Path | None = None) -> list[Path]:
    """The image files below ``folder`` sorted by relative path, none from inside ``skip``."""
    if not folder.is_dir():
        raise DataError(f"{where}: folder {folder} does not exist.{CHECK_PATH}")
    paths = sorted((p for p in files_under(folder, skip=skip)
                    if p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not paths:
        raise DataError(f"{where}: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}. Point "
                        f"the source at the folder that holds the images.")
    return paths


def _run_folder_note(root: Path, run_dir: Path | None, where: str) -> str | None:
    """What to tell the user when the run folder lies inside the image folder ``root`` (its
    files are left out of the walk); None when it does not.

    Raises :class:`DataError` when the image folder is the run folder itself.
    """
    if run_dir is None or not root.is_dir():
        return None
    run, images = Path(run_dir).resolve(), root.resolve()
    if run == images:
        raise DataError(f"{where}: the image folder is the run folder {run_dir} itself, where "
                        f"the run writes its own PNGs. Keep the images in a folder of their "
                        f"own, or set out (--out) to another folder.")
    if not run.is_relative_to(images):
        return None
    return (f"{where}: the run folder {run_dir} lies inside this image folder; its files (the "
            f"run's own PNGs) are not read as images. Set out (--out) to a folder outside "
            f"{root} to keep the two apart.")


def _subsample(n_total: int, n: int | None, seed: int) -> list[int]:
    """Indices of a seeded subsample of size ``n`` (all if None or larger), in source order."""
    import numpy as np

    if n is None or n >= n_total:
        return list(range(n_total))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n_total, n, replace=False))


def _read_csv_labels(path: Path, image_column: str, where: str) -> pd.DataFrame:
    import pandas as pd

    if not Path(path).is_file():
        raise DataError(f"{where}: labels file {path} does not exist.{CHECK_PATH}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=True)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the labels CSV ({exc}); save it as a "
                        f"comma-separated file with a header row.") from exc
    if image_column not in table.columns:
        raise DataError(f"{path}: no column {image_column!r} naming the images; its columns are "
                        f"{list(table.columns)}. Set image_column in the source config.")
    dup = table[image_column][table[image_column].duplicated()]
    if len(dup):
        raise DataError(f"{path}: image(s) {list(dup[:5])} have more than one row; give one row "
                        f"per image.")
    return table.set_index(image_column)


def _match_rows(table: pd.DataFrame, ids: list[str], keys: list[str], where: str,
                path: Path) -> pd.DataFrame:
    """Rows of ``table`` for each image: by relative path, else by file name, else by the
    file name of the table's own path entry (FairFace lists ``train/1.jpg`` while the
    source folder may be ``train/`` itself), when that file name is unique in the table."""
    index = set(table.index)
    by_name: dict[str, Any] = {}
    for entry in table.index:
        name = Path(str(entry)).name
        by_name[name] = None if name in by_name else entry  # None marks an ambiguous name
    chosen = []
    missing = []
    for image_id, key in zip(ids, keys, strict=True):
        if image_id in index:
            chosen.append(image_id)
        elif key in index:
            chosen.append(key)
        elif by_name.get(key) is not None:
            chosen.append(by_name[key])
        else:
            missing.append(image_id)
            chosen.append(None)
    if missing:
        raise DataError(f"{where}: {len(missing)} image(s) have no row in {path} (e.g. "
                        f"{', '.join(missing[:5])}). Add rows for them (the image column holds "
                        f"the path relative to the source folder, or the file name), or remove "
                        f"the images.")
    out = table.loc[chosen]
    out.index = ids
    return out


# ---------------------------------------------------------------- labels


def _as_group_text(value: Any) -> str | None:
    import math

    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    text = str(value).strip()
    if text == "" or text.lower() == "nan":
        return None
    try:
        number = float(text)
        if number.is_integer() and text.lstrip("+-").replace(".", "", 1).isdigit():
            return str(int(number))
    except ValueError:
        pass
    return text


def _raw_key(src: Any) -> str:
    """The raw label column a concept's label source reads."""
    if src.type == "column":
        return f"column:{src.column}"
    if src.type == "celeba":
        return f"celeba:{src.attribute}"
    return str(src.type)  # "folder" or "idx"


def concept_labels(raw: pd.DataFrame, concept_set: ConceptSet | None, image_ids: list[str], *,
                   where: str, require: bool = False) -> pd.DataFrame:
    """The labels table of a source from its raw label columns.

    Parameters
    ----------
    raw : DataFrame
        Indexed by image id; columns named by label source: ``column:<name>`` (CSV columns,
        demo table, NPZ arrays), ``celeba:<attribute>`` (-1/1), ``folder`` (class folder
        name), ``idx`` (integer class labels).
    concept_set : ConceptSet or None
        None gives a table with ``image_id`` only.
    require : bool
        Every concept must have labels here (paired images).

    Returns
    -------
    DataFrame
        ``image_id`` + one column per concept: the group name (str) or None where unknown.

    Raises
    ------
    DataError
        A label source this set needs is absent (with ``require``) or misspelled, or a
        value does not map to a group of its concept.
    """
    import pandas as pd

    out = pd.DataFrame({"image_id": image_ids})
    if concept_set is None:
        return out
    raw = raw.reindex(image_ids)
    for concept in concept_set.concepts:
        src = concept.source
        key = _raw_key(src)
        if key not in raw.columns:
            family = [c for c in raw.columns if c.split(":")[0] == key.split(":")[0]]
            if family and src.type in ("column", "celeba"):
                from audit.hooks import closest_names

                close = closest_names(key, family)
                raise DataError(
                    f"{where}: concept {concept.name!r} reads labels from {key!r}, which this "
                    f"source does not have" + (f" (closest: {', '.join(close)})" if close else "")
                    + f"; available: {', '.join(family[:20])}. Fix the concept set's source or "
                    f"the labels file.")
            if require:
                raise DataError(
                    f"{where}: concept {concept.name!r} needs labels from {key!r}, but this "
                    f"source has none (it provides: {', '.join(raw.columns) or 'no labels'}). "
                    f"Give a labels CSV (labels:) or a source that carries this label.")
            out[concept.name] = None
            continue
        values = raw[key]
        if src.type == "celeba":
            mapping = {"-1": concept.groups[0], "1": concept.groups[1]}
        elif src.type == "idx":
            mapping = {str(i): g for i, g in enumerate(concept.groups)}
        else:
            # group names stand for themselves; `values` adds raw spellings of them
            mapping = {g: g for g in concept.groups} | dict(src.values or {})
        groups = []
        unknown: dict[str, int] = {}
        for v in values:
            text = _as_group_text(v)
            if text is None:
                groups.append(None)
            elif text in mapping:
                groups.append(mapping[text])
            else:
                unknown[text] = unknown.get(text, 0) + 1
                groups.append(None)
        if unknown:
            shown = ", ".join(f"{k!r} ({n} images)" for k, n in list(unknown.items())[:5])
            allowed = sorted(mapping) if src.type in ("celeba", "idx") else list(mapping)
            raise DataError(f"{where}: concept {concept.name!r} ({key}) has value(s) {shown} "
                            f"that are not among its groups {allowed}. Map raw values to groups "
                            f"with 'values:' in the concept's source, or fix the labels.")
        out[concept.name] = pd.Series(groups, dtype=object)
    return out


# ---------------------------------------------------------------- entry point


def load_images(cfg: ImageSourceConfig | str, *, concept_set: ConceptSet | None = None,
                input: InputSpec | None = None, require_labels: bool = False,
                class_source: Any = None, run_dir: Path | None = None) -> ImageSource:
    """Open an image source and build its labels table.

    Parameters
    ----------
    cfg : ImageSourceConfig or str
        The source section (or a bare spec such as ``npz:data.npz``).
    concept_set : ConceptSet, optional
        Whose label sources fill the labels table.
    input : InputSpec, optional
        The model's input: images are transformed to it (see :func:`to_model_input`).
    require_labels : bool
        Every concept must have labels (paired images for decoder training).
    class_source : label source, optional
        Where each image's class label for a conditional discriminator comes from
        (``discriminator.class_source``): fills ``class_labels``.
    run_dir : Path, optional
        The run's own folder: when it lies inside an image folder, no file of it is read
        (the run writes PNGs there); ``notes`` and a warning say so.

    Returns
    -------
    ImageSource
        ``n`` and ``seed`` subsample deterministically, keeping source order.

    Raises
    ------
    DataError
        The source is missing, empty or malformed, its labels do not fit the concept set,
        or the image folder is the run folder itself.
    """
    from audit.config import ImageSourceConfig

    if isinstance(cfg, str):
        cfg = ImageSourceConfig(source=cfg)
    kind, _, rest = cfg.source.partition(":")
    where = cfg.source
    note = (_run_folder_note(Path(rest), run_dir, where) if kind in ("folder", "classfolders")
            else None)
    source, raw = _open_source(cfg, input=input, run_dir=run_dir)
    if cfg.labels is not None:
        raw = _with_csv_labels(raw, cfg.labels, cfg, source.image_ids)
    source.on_bad_image = cfg.on_bad_image  # also images that read but give bad activations
    if note is not None:
        source.notes.append(note)
        if note not in _TOLD:  # stages open the same source again: say it once
            _TOLD.add(note)
            warnings.warn(note, stacklevel=2)
    source.labels = concept_labels(raw, concept_set, source.image_ids, where=where,
                                   require=require_labels)
    if class_source is not None:
        source.class_labels = class_labels(raw, class_source, source.image_ids, where=where)
    return source


def _open_source(cfg: ImageSourceConfig, *, input: InputSpec | None,
                 run_dir: Path | None) -> tuple[ImageSource, pd.DataFrame]:
    """The image source of ``cfg.source`` (subsampled by ``n`` and ``seed``) and the raw
    label columns it carries itself (class folder names, CelebA attributes, arrays' labels,
    the demo's planted truth), one row per image id; an empty table when it has none."""
    kind, _, rest = cfg.source.partition(":")
    where = cfg.source
    if kind in ("folder", "classfolders"):
        return _folder_source(kind, Path(rest), cfg, input=input, run_dir=run_dir)
    if kind == "celeba":
        return _celeba(Path(rest), cfg, input, where)  # only the files it lists
    if kind in ("idx", "npz"):
        return _arrays(kind, Path(rest), cfg, input, where)
    if kind == "builtin":
        from audit.demo.data import builtin_plan

        plan, table = builtin_plan(rest, n=cfg.n, seed=cfg.seed)
        ids = [str(i) for i in table["image_id"]]
        source = RenderedSource(where, plan, ids, target=input,
                                content=f"{rest}/{cfg.n}/{cfg.seed}")
        raw = table.set_index(table["image_id"].astype(str)).drop(columns=["image_id"])
        raw.columns = [f"column:{c}" for c in raw.columns]
        return source, raw
    raise DataError(f"{where}: unknown image source type {kind!r}; use folder:, celeba:, "
                    f"classfolders:, idx:, npz: or builtin:.")


def _folder_source(kind: str, root: Path, cfg: ImageSourceConfig, *,
                   input: InputSpec | None, run_dir: Path | None
                   ) -> tuple[ImageSource, pd.DataFrame]:
    """A ``folder:`` or ``classfolders:`` source (no file of ``run_dir`` read); the class
    folders' names are the raw column ``folder``."""
    import pandas as pd

    where = cfg.source
    paths = _list_images(root, where, skip=run_dir)
    if kind == "classfolders":
        paths = [p for p in paths if len(p.relative_to(root).parts) == 2]
        if not paths:
            raise DataError(f"{where}: no images in class folders ({root}/<class>/<image>).")
    paths = [paths[i] for i in _subsample(len(paths), cfg.n, cfg.seed)]
    source = FileSource(where, root, paths, target=input, on_bad_image=cfg.on_bad_image)
    raw = pd.DataFrame()
    if kind == "classfolders":
        raw = pd.DataFrame({"folder": [path_text(p.parent.name) for p in paths]},
                           index=source.image_ids)
    return source, raw


def _with_csv_labels(raw: pd.DataFrame, labels: Path, cfg: ImageSourceConfig,
                     image_ids: list[str]) -> pd.DataFrame:
    """``raw`` joined with the columns of the labels CSV ``labels`` (rows matched to the
    images by file name, as ``column:NAME``)."""
    csv = _read_csv_labels(labels, cfg.image_column, cfg.source)
    keys = [Path(i).name for i in image_ids]
    rows = _match_rows(csv, image_ids, keys, cfg.source, labels)
    rows.columns = [f"column:{c}" for c in rows.columns]
    return rows if raw.empty else raw.join(rows)


def generated_images(cfg: AuditConfig, *, concept_set: ConceptSet | None,
                     input: InputSpec | None, device: str = "cpu",
                     png_dir: Path | None = None, run_dir: Path | None = None) -> ImageSource:
    """The audited generated images of a config: sampled from its ``generator`` (each
    with the class it was made with; PNGs to ``png_dir`` if given, labels all unknown),
    or its folder of ``generated`` images (classes from ``discriminator.class_source``;
    nothing read from inside ``run_dir``, see :func:`load_images`)."""
    if cfg.generator is None:
        assert cfg.generated is not None  # the config validator guarantees one of the two
        return load_images(cfg.generated.images, concept_set=concept_set, input=input,
                           class_source=cfg.discriminator.class_source, run_dir=run_dir)
    from audit.load import load_generator

    g = cfg.generator
    return sampled_images(load_generator(g, device=device), g, n=g.n, seed=g.seed,
                          target=input, concept_set=concept_set, png_dir=png_dir)


def sampled_images(generator: LoadedGenerator, section: GeneratorConfig, *, n: int,
                   seed: int, target: InputSpec | None, concept_set: ConceptSet | None,
                   batch_size: int | None = None, png_dir: Path | None = None
                   ) -> GeneratedSource:
    """``n`` images sampled from ``generator`` as its config ``section`` says (truncation,
    classes; ``batch_size`` default the section's), every concept's label unknown."""
    source = GeneratedSource(generator, n=n, seed=seed, target=target,
                             batch_size=batch_size or section.batch_size,
                             truncation=section.truncation, class_label=section.class_label,
                             class_sampling=section.class_sampling, png_dir=png_dir)
    source.labels = _unknown_labels(source.image_ids, [] if concept_set is None
                                    else concept_set.names)
    return source


def _unknown_labels(image_ids: list[str], concepts: list[str]) -> pd.DataFrame:
    """A labels table with every concept unknown (None)."""
    import pandas as pd

    table = pd.DataFrame({"image_id": image_ids})
    for name in concepts:
        table[name] = pd.Series([None] * len(image_ids), dtype=object)
    return table


def class_labels(raw: pd.DataFrame, src: Any, image_ids: list[str], *, where: str
                 ) -> np.ndarray:
    """Each image's class index (a conditional discriminator's label) from its raw label
    columns: the value itself when it is a whole number, else through ``src.values``.

    Raises :class:`DataError` when the source lacks the column or an image has no class.
    """
    import numpy as np

    key = _raw_key(src)
    if key not in raw.columns:
        raise DataError(f"{where}: discriminator.class_source reads {key!r}, which this source "
                        f"does not have (it provides: {', '.join(raw.columns) or 'no labels'}). "
                        f"Give a labels CSV with that column, or fix class_source.")
    mapping = dict(getattr(src, "values", None) or {})
    out = np.empty(len(image_ids), dtype=np.int64)
    for i, value in enumerate(raw[key].reindex(image_ids)):
        text = _as_group_text(value)
        text = mapping.get(text, text) if text is not None else None
        if text is None or not text.lstrip("-").isdigit():
            shown = "missing" if text is None else repr(text)
            raise DataError(f"{where}: image {image_ids[i]!r} has class {shown} in {key!r}; a "
                            f"conditional discriminator needs a class index for every image. "
                            f"Fill it in, or map names to indices with class_source.values.")
        out[i] = int(text)
    return out


def _celeba(root: Path, cfg: ImageSourceConfig, target: InputSpec | None,
            where: str) -> tuple[ImageSource, pd.DataFrame]:
    import pandas as pd

    images_dir, attr_file = root / "img_align_celeba", root / "list_attr_celeba.txt"
    for needed in (images_dir, attr_file):
        if not needed.exists():
            raise DataError(f"{where}: {needed} is missing; a CelebA folder holds "
                            f"img_align_celeba/ and list_attr_celeba.txt (and optionally "
                            f"list_eval_partition.txt).")
    try:
        attrs = pd.read_csv(attr_file, sep=r"\s+", skiprows=1, dtype=str)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{attr_file}: cannot parse ({exc}); expected the CelebA layout (count, "
                        f"attribute names, then one line per image).") from exc
    attrs.index = attrs.index.astype(str)
    names = list(attrs.index)
    if cfg.partition != "all":
        part_file = root / "list_eval_partition.txt"
        if not part_file.is_file():
            raise DataError(f"{where}: partition {cfg.partition!r} needs {part_file}, which is "
                            f"missing. Add it or set partition: all.")
        parts = pd.read_csv(part_file, sep=r"\s+", header=None, names=["image", "part"],
                            dtype={"image": str, "part": int}).set_index("image")["part"]
        wanted = _PARTITIONS[cfg.partition]
        names = [n for n in names if parts.get(n) == wanted]
    names = [names[i] for i in _subsample(len(names), cfg.n, cfg.seed)]
    source = FileSource(where, images_dir, [images_dir / n for n in names], target=target,
                        on_bad_image=cfg.on_bad_image)
    raw = attrs.loc[names]
    raw.columns = [f"celeba:{c}" for c in raw.columns]
    raw.index = source.image_ids
    return source, raw


def _arrays(kind: str, path: Path, cfg: ImageSourceConfig, target: InputSpec | None,
            where: str) -> tuple[ImageSource, pd.DataFrame]:
    import numpy as np
    import pandas as pd

    from audit.io import sha256_file

    if not path.is_file():
        raise DataError(f"{where}: file {path} does not exist.{CHECK_PATH}")
    columns: dict[str, np.ndarray] = {}
    if kind == "idx":
        arr = read_idx(path)
        if cfg.label_file is not None:
            columns["idx"] = read_idx(cfg.label_file)
    else:
        try:
            npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read as .npz ({exc}); save the arrays "
                            f"with numpy.savez.") from exc
        if "images" not in npz.files:
            raise DataError(f"{path}: no array named 'images' (it has {npz.files}); save "
                            f"the images under that name.")
        arr = npz["images"]
        for name in npz.files:
            column = npz[name] if name != "images" else None    # each array read once
            if column is not None and column.ndim == 1:
                columns["idx" if name == "labels" else f"column:{name}"] = column
    n_total = arr.shape[0]
    for name, col in columns.items():
        if len(col) != n_total:
            raise DataError(f"{where}: {n_total} images but {len(col)} values in {name!r}; they "
                            f"must match one to one.")
    keep = _subsample(n_total, cfg.n, cfg.seed)
    images = _array_images(arr[keep], where)
    ids = [f"{path.name}#{i}" for i in keep]
    content = sha256_file(path) + (sha256_file(cfg.label_file) if cfg.label_file else "")
    source = ArraySource(where, images, ids, target=target, content=content)
    raw = pd.DataFrame({k: v[keep] for k, v in columns.items()}, index=ids)
    return source, raw
