"""The demo's short training run: checkpoints of the demo GAN whose planted bias grows.

The run continues the shipped demo GAN (``builtin:digits-dcgan``, 60 epochs on the GAN
mix with 20% dark tone) for :data:`TRACK_EPOCHS` more epochs while the dark-tone share of
its training mix falls (:data:`TRACK_SCHEDULE`): a data pipeline that slowly loses the
minority. The generator follows, late: each later checkpoint makes fewer dark digits
(18.6%, 18.3%, 15.5%, 10.3%, 4.6%). The discriminator does not follow a trend: its mean
logit on dark digits against light ones swings from below to above (see training.json's
``check`` per checkpoint), as a discriminator chasing a lagging generator does.
``python -m audit.demo.train --track`` reproduces it.

:data:`TRACK_CHECKPOINTS` are the model specs in training order (the shipped demo GAN
first, then one ``builtin:digits-dcgan-eNN`` per saved epoch NN, counted from the start of
the demo's training); each works as a discriminator and as a generator spec.
:data:`TRACK_DARK_SHARE` is the planted truth: each checkpoint generator's dark-tone share
by the pixel rule (:func:`audit.demo.train.tone_is_dark`) on :data:`TRUTH_N` latents of
seed 0, as ``weights/track/training.json`` records it.

Pure constants: no torch (the model registry imports this module).
"""

from __future__ import annotations

__all__ = ["BASE_EPOCHS", "TRACK_EPOCHS", "TRACK_SCHEDULE", "TRACK_SAVE_EPOCHS",
           "TRACK_CHECKPOINTS", "TRACK_DARK_SHARE", "TRUTH_N", "TRACK_SUBDIR",
           "checkpoint_name", "checkpoint_files"]

#: Epochs of the shipped demo GAN (``python -m audit.demo.train``), where the run starts.
BASE_EPOCHS = 60
#: Epochs of the continued run.
TRACK_EPOCHS = 12
#: Dark-tone share of the training mix in each epoch of the continued run (the stroke
#: mix stays at 30% thick): from the demo's 20% down to 2% over the first six epochs,
#: then 2%.
TRACK_SCHEDULE: tuple[float, ...] = (0.17, 0.14, 0.11, 0.08, 0.05, 0.02,
                                     0.02, 0.02, 0.02, 0.02, 0.02, 0.02)
#: Epochs (counted from the start of the demo's training) after which a checkpoint is saved.
TRACK_SAVE_EPOCHS: tuple[int, ...] = (63, 66, 69, 72)
#: Folder of the checkpoints, inside the demo's weights folder.
TRACK_SUBDIR = "track"
#: Latents (seed 0) on which the planted truth is measured.
TRUTH_N = 10_000


def checkpoint_name(epoch: int) -> str:
    """The builtin model name of the checkpoint after ``epoch`` (``digits-dcgan-e63``)."""
    return f"digits-dcgan-e{epoch}"


def checkpoint_files(epoch: int) -> tuple[str, str]:
    """(generator file, discriminator file) of a checkpoint, in ``weights/track/``."""
    return f"generator-e{epoch:03d}.safetensors", f"discriminator-e{epoch:03d}.safetensors"


TRACK_CHECKPOINTS: tuple[str, ...] = (
    "builtin:digits-dcgan", *(f"builtin:{checkpoint_name(e)}" for e in TRACK_SAVE_EPOCHS))

#: The planted truth per checkpoint: the generator's dark-tone share (fraction) by the pixel
#: rule on TRUTH_N latents of seed 0 (``weights/track/training.json``, ``truth``).
TRACK_DARK_SHARE: dict[str, float] = {
    "builtin:digits-dcgan": 0.1864,
    "builtin:digits-dcgan-e63": 0.1825,
    "builtin:digits-dcgan-e66": 0.1548,
    "builtin:digits-dcgan-e69": 0.1033,
    "builtin:digits-dcgan-e72": 0.0455,
}
