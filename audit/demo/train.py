"""Train the demo DCGAN: ``python -m audit.demo.train [--out DIR] [--epochs N] [--seed S]``.

The GAN trains on the ``gan`` part of the digits, rendered each epoch in the
imbalanced mix :data:`audit.demo.data.GAN_MIX` (20% dark tone, 30% thick stroke;
the variants are drawn again every epoch, which also augments the data). Standard
non-saturating GAN loss, Adam(2e-4, betas (0.5, 0.999)), an R1 penalty on the
discriminator's gradient at real images, an exponential moving average of the
generator's weights (the saved generator), one CPU thread and deterministic
algorithms, so that the same seed gives the same weights on the same machine and
torch version.

``python -m audit.demo.train --track`` runs :func:`train_track` instead: the demo's short
training run (:mod:`audit.demo.checkpoints`), which continues the shipped GAN while the
dark-tone share of its training mix falls, and saves float16 checkpoints in
``weights/track/``.

Writes ``generator.safetensors``, ``discriminator.safetensors``, ``SHA256SUMS`` and
``training.json`` (settings, per-epoch losses, time, and a sanity check of the
result: generated tone and stroke shares measured by simple pixel rules, and the
discriminator's scores on real and generated images and per planted group).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audit.demo import checkpoints as track
from audit.demo.data import GAN_MIX, digits_split, make_set, render
from audit.demo.models import (
    DISCRIMINATOR_FILE,
    GENERATOR_FILE,
    LATENT_DIM,
    SUMS_FILE,
    WEIGHTS_DIR,
    DigitsDiscriminator,
    DigitsGenerator,
)

__all__ = ["EPOCHS", "train", "train_track", "check_models", "generated_dark_share",
           "tone_is_dark", "ink_pixels", "main"]

EPOCHS = 60
BATCH_SIZE = 64
LR = 2e-4
BETAS = (0.5, 0.999)
R1_GAMMA = 1.0  # weight of the R1 penalty on real images (Mescheder et al. 2018)
EMA_DECAY = 0.99  # the saved generator is an exponential moving average of its weights


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- simple pixel rules


def tone_is_dark(images: torch.Tensor) -> torch.Tensor:
    """Dark tone by the mean pixel: the ground covers most of an image, so a dark-tone
    image (light ground) has a positive mean. N x 1 x 32 x 32 -> N bool."""
    return images.mean(dim=(1, 2, 3)) > 0


def ink_pixels(images: torch.Tensor) -> torch.Tensor:
    """Ink pixel count after normalising polarity to light ink (pixels > 0). -> N float."""
    sign = torch.where(tone_is_dark(images), -1.0, 1.0).view(-1, 1, 1, 1)
    return (images * sign > 0).sum(dim=(1, 2, 3)).to(torch.float32)


def _stroke_threshold(seed: int) -> tuple[float, float]:
    """The ink-count threshold that best separates thin from thick on the paired part,
    and its accuracy on the (held-out) audit part rendered in both strokes."""
    images, labels = make_set("paired", n=4 * len(digits_split()["paired"]),
                              tone_share_dark=0.5, stroke_share_thick=0.5, seed=seed,
                              balanced=True)
    ink = ink_pixels(images).numpy()
    thick = (labels["stroke"] == "thick").to_numpy()
    candidates = np.unique(ink)
    accuracy = [((ink > c) == thick).mean() for c in candidates]
    threshold = float(candidates[int(np.argmax(accuracy))])
    audit = _audit_variants()
    held_ink = torch.cat([ink_pixels(audit[k]) for k in audit]).numpy()
    held_thick = np.concatenate([np.full(len(audit[k]), k[1] == "thick") for k in audit])
    return threshold, float(((held_ink > threshold) == held_thick).mean())


def _stroke_classifier(seed: int) -> tuple[Any, float]:
    """A logistic regression on polarity-normalised pixels (thin vs thick), fit on the
    paired part; its accuracy on the held-out audit part in both strokes."""
    from sklearn.linear_model import LogisticRegression

    def features(images: torch.Tensor) -> np.ndarray:
        sign = torch.where(tone_is_dark(images), -1.0, 1.0).view(-1, 1, 1, 1)
        return (images * sign).flatten(1).numpy()

    images, labels = make_set("paired", n=4 * len(digits_split()["paired"]),
                              tone_share_dark=0.5, stroke_share_thick=0.5, seed=seed,
                              balanced=True)
    model = LogisticRegression(C=0.1, max_iter=2000)
    model.fit(features(images), (labels["stroke"] == "thick").to_numpy())
    audit = _audit_variants()
    x = np.concatenate([features(audit[k]) for k in audit])
    y = np.concatenate([np.full(len(audit[k]), k[1] == "thick") for k in audit])
    return (lambda imgs: model.predict(features(imgs))), float(model.score(x, y))


def _audit_variants() -> dict[tuple[str, str], torch.Tensor]:
    """The audit part (held-out real digits), each image in all four variants."""
    from audit.demo.data import _light_thin

    base = _light_thin()[torch.as_tensor(digits_split()["audit"])]
    return {(t, s): render(base, tone=t, stroke=s)
            for t in ("light", "dark") for s in ("thin", "thick")}


@torch.no_grad()
def check_models(generator: nn.Module, discriminator: nn.Module, *, n: int = 2000,
                 seed: int = 0) -> dict[str, Any]:
    """A sanity check of a trained demo GAN by simple pixel rules (independent of any decoder).

    Parameters
    ----------
    generator, discriminator : nn.Module
        In eval mode.
    n : int
        Number of generated images to measure.
    seed : int
        Seed of the latent vectors.

    Returns
    -------
    dict
        ``generated``: share of dark tone (mean pixel > 0) and of thick stroke (ink
        pixels above a threshold fit on the paired part, and a logistic regression on
        polarity-normalised pixels fit there too; their accuracy on held-out real
        images is given); ``score``: mean discriminator logit on real audit images
        (GAN mix) and on generated images, and per planted group on the audit images
        rendered in all four variants (the same digits in every group), with the share
        of each group scoring above the median score of the real audit images.
    """
    z = torch.randn(n, LATENT_DIM, generator=torch.Generator().manual_seed(seed))
    fake = generator(z)
    threshold, stroke_rule_accuracy = _stroke_threshold(seed)
    stroke_classifier, stroke_classifier_accuracy = _stroke_classifier(seed)
    real, _ = make_set("audit", n=len(digits_split()["audit"]),
                       tone_share_dark=GAN_MIX["tone_dark"],
                       stroke_share_thick=GAN_MIX["stroke_thick"], seed=seed)
    real_tone_rule = (tone_is_dark(real).float().mean().item())
    d_real = discriminator(real).squeeze(1)
    median = d_real.median().item()
    variants = _audit_variants()
    by_variant = {k: discriminator(v).squeeze(1) for k, v in variants.items()}

    def group(key: str) -> torch.Tensor:
        return torch.cat([s for (t, st), s in by_variant.items() if key in (t, st)])

    groups = {g: {"mean_logit": group(g).mean().item(),
                  "share_above_real_median": (group(g) > median).float().mean().item()}
              for g in ("light", "dark", "thin", "thick")}
    return {
        "n_generated": n,
        "generated": {
            "tone_dark_share": tone_is_dark(fake).float().mean().item(),
            "stroke_thick_share": (ink_pixels(fake) > threshold).float().mean().item(),
            "stroke_rule": {"ink_pixel_threshold": threshold,
                            "accuracy_on_held_out_real": stroke_rule_accuracy},
            "stroke_thick_share_logistic": float(stroke_classifier(fake).mean()),
            "stroke_logistic": {"accuracy_on_held_out_real": stroke_classifier_accuracy},
            "tone_rule_dark_share_on_real_audit": real_tone_rule,
        },
        "score": {
            "real_audit_mean_logit": d_real.mean().item(),
            "generated_mean_logit": discriminator(fake).mean().item(),
            "real_audit_median_logit": median,
            "by_group_on_real_audit_all_variants": groups,
        },
    }


# ---------------------------------------------------------------- training


def _recalibrate_batch_norm(generator: nn.Module, *, seed: int, batches: int = 50,
                            batch_size: int = 256) -> None:
    """Set the generator's batch-norm statistics to exact averages over many batches,
    so that eval mode matches what the final weights produce."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    g = torch.Generator().manual_seed(seed)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    generator.train()
    with torch.no_grad():
        for _ in range(batches):
            generator(torch.randn(batch_size, LATENT_DIM, generator=g))
    for m in norms:
        m.momentum = 0.1
    generator.eval()


