"""Small re-implementations of torch-mimicry's SNGAN at 32 px (``SNGANDiscriminator32``,
``SNGANGenerator32``), for gan-audit's tests; not its code.

Kept, because they change an audit:

- every residual block holds ONE ``nn.ReLU(True)`` module (``activation``) and calls it
  twice in its forward, and the discriminator calls its own ``activation`` once more at
  the end: a forward hook on such a module fires once per call, so "its output" is
  ambiguous (and the in-place ReLU also rewrites the block's input before the shortcut
  reads it, as in the original);
- spectrally normalised layers keep their normaliser in buffers (``sn_sigma``), used as
  is in eval mode;
- checkpoints are dicts ``{'model_state_dict', 'optimizer_state_dict', 'global_step'}``
  (``weights_key: model_state_dict``); images in [-1, 1] (tanh).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _sigma(weight: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """The largest singular value of ``weight`` (as a matrix out x rest), power iteration."""
    w = weight.reshape(weight.shape[0], -1)
    u = F.normalize(torch.randn(w.shape[0], generator=torch.Generator().manual_seed(0)), dim=0)
    for _ in range(iterations):
        v = F.normalize(w.t() @ u, dim=0)
        u = F.normalize(w @ v, dim=0)
    return (u @ w @ v).reshape(1)


class SNConv2d(nn.Conv2d):
    """Conv2d whose weight is divided by its spectral norm (stored in ``sn_sigma``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("sn_sigma", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight / self.sn_sigma, self.bias, self.stride, self.padding)


class SNLinear(nn.Linear):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("sn_sigma", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight / self.sn_sigma, self.bias)


def normalise(module: nn.Module) -> nn.Module:
    """Set every ``sn_sigma`` from its weight (what training's power iteration converges to)."""
    for sub in module.modules():
        if isinstance(sub, (SNConv2d, SNLinear)):
            sub.sn_sigma.copy_(_sigma(sub.weight.detach()))
    return module


class DBlockOptimized(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.c1 = SNConv2d(in_channels, out_channels, 3, 1, 1)
        self.c2 = SNConv2d(out_channels, out_channels, 3, 1, 1)
        self.c_sc = SNConv2d(in_channels, out_channels, 1, 1, 0)
        self.activation = nn.ReLU(True)
        nn.init.xavier_uniform_(self.c1.weight.data, math.sqrt(2.0))
        nn.init.xavier_uniform_(self.c2.weight.data, math.sqrt(2.0))
        nn.init.xavier_uniform_(self.c_sc.weight.data, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.c2(self.activation(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class DBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, downsample: bool = False) -> None:
        super().__init__()
        self.downsample = downsample
        self.learnable_sc = in_channels != out_channels or downsample
        self.c1 = SNConv2d(in_channels, in_channels, 3, 1, 1)
        self.c2 = SNConv2d(in_channels, out_channels, 3, 1, 1)
        self.activation = nn.ReLU(True)
        nn.init.xavier_uniform_(self.c1.weight.data, math.sqrt(2.0))
        nn.init.xavier_uniform_(self.c2.weight.data, math.sqrt(2.0))
        if self.learnable_sc:
            self.c_sc = SNConv2d(in_channels, out_channels, 1, 1, 0)
            nn.init.xavier_uniform_(self.c_sc.weight.data, 1.0)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation(x)              # the same module, called twice
        h = self.c1(h)
        h = self.activation(h)
        h = self.c2(h)
        return F.avg_pool2d(h, 2) if self.downsample else h

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.learnable_sc:
            return x
        x = self.c_sc(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._residual(x) + self._shortcut(x)


class SNGANDiscriminator32(nn.Module):
    """Images N x 3 x 32 x 32 in [-1, 1] -> N x 1 logits."""

    def __init__(self, ndf: int = 16, loss_type: str = "hinge") -> None:
        super().__init__()
        self.ndf = ndf
        self.loss_type = loss_type
        self.block1 = DBlockOptimized(3, ndf)
        self.block2 = DBlock(ndf, ndf, downsample=True)
        self.block3 = DBlock(ndf, ndf, downsample=False)
        self.block4 = DBlock(ndf, ndf, downsample=False)
        self.l5 = SNLinear(ndf, 1)
        self.activation = nn.ReLU(True)
        nn.init.xavier_uniform_(self.l5.weight.data, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block4(self.block3(self.block2(self.block1(x))))
        h = torch.sum(self.activation(h), dim=(2, 3))
        return self.l5(h)


class GBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, upsample: bool = False) -> None:
        super().__init__()
        self.upsample = upsample
        self.c1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.c2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.b1 = nn.BatchNorm2d(in_channels)
        self.b2 = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU(True)
        self.c_sc = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear",
                             align_corners=False) if self.upsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(self._up(self.activation(self.b1(x))))
        h = self.c2(self.activation(self.b2(h)))
        return h + self.c_sc(self._up(x))


class SNGANGenerator32(nn.Module):
    """Latents N x nz -> images N x 3 x 32 x 32 in [-1, 1]."""

    def __init__(self, nz: int = 32, ngf: int = 16, bottom_width: int = 4) -> None:
        super().__init__()
        self.nz = nz
        self.ngf = ngf
        self.bottom_width = bottom_width
        self.l1 = nn.Linear(nz, bottom_width ** 2 * ngf)
        self.block2 = GBlock(ngf, ngf, upsample=True)
        self.block3 = GBlock(ngf, ngf, upsample=True)
        self.block4 = GBlock(ngf, ngf, upsample=True)
        self.b5 = nn.BatchNorm2d(ngf)
        self.c5 = nn.Conv2d(ngf, 3, 3, 1, padding=1)
        self.activation = nn.ReLU(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.l1(x).view(x.shape[0], -1, self.bottom_width, self.bottom_width)
        h = self.block4(self.block3(self.block2(h)))
        return torch.tanh(self.c5(self.activation(self.b5(h))))


def checkpoint(model: nn.Module, path: Path, *, global_step: int = 100_000) -> Path:
    """Save as torch-mimicry's ``save_checkpoint`` does (a dict, weights under
    ``model_state_dict``)."""
    torch.save({"model_state_dict": model.state_dict(),
                "optimizer_state_dict": {"state": {}, "param_groups": [
                    {"lr": 2e-4, "betas": (0.0, 0.9), "params": [0, 1]}]},
                "global_step": global_step}, path)
    return path


def build(folder: Path, *, seed: int = 0) -> dict[str, Path]:
    """Write ``netD.pth`` and ``netG.pth`` checkpoints; ``{"D": path, "G": path}``."""
    torch.manual_seed(seed)
    return {"D": checkpoint(normalise(SNGANDiscriminator32()), Path(folder) / "netD.pth"),
            "G": checkpoint(SNGANGenerator32(), Path(folder) / "netG.pth")}
