"""A plain DCGAN at 32 px in the style of the PyTorch DCGAN tutorial, for gan-audit's tests:
the networks of the user's own Python file of ``examples/mnist_state_dict.yaml`` (one
channel by default), saved as one checkpoint of plain state_dicts
(``torch.save({"D": D.state_dict(), "G": G.state_dict()}, path)``).

The discriminator ends in a sigmoid (a probability: ``score_output: probability``) and
returns N x 1 x 1 x 1; batch norm runs in eval mode from its running statistics. The
generator takes N x nz latents (reshaped to N x nz x 1 x 1 for its transposed
convolutions, as many ports of the tutorial do) and ends in tanh ([-1, 1]).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Discriminator(nn.Module):
    def __init__(self, ndf: int = 16, nc: int = 1) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class Generator(nn.Module):
    def __init__(self, nz: int = 32, ngf: int = 16, nc: int = 1) -> None:
        super().__init__()
        self.nz = nz
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))


def build(folder: Path, *, seed: int = 0, ndf: int = 16, nz: int = 32, ngf: int = 16
          ) -> Path:
    """Write ``gan.pt``: ``{"D": state_dict, "G": state_dict}``; its path."""
    torch.manual_seed(seed)
    path = Path(folder) / "gan.pt"
    torch.save({"D": Discriminator(ndf=ndf).state_dict(),
                "G": Generator(nz=nz, ngf=ngf).state_dict()}, path)
    return path