def _write_safetensors(path: Path, model: nn.Module, *, half: bool = False) -> str:
    """Write ``model``'s state to ``path`` atomically (floating tensors as float16 when
    ``half``); return the file's sha256."""
    from safetensors.torch import save_file

    from audit.io import atomic_path, sha256_file

    tensors = {k: (v.detach().half() if half and v.is_floating_point() else v.detach())
               .contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        # one metadata key: the order of several is not fixed, and would change the sha256
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return sha256_file(path)


def _write_sums(out: Path, sums: dict[str, str]) -> None:
    """SHA256SUMS of ``sums`` ({file: sha256}) in ``out``, atomically."""
    from audit.io import atomic_write_text

    atomic_write_text(out / SUMS_FILE, "".join(f"{h}  {n}\n" for n, h in sums.items()))


def _save_weights(out: Path, generator: nn.Module, discriminator: nn.Module) -> dict[str, str]:
    """Write both safetensors files and SHA256SUMS atomically; return {file: sha256}."""
    sums = {name: _write_safetensors(out / name, model)
            for name, model in ((GENERATOR_FILE, generator), (DISCRIMINATOR_FILE, discriminator))}
    _write_sums(out, sums)
    return sums


@dataclass
class _Gan:
    """The models being trained, the moving average of the generator, and the optimisers."""

    generator: nn.Module
    discriminator: nn.Module
    g_ema: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


def _init_gan(seed: int) -> _Gan:
    """Both networks with DCGAN initialisation seeded by ``seed``, and Adam for each."""
    torch.manual_seed(seed)
    generator = DigitsGenerator()
    discriminator = DigitsDiscriminator()
    for model in (generator, discriminator):
        model.apply(_dcgan_init)
    g_ema = copy.deepcopy(generator).eval().requires_grad_(False)
    return _Gan(generator, discriminator, g_ema,
                torch.optim.Adam(generator.parameters(), lr=LR, betas=BETAS),
                torch.optim.Adam(discriminator.parameters(), lr=LR, betas=BETAS))


def _gan_step(gan: _Gan, real: torch.Tensor, rng: torch.Generator) -> list[float]:
    """One step on a batch of real images (B x 1 x 32 x 32): the discriminator (real -> 1,
    generated -> 0, R1 penalty), the generator (non-saturating loss), then the moving
    average. Returns ``[loss_d, loss_g, mean D(real), mean D(fake)]`` (logits)."""
    b = len(real)
    fake = gan.generator(torch.randn(b, LATENT_DIM, generator=rng)).detach()
    real.requires_grad_(R1_GAMMA > 0)
    d_real, d_fake = gan.discriminator(real), gan.discriminator(fake)
    loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    if R1_GAMMA > 0:
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        loss_d = loss_d + R1_GAMMA / 2 * grad.pow(2).sum(dim=(1, 2, 3)).mean()
    gan.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    gan.opt_d.step()
    fake = gan.generator(torch.randn(b, LATENT_DIM, generator=rng))
    loss_g = F.softplus(-gan.discriminator(fake)).mean()
    gan.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    gan.opt_g.step()
    with torch.no_grad():
        for p_ema, p in zip(gan.g_ema.parameters(), gan.generator.parameters(), strict=True):
            p_ema.lerp_(p, 1 - EMA_DECAY)
        for buf_ema, buf in zip(gan.g_ema.buffers(), gan.generator.buffers(), strict=True):
            buf_ema.copy_(buf)
    return [loss_d.item(), loss_g.item(), d_real.mean().item(), d_fake.mean().item()]


def _train_epoch(gan: _Gan, real_all: torch.Tensor, *, batch_size: int,
                 rng: torch.Generator) -> dict[str, float]:
    """One pass over ``real_all`` (N x 1 x 32 x 32) in a seeded order; the mean of
    :func:`_gan_step`'s numbers over its steps, by name."""
    n = len(real_all)
    order = torch.randperm(n, generator=rng)
    totals = np.zeros(4)
    steps = 0
    gan.generator.train()
    gan.discriminator.train()
    for start in range(0, n, batch_size):
        totals += _gan_step(gan, real_all[order[start:start + batch_size]], rng)
        steps += 1
    return dict(zip(("loss_d", "loss_g", "d_real", "d_fake"), totals / steps, strict=True))


def _train_epochs(gan: _Gan, *, epochs: int, n_epoch: int, batch_size: int, seed: int,
                  log: Callable[[str], None], dark_shares: Sequence[float] | None = None,
                  first_epoch: int = 0,
                  at_epoch_end: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """``epochs`` passes, each over ``n_epoch`` images of the GAN part drawn again in the
    GAN mix (or with the dark-tone share ``dark_shares[i]`` in pass i); one history row per
    epoch (mean losses, the moving-average generator's dark share on a fixed probe of 256
    latents, seconds), also sent to ``log``. Epochs are numbered from ``first_epoch`` + 1
    (a continued run); ``at_epoch_end`` gets each epoch's number when it is done."""
    rng = torch.Generator().manual_seed(seed + 7919 * first_epoch)
    probe = torch.randn(256, LATENT_DIM, generator=torch.Generator().manual_seed(seed + 1))
    history = []
    for i in range(epochs):
        epoch = first_epoch + i + 1
        t0 = time.perf_counter()
        dark = GAN_MIX["tone_dark"] if dark_shares is None else float(dark_shares[i])
        real_all, _ = make_set("gan", n=n_epoch, tone_share_dark=dark,
                               stroke_share_thick=GAN_MIX["stroke_thick"],
                               seed=seed * 100_003 + epoch - 1)
        losses = _train_epoch(gan, real_all, batch_size=batch_size, rng=rng)
        with torch.no_grad():
            probe_dark = tone_is_dark(gan.g_ema(probe)).float().mean().item()
        row = {"epoch": epoch, **{k: round(float(v), 5) for k, v in losses.items()},
               "generated_dark_share": probe_dark,
               **({"mix_tone_dark": dark} if dark_shares is not None else {}),
               "seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        log(f"epoch {epoch}/{first_epoch + epochs}: loss_d={row['loss_d']:.3f} "
            f"loss_g={row['loss_g']:.3f} D(real)={row['d_real']:.2f} "
            f"D(fake)={row['d_fake']:.2f} dark={probe_dark:.2f} ({row['seconds']:.1f} s)")
        if at_epoch_end is not None:
            at_epoch_end(epoch)
    return history


@contextlib.contextmanager
def _one_deterministic_thread() -> Iterator[None]:
    """One CPU thread and deterministic algorithms inside; the previous settings after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def _training_document(*, seed: int, epochs: int, batch_size: int, n_epoch: int,
                       generator: nn.Module, discriminator: nn.Module, sums: dict[str, str],
                       history: list[dict[str, Any]], check: dict[str, Any] | None,
                       seconds: float) -> dict[str, Any]:
    """The content of training.json: settings, sizes, weight hashes, history and check."""
    return {
        "model": "digits-dcgan",
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "images_per_epoch": n_epoch,
        "optimizer": {"name": "Adam", "lr": LR, "betas": list(BETAS)},
        "loss": "non-saturating (softplus), R1 penalty on real images",
        "r1_gamma": R1_GAMMA,
        "ema_decay": EMA_DECAY,
        "mix": dict(GAN_MIX),
        "split": {k: len(v) for k, v in digits_split().items()},
        "latent_dim": LATENT_DIM,
        "parameters": {"generator": sum(p.numel() for p in generator.parameters()),
                       "discriminator": sum(p.numel() for p in discriminator.parameters())},
        "sha256": sums,
        "torch": torch.__version__,
        "history": history,
        "check": check,
        "seconds": round(seconds, 1),
    }


def train(*, out: Path = WEIGHTS_DIR, epochs: int = EPOCHS, seed: int = 0,
          n_images: int | None = None, batch_size: int = BATCH_SIZE, check_n: int = 2000,
          log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Train the demo DCGAN and write its weights, SHA256SUMS and training.json to ``out``.

    Parameters
    ----------
    out : Path
        Output folder (created if needed).
    epochs : int
        Passes over the GAN part; each pass draws the GAN_MIX variants again.
    seed : int
        Seed of everything random (weights, latents, variants, batch order).
    n_images : int, optional
        Images per epoch (default: the whole GAN part, 808 images); small for tests.
    batch_size : int
        Images per step.
    check_n : int
        Generated images measured by :func:`check_models` (0 skips the check).
    log : callable
        Receives one progress line per epoch (default: stderr).

    Returns
    -------
    dict
        The content of training.json.
    """
    from audit.io import atomic_write_json, ensure_dir

    started = time.perf_counter()
    out = ensure_dir(Path(out))
    with _one_deterministic_thread():
        gan = _init_gan(seed)
        n_part = len(digits_split()["gan"])
        n_epoch = n_part if n_images is None else min(int(n_images), n_part)
        history = _train_epochs(gan, epochs=epochs, n_epoch=n_epoch, batch_size=batch_size,
                                seed=seed, log=log)
        generator = gan.g_ema
        _recalibrate_batch_norm(generator, seed=seed)
        discriminator = gan.discriminator.eval()
        sums = _save_weights(out, generator, discriminator)
        check = check_models(generator, discriminator, n=check_n, seed=seed) if check_n else None
    summary = _training_document(seed=seed, epochs=epochs, batch_size=batch_size,
                                 n_epoch=n_epoch, generator=generator,
                                 discriminator=discriminator, sums=sums, history=history,
                                 check=check, seconds=time.perf_counter() - started)
    atomic_write_json(out / "training.json", summary)
    return summary


@torch.no_grad()
def generated_dark_share(generator: nn.Module, *, n: int = track.TRUTH_N, seed: int = 0,
                         batch: int = 2000) -> float:
    """Share (fraction) of ``n`` generated images (latents of ``seed``) that are dark tone by
    the pixel rule :func:`tone_is_dark`: the planted truth of a demo generator."""
    z = torch.randn(n, LATENT_DIM, generator=torch.Generator().manual_seed(seed))
    dark = sum(int(tone_is_dark(generator(z[i:i + batch])).sum()) for i in range(0, n, batch))
    return dark / n


def _warm_gan(base: Path) -> _Gan:
    """The GAN of the weights in ``base`` (generator, its moving average: both the saved
    generator; the discriminator), with fresh Adam optimisers."""
    from audit.demo.models import _load_weights

    saved = _load_weights(GENERATOR_FILE, DigitsGenerator(), folder=base)
    generator = copy.deepcopy(saved).train().requires_grad_(True)
    discriminator = _load_weights(DISCRIMINATOR_FILE, DigitsDiscriminator(), folder=base)
    discriminator.train().requires_grad_(True)
    return _Gan(generator, discriminator, saved.eval().requires_grad_(False),
                torch.optim.Adam(generator.parameters(), lr=LR, betas=BETAS),
                torch.optim.Adam(discriminator.parameters(), lr=LR, betas=BETAS))


def _save_checkpoint(out: Path, gan: _Gan, epoch: int, *, seed: int) -> dict[str, str]:
    """Checkpoint ``epoch``: the moving-average generator (batch norm recalibrated, on a
    copy) and the discriminator, as float16 safetensors; {file: sha256}."""
    generator = copy.deepcopy(gan.g_ema)
    _recalibrate_batch_norm(generator, seed=seed)
    g_file, d_file = track.checkpoint_files(epoch)
    return {g_file: _write_safetensors(out / g_file, generator, half=True),
            d_file: _write_safetensors(out / d_file, gan.discriminator, half=True)}


def _measure_checkpoints(out: Path, base: Path, save_epochs: Sequence[int], *, truth_n: int,
                         check_n: int, seed: int) -> list[dict[str, Any]]:
    """The planted truth (:func:`generated_dark_share`) and :func:`check_models` of the base
    and of every checkpoint, each loaded back from its file (what ships is what is measured)."""
    from audit.demo.models import _load_weights

    points = [("builtin:digits-dcgan", track.BASE_EPOCHS, (GENERATOR_FILE, DISCRIMINATOR_FILE),
               base)]
    points += [(f"builtin:{track.checkpoint_name(e)}", e, track.checkpoint_files(e), out)
               for e in save_epochs]
    rows = []
    for spec, epoch, files, folder in points:
        generator = _load_weights(files[0], DigitsGenerator(), folder=folder)
        discriminator = _load_weights(files[1], DigitsDiscriminator(), folder=folder)
        rows.append({"spec": spec, "epoch": epoch, "files": list(files),
                     "dark_share": generated_dark_share(generator, n=truth_n, seed=seed),
                     "check": check_models(generator, discriminator, n=check_n, seed=seed)
                     if check_n else None})
    return rows


def train_track(*, out: Path | None = None, base: Path | None = None, seed: int = 0,
                schedule: Sequence[float] = track.TRACK_SCHEDULE,
                save_epochs: Sequence[int] = track.TRACK_SAVE_EPOCHS,
                n_images: int | None = None, batch_size: int = BATCH_SIZE,
                truth_n: int = track.TRUTH_N, check_n: int = 2000,
                log: Callable[[str], None] = _log) -> dict[str, Any]:
    """The demo's short training run (:mod:`audit.demo.checkpoints`): continue the demo GAN
    in ``base`` for ``len(schedule)`` epochs with the dark-tone share of the training mix of
    each epoch from ``schedule``, saving float16 checkpoints after ``save_epochs`` (counted
    from the start of the demo's training), then measure each (and the base).

    Parameters
    ----------
    out : Path
        Output folder (default ``weights/track``): the checkpoint files, their SHA256SUMS
        and training.json (schedule, history, and per checkpoint the planted truth
        ``dark_share`` and :func:`check_models`).
    base : Path
        Folder of the demo GAN to continue (default the shipped weights).
    seed, n_images, batch_size, check_n
        As :func:`train`; ``truth_n`` latents measure each checkpoint's dark share.

    Returns
    -------
    dict
        The content of training.json.
    """
    from audit.demo.models import read_sha256sums
    from audit.io import atomic_write_json, ensure_dir

    started = time.perf_counter()
    out = ensure_dir(Path(out) if out is not None else WEIGHTS_DIR / track.TRACK_SUBDIR)
    base = Path(base) if base is not None else WEIGHTS_DIR
    sums: dict[str, str] = {}

    def save(epoch: int) -> None:
        if epoch in save_epochs:
            sums.update(_save_checkpoint(out, gan, epoch, seed=seed))
            _write_sums(out, sums)

    with _one_deterministic_thread():
        gan = _warm_gan(base)
        n_part = len(digits_split()["gan"])
        n_epoch = n_part if n_images is None else min(int(n_images), n_part)
        history = _train_epochs(gan, epochs=len(schedule), n_epoch=n_epoch,
                                batch_size=batch_size, seed=seed, log=log,
                                dark_shares=schedule, first_epoch=track.BASE_EPOCHS,
                                at_epoch_end=save)
        measured = _measure_checkpoints(out, base, save_epochs, truth_n=truth_n,
                                        check_n=check_n, seed=seed)
    summary = {"model": "digits-dcgan", "run": "track", "seed": seed,
               "base": {"epochs": track.BASE_EPOCHS,
                        "sha256": read_sha256sums(base / SUMS_FILE)},
               "schedule_tone_dark": list(schedule), "save_epochs": list(save_epochs),
               "mix_stroke_thick": GAN_MIX["stroke_thick"], "batch_size": batch_size,
               "images_per_epoch": n_epoch, "float16": True, "truth_n": truth_n,
               "sha256": sums, "torch": torch.__version__, "history": history,
               "checkpoints": measured,
               "truth": {row["spec"]: row["dark_share"] for row in measured},
               "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_json(out / "training.json", summary)
    return summary


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of ``python -m audit.demo.train``."""
    parser = argparse.ArgumentParser(
        prog="python -m audit.demo.train",
        description="Train the demo DCGAN on the digits in the imbalanced GAN mix and write "
                    "its weights (safetensors), SHA256SUMS and training.json; with --track, "
                    "continue it with a falling dark-tone share and write the checkpoints.",
        epilog="Example: python -m audit.demo.train --out audit/demo/weights --epochs 60; "
               "python -m audit.demo.train --track")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default audit/demo/weights, --track: its track/)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="training epochs")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--track", action="store_true",
                        help="the demo's training run: checkpoints of the shipped demo GAN "
                             "continued on a falling dark-tone share (audit.demo.checkpoints)")
    args = parser.parse_args(argv)
    if args.track:
        summary = train_track(out=args.out, seed=args.seed)
        shares = ", ".join(f"{k.removeprefix('builtin:')} {v:.3f}"
                           for k, v in summary["truth"].items())
        print(f"wrote {len(summary['sha256'])} checkpoint files in {summary['seconds']} s; "
              f"generated dark tone: {shares}")
        return 0
    out = WEIGHTS_DIR if args.out is None else args.out
    summary = train(out=out, epochs=args.epochs, seed=args.seed)
    check = summary["check"]
    print(f"wrote {out} in {summary['seconds']} s; generated dark tone "
          f"{check['generated']['tone_dark_share']:.3f}, thick stroke "
          f"{check['generated']['stroke_thick_share']:.3f} (trained on "
          f"{GAN_MIX['tone_dark']} / {GAN_MIX['stroke_thick']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
