"""The demo DCGAN for 32 x 32 grey images, and its committed weights.

``builtin:digits-dcgan`` resolves to :func:`builtin_discriminator` and
:func:`builtin_generator`. The weights live next to this module in
``weights/*.safetensors`` (loaded with safetensors, never pickle), with their
sha256 in ``weights/SHA256SUMS``; ``python -m audit.demo.train`` reproduces them.

The demo's short training run (:mod:`audit.demo.checkpoints`): ``builtin:digits-dcgan-eNN``
resolves to :func:`track_discriminator` and :func:`track_generator` with ``epoch=NN``, from
``weights/track/`` (float16 files, loaded into the float32 models; their own
``SHA256SUMS``); :data:`TRACK_CHECKPOINTS` lists them in training order and
``python -m audit.demo.train --track`` reproduces them.

torch is imported at the top: only the model loader imports this module.

The discriminator has no batch normalisation: its output for an image does not
depend on the other images in the batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from audit.demo.checkpoints import (
    TRACK_CHECKPOINTS,
    TRACK_DARK_SHARE,
    TRACK_SAVE_EPOCHS,
    TRACK_SUBDIR,
    checkpoint_files,
    checkpoint_name,
)
from audit.errors import ModelLoadError

__all__ = [
    "LATENT_DIM",
    "WEIGHTS_DIR",
    "DigitsGenerator",
    "DigitsDiscriminator",
    "builtin_discriminator",
    "builtin_generator",
    "track_discriminator",
    "track_generator",
    "read_sha256sums",
    "TRACK_CHECKPOINTS",
    "TRACK_DARK_SHARE",
]

LATENT_DIM = 64
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
SUMS_FILE = "SHA256SUMS"
_RETRAIN = "python -m audit.demo.train"


class DigitsGenerator(nn.Module):
    """The demo generator: z (N x latent_dim) -> images (N x 1 x 32 x 32, tanh, in [-1, 1]).

    ``project`` (linear to 128 x 4 x 4, batch norm, ReLU), then ``blocks.0``, ``blocks.1``
    (transposed conv 4 x 4 stride 2, batch norm, ReLU: 64 x 8 x 8, 32 x 16 x 16), then
    ``head`` (transposed conv to 1 x 32 x 32, tanh). About 0.3 M parameters.

    Parameters
    ----------
    latent_dim : int
        Size of the latent vector z (standard normal).
    """

    def __init__(self, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 128 * 4 * 4, bias=False),
            nn.Unflatten(1, (128, 4, 4)),
            nn.BatchNorm2d(128),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(
            nn.Sequential(nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64),
                          nn.ReLU()),
            nn.Sequential(nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32),
                          nn.ReLU()),
        )
        self.head = nn.Sequential(nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """z: N x latent_dim -> N x 1 x 32 x 32 in [-1, 1].

        ``truncation_psi`` (the truncation trick): the latents are moved toward their mean,
        ``mean + psi * (z - mean)``; z is standard normal, so its mean is 0 and this is
        ``psi * z``. ``psi = 1`` (the default) leaves z as it is (the same outputs, bit for
        bit); smaller psi samples nearer the generator's typical image.
        """
        if truncation_psi != 1.0:
            z = z * truncation_psi
        return self.head(self.blocks(self.project(z)))


class DigitsDiscriminator(nn.Module):
    """The demo discriminator: images (N x 1 x 32 x 32, in [-1, 1]) -> logits (N x 1).

    ``blocks.0`` .. ``blocks.3`` are conv + LeakyReLU(0.2) with outputs 32 x 16 x 16,
    64 x 8 x 8, 128 x 4 x 4 and 128 x 4 x 4; ``head`` flattens and maps to one logit
    (higher = more real). No batch norm: a logit depends on its own image only.
    """

    def __init__(self) -> None:
        super().__init__()
        shapes = [(1, 32, 4, 2, 1), (32, 64, 4, 2, 1), (64, 128, 4, 2, 1), (128, 128, 3, 1, 1)]
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(c_in, c_out, k, s, p), nn.LeakyReLU(0.2))
            for c_in, c_out, k, s, p in shapes])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N x 1 x 32 x 32 in [-1, 1] -> N x 1 logits."""
        return self.head(self.blocks(x))


