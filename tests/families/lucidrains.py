"""Small re-implementations of lucidrains/stylegan2-pytorch's networks (``Discriminator``,
``Generator``, ``StyleVectorizer``), for gan-audit's tests; not its code.

Kept, because they change an audit:

- images are in [0, 1] (the repository's data loader uses ``ToTensor()``); the real
  generator returns its RGB unclamped (a trained one overshoots [0, 1] a little; the
  trainer clamps when it saves samples). Here a sigmoid keeps an untrained network's images
  in [0, 1]; the range check's overshoot case is tested on synthetic images
  (tests/test_models.py::test_the_range_check_reads_quantiles_not_extremes);
- the generator's forward takes per-layer styles and a noise image, not a latent:
  users audit it through a small wrapper (:class:`LatentGenerator`, what a user writes:
  latent -> style vectorizer -> styles for every layer, fresh uniform noise per call);
- the discriminator returns a tuple ``(logits.squeeze(), quantize_loss)``: the logits of a
  batch of one image are a 0-dim tensor;
- blocks are ``blocks.N`` (a ModuleList), each a residual block with a 1x1 ``conv_res``
  shortcut and a ``net`` Sequential.

Weights are saved as two plain state_dicts (``D.pt`` and ``G.pt``), as a user makes them
from the repository's ``model_N.pt`` checkpoint (``{'GAN': state_dict, ...}``: the keys
under ``D.``, and under ``SE.`` / ``GE.`` for the moving-average generator).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8


def leaky_relu(p: float = 0.2) -> nn.Module:
    return nn.LeakyReLU(p, inplace=True)


class StyleVectorizer(nn.Module):
    def __init__(self, emb: int, depth: int, lr_mul: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers.extend([nn.Linear(emb, emb), leaky_relu()])
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(F.normalize(x, dim=1))


class Conv2DMod(nn.Module):
    """Modulated convolution (weights scaled by style + 1, demodulated)."""

    def __init__(self, in_chan: int, out_chan: int, kernel: int, demod: bool = True) -> None:
        super().__init__()
        self.filters = out_chan
        self.demod = demod
        self.kernel = kernel
        self.weight = nn.Parameter(torch.randn((out_chan, in_chan, kernel, kernel)))
        nn.init.kaiming_normal_(self.weight, a=0, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        weights = self.weight[None] * (y[:, None, :, None, None] + 1)
        if self.demod:
            weights = weights * torch.rsqrt((weights ** 2).sum(dim=(2, 3, 4), keepdim=True)
                                            + EPS)
        x = F.conv2d(x.reshape(1, -1, h, w), weights.reshape(b * self.filters,
                                                             *weights.shape[2:]),
                     padding=self.kernel // 2, groups=b)
        return x.reshape(-1, self.filters, h, w)


class RGBBlock(nn.Module):
    def __init__(self, latent_dim: int, input_channel: int, upsample: bool) -> None:
        super().__init__()
        self.to_style = nn.Linear(latent_dim, input_channel)
        self.conv = Conv2DMod(input_channel, 3, 1, demod=False)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear",
                                    align_corners=False) if upsample else None

    def forward(self, x: torch.Tensor, prev_rgb: torch.Tensor | None,
                istyle: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, self.to_style(istyle))
        if prev_rgb is not None:
            x = x + prev_rgb
        return self.upsample(x) if self.upsample is not None else x


class GeneratorBlock(nn.Module):
    def __init__(self, latent_dim: int, input_channels: int, filters: int, upsample: bool = True,
                 upsample_rgb: bool = True) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear",
                                    align_corners=False) if upsample else None
        self.to_style1 = nn.Linear(latent_dim, input_channels)
        self.to_noise1 = nn.Linear(1, filters)
        self.conv1 = Conv2DMod(input_channels, filters, 3)
        self.to_style2 = nn.Linear(latent_dim, filters)
        self.to_noise2 = nn.Linear(1, filters)
        self.conv2 = Conv2DMod(filters, filters, 3)
        self.activation = leaky_relu()
        self.to_rgb = RGBBlock(latent_dim, filters, upsample_rgb)

    def forward(self, x: torch.Tensor, prev_rgb: torch.Tensor | None, istyle: torch.Tensor,
                inoise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.upsample is not None:
            x = self.upsample(x)
        inoise = inoise[:, :x.shape[2], :x.shape[3], :]
        noise1 = self.to_noise1(inoise).permute((0, 3, 2, 1))
        noise2 = self.to_noise2(inoise).permute((0, 3, 2, 1))
        x = self.activation(self.conv1(x, self.to_style1(istyle)) + noise1)
        x = self.activation(self.conv2(x, self.to_style2(istyle)) + noise2)
        return x, self.to_rgb(x, prev_rgb, istyle)


class Generator(nn.Module):
    """forward(styles N x num_layers x latent_dim, input_noise N x H x W x 1) -> images in
    [0, 1] (a sigmoid on the summed RGB outputs, where the real one returns them raw: see
    the module docstring)."""

    def __init__(self, image_size: int = 32, latent_dim: int = 32,
                 network_capacity: int = 4) -> None:
        super().__init__()
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.num_layers = int(math.log2(image_size) - 1)
        filters = [network_capacity * (2 ** (i + 1)) for i in range(self.num_layers)][::-1]
        filters = [filters[0], *filters]
        self.initial_block = nn.Parameter(torch.randn((1, filters[0], 4, 4)))
        self.blocks = nn.ModuleList([
            GeneratorBlock(latent_dim, c_in, c_out, upsample=i != 0,
                           upsample_rgb=i != self.num_layers - 1)
            for i, (c_in, c_out) in enumerate(itertools.pairwise(filters))])

    def forward(self, styles: torch.Tensor, input_noise: torch.Tensor) -> torch.Tensor:
        x = self.initial_block.expand(styles.shape[0], -1, -1, -1)
        rgb = None
        for style, block in zip(styles.transpose(0, 1), self.blocks, strict=True):
            x, rgb = block(x, rgb, style, input_noise)
        return torch.sigmoid(rgb)


class DiscriminatorBlock(nn.Module):
    def __init__(self, input_channels: int, filters: int, downsample: bool = True) -> None:
        super().__init__()
        self.conv_res = nn.Conv2d(input_channels, filters, 1, stride=2 if downsample else 1)
        self.net = nn.Sequential(nn.Conv2d(input_channels, filters, 3, padding=1), leaky_relu(),
                                 nn.Conv2d(filters, filters, 3, padding=1), leaky_relu())
        self.downsample = nn.Conv2d(filters, filters, 3, padding=1, stride=2) \
            if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv_res(x)
        x = self.net(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return (x + res) * (1 / math.sqrt(2))


class Discriminator(nn.Module):
    """Images N x 3 x S x S in [0, 1] -> ``(logits.squeeze(), quantize_loss)``."""

    def __init__(self, image_size: int = 32, network_capacity: int = 4) -> None:
        super().__init__()
        num_layers = int(math.log2(image_size) - 1)
        filters = [3] + [network_capacity * (2 ** i) for i in range(num_layers + 1)]
        pairs = list(itertools.pairwise(filters))
        self.blocks = nn.ModuleList([DiscriminatorBlock(c_in, c_out,
                                                        downsample=i != len(pairs) - 1)
                                     for i, (c_in, c_out) in enumerate(pairs)])
        self.flatten = nn.Flatten()
        self.to_logit = nn.Linear(2 * 2 * filters[-1], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quantize_loss = torch.zeros(1).to(x)
        for block in self.blocks:
            x = block(x)
        x = self.to_logit(self.flatten(x))
        return x.squeeze(), quantize_loss


class LatentGenerator(nn.Module):
    """What a user writes to audit the repository's generator: a latent (N x latent_dim) ->
    the style vectorizer -> the same style for every layer -> images in [0, 1]."""

    def __init__(self, image_size: int = 32, latent_dim: int = 32, network_capacity: int = 4,
                 style_depth: int = 2) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.S = StyleVectorizer(latent_dim, style_depth)
        self.G = Generator(image_size, latent_dim, network_capacity)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.S(z)
        styles = w[:, None, :].expand(-1, self.G.num_layers, -1)
        noise = torch.rand(z.shape[0], self.G.image_size, self.G.image_size, 1,
                           device=z.device)
        return self.G(styles, noise)


def build(folder: Path, *, seed: int = 0) -> dict[str, Path]:
    """Write ``D.pt`` and ``G.pt`` (state_dicts) at 32 px; ``{"D": path, "G": path}``."""
    torch.manual_seed(seed)
    paths = {"D": Path(folder) / "D.pt", "G": Path(folder) / "G.pt"}
    torch.save(Discriminator().state_dict(), paths["D"])
    torch.save(LatentGenerator().state_dict(), paths["G"])
    return paths
