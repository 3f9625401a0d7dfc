"""Shared fixtures: tiny models and seeded data, so tests run in seconds on a CPU.

Later stages extend this file; keep fixtures small and seeded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores are shared by everything here: keep torch to one thread in tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cs():
    """The demo's concept set (digit, and the protected tone and stroke)."""
    from audit.concepts import load_concept_set

    return load_concept_set("digits_tone")


@pytest.fixture
def tiny_discriminator():
    """A two-conv-layer discriminator for 1 x 16 x 16 images; returns one logit per image."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),   # "0": 4 x 8 x 8
        nn.LeakyReLU(0.2),                          # "1"
        nn.Conv2d(4, 8, 3, stride=2, padding=1),   # "2": 8 x 4 x 4
        nn.LeakyReLU(0.2),                          # "3"
        nn.Flatten(),                               # "4"
        nn.Linear(8 * 4 * 4, 1),                    # "5"
    )
    return model.eval()


@pytest.fixture
def tiny_images():
    """32 seeded images, 1 x 16 x 16, values in [-1, 1]."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.rand(32, 1, 16, 16, generator=g) * 2 - 1