# ---------------------------------------------------------------- committed weights


def read_sha256sums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum``-style file (``<hex>  <name>`` per line) into {name: hex}."""
    sums: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest.lower()
    return sums


def _load_weights(name: str, model: nn.Module, *, folder: Path | None = None,
                  spec: str = "builtin:digits-dcgan", retrain: str = _RETRAIN) -> nn.Module:
    """Verify ``folder/name`` (default :data:`WEIGHTS_DIR`) against the folder's SHA256SUMS,
    load it into ``model`` (float16 files are cast to the model's float32), set eval mode."""
    from safetensors.torch import load_file

    from audit.io import sha256_file

    folder = WEIGHTS_DIR if folder is None else folder
    path, sums_path = folder / name, folder / SUMS_FILE
    if not path.is_file() or not sums_path.is_file():
        missing = path if not path.is_file() else sums_path
        raise ModelLoadError(f"{spec}: {missing} is missing. Re-create the demo "
                             f"weights with `{retrain}` (or reinstall gan-audit).")
    expected = read_sha256sums(sums_path).get(name)
    actual = sha256_file(path)
    if expected != actual:
        raise ModelLoadError(
            f"{spec}: {path} does not match its sha256 in {sums_path} "
            f"(expected {expected or 'no entry'}, found {actual}); the file was changed or "
            f"damaged. Re-create the demo weights with `{retrain}` (or reinstall gan-audit).")
    try:
        model.load_state_dict(load_file(path))
    except RuntimeError as exc:
        raise ModelLoadError(f"{spec}: {path} does not fit the demo model "
                             f"({exc}). Re-create the demo weights with `{retrain}`.") from exc
    return model.eval()


def builtin_discriminator() -> nn.Module:
    """The trained demo discriminator (``builtin:digits-dcgan``), in eval mode.

    Input N x 1 x 32 x 32 in [-1, 1]; output N x 1 logits (higher = more real).
    Raises :class:`~audit.errors.ModelLoadError` when the weights fail their sha256.
    """
    return _load_weights(DISCRIMINATOR_FILE, DigitsDiscriminator())


def builtin_generator() -> nn.Module:
    """The trained demo generator (``builtin:digits-dcgan``), in eval mode.

    Input z: N x :data:`LATENT_DIM` standard normal; output N x 1 x 32 x 32 in [-1, 1].
    Raises :class:`~audit.errors.ModelLoadError` when the weights fail their sha256.
    """
    return _load_weights(GENERATOR_FILE, DigitsGenerator())


def _track_weights(epoch: int, role: int, model: nn.Module) -> nn.Module:
    """Checkpoint ``epoch``'s generator (role 0) or discriminator (role 1) from weights/track/."""
    spec = f"builtin:{checkpoint_name(epoch)}"
    if epoch not in TRACK_SAVE_EPOCHS:
        known = ", ".join(TRACK_CHECKPOINTS)
        raise ModelLoadError(f"{spec}: the demo's training run has no checkpoint after epoch "
                             f"{epoch}; its checkpoints are {known}.")
    return _load_weights(checkpoint_files(epoch)[role], model, folder=WEIGHTS_DIR / TRACK_SUBDIR,
                         spec=spec, retrain=f"{_RETRAIN} --track")


def track_generator(epoch: int) -> nn.Module:
    """The demo generator after ``epoch`` epochs of the demo's training run
    (``builtin:digits-dcgan-e<epoch>``), in eval mode; as :func:`builtin_generator`."""
    return _track_weights(int(epoch), 0, DigitsGenerator())


def track_discriminator(epoch: int) -> nn.Module:
    """The demo discriminator after ``epoch`` epochs of the demo's training run
    (``builtin:digits-dcgan-e<epoch>``), in eval mode; as :func:`builtin_discriminator`."""
    return _track_weights(int(epoch), 1, DigitsDiscriminator())
