"""The demo digits: a fixed split by image, planted tone and stroke, exact shares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.demo.data import (
    BUILTIN_SOURCES,
    GAN_MIX,
    builtin_source,
    digits_split,
    make_set,
    render,
)
from audit.errors import DataError


def _digits():
    from sklearn.datasets import load_digits

    return load_digits()


def test_split_is_disjoint_and_covers_every_image():
    split = digits_split()
    assert set(split) == {"gan", "paired", "audit"}
    joined = np.concatenate(list(split.values()))
    assert len(joined) == len(np.unique(joined)) == 1797
    assert set(joined.tolist()) == set(range(1797))
    sizes = {k: len(v) / 1797 for k, v in split.items()}
    assert sizes == pytest.approx({"gan": 0.45, "paired": 0.30, "audit": 0.25}, abs=0.01)


def test_split_is_stratified_and_stable():
    target = _digits().target
    split = digits_split()
    for idx in split.values():
        counts = np.bincount(target[idx], minlength=10)
        assert counts.min() > 0.8 * counts.mean()
    again = digits_split()
    for part in split:
        np.testing.assert_array_equal(split[part], again[part])


def test_render_plants_the_truth():
    images = _digits().images[:50]
    light_thin = render(images, tone="light", stroke="thin")
    assert light_thin.shape == (50, 1, 32, 32) and light_thin.dtype == torch.float32
    assert light_thin.min() >= -1 and light_thin.max() <= 1
    # light tone: the ground (the corners of 8x8 digits are blank) is -1
    assert (light_thin[:, 0, 0, 0] == -1).all()
    for stroke in ("thin", "thick"):
        light = render(images, tone="light", stroke=stroke)
        dark = render(images, tone="dark", stroke=stroke)
        assert torch.equal(dark, -light)
    thin_ink = (render(images, tone="light", stroke="thin") > 0).sum(dim=(1, 2, 3))
    thick_ink = (render(images, tone="light", stroke="thick") > 0).sum(dim=(1, 2, 3))
    assert (thick_ink > thin_ink).all()
    # thick is a dilation: every thin ink pixel stays ink
    thin = render(images, tone="light", stroke="thin")
    thick = render(images, tone="light", stroke="thick")
    assert (thick >= thin).all()


def test_render_accepts_its_own_32px_output_and_rejects_other_shapes():
    images = _digits().images[:5]
    base = render(images, tone="light", stroke="thin")
    again = render(base, tone="dark", stroke="thick")
    torch.testing.assert_close(again, render(images, tone="dark", stroke="thick"))
    with pytest.raises(DataError, match="expected N x 8 x 8"):
        render(np.zeros((2, 16, 16)), tone="light", stroke="thin")
    with pytest.raises(DataError, match="unknown tone"):
        render(images, tone="grey", stroke="thin")


@pytest.mark.parametrize("n,dark,thick", [(100, 0.2, 0.3), (37, 0.5, 0.1), (1000, 0.2, 0.3)])
def test_make_set_hits_exact_shares_and_is_deterministic(n, dark, thick):
    images, labels = make_set("audit", n=n, tone_share_dark=dark, stroke_share_thick=thick,
                              seed=3)
    assert images.shape == (n, 1, 32, 32) and images.dtype == torch.float32
    assert list(labels.columns) == ["image_id", "digit", "tone", "stroke"]
    assert (labels["tone"] == "dark").sum() == round(n * dark)
    assert (labels["stroke"] == "thick").sum() == round(n * thick)
    assert labels["image_id"].is_unique
    assert set(labels["digit"]) <= {str(d) for d in range(10)}
    images2, labels2 = make_set("audit", n=n, tone_share_dark=dark, stroke_share_thick=thick,
                                seed=3)
    assert torch.equal(images, images2)
    assert labels.equals(labels2)
    _, labels3 = make_set("audit", n=n, tone_share_dark=dark, stroke_share_thick=thick, seed=4)
    assert not labels["image_id"].equals(labels3["image_id"])


def test_make_set_images_match_their_labels():
    data = _digits()
    images, labels = make_set("paired", n=60, tone_share_dark=0.5, stroke_share_thick=0.5,
                              seed=0)
    for row, image in zip(labels.itertuples(), images, strict=True):
        _, part, index, tone, stroke = row.image_id.split("-")
        assert (part, tone, stroke) == ("paired", row.tone, row.stroke)
        assert int(index) in set(digits_split()["paired"].tolist())
        assert row.digit == str(data.target[int(index)])
        expected = render(data.images[int(index)][None], tone=tone, stroke=stroke)[0]
        torch.testing.assert_close(image, expected)


def test_make_set_draws_each_image_once_up_to_the_part_size():
    m = len(digits_split()["audit"])
    _, labels = make_set("audit", n=m, tone_share_dark=0.2, stroke_share_thick=0.3, seed=0)
    index = labels["image_id"].str.split("-").str[2]
    assert index.is_unique


def test_make_set_beyond_the_part_repeats_images_with_unique_ids():
    m = len(digits_split()["audit"])
    _, labels = make_set("audit", n=1000, tone_share_dark=0.2, stroke_share_thick=0.3, seed=0)
    assert labels["image_id"].is_unique
    repeats = labels["image_id"].str.contains("-r2$")
    light_thin = ((labels["tone"] == "light") & (labels["stroke"] == "thin")).sum()
    assert repeats.sum() == light_thin - m  # only the variant with more than m images repeats
    assert set(labels.loc[repeats, "tone"]) == {"light"}
    _, labels = make_set("audit", n=2 * m, tone_share_dark=0.5, stroke_share_thick=0.5, seed=0)
    assert not labels["image_id"].str.contains("-r").any()  # no variant needs > m images


def test_balanced_set_renders_every_image_in_all_four_variants():
    _, labels = make_set("paired", n=80, tone_share_dark=0.5, stroke_share_thick=0.5, seed=1,
                         balanced=True)
    index = labels["image_id"].str.split("-").str[2]
    assert index.nunique() == 20
    variants = labels.groupby(index)[["tone", "stroke"]].apply(
        lambda g: set(zip(g["tone"], g["stroke"], strict=True)))
    assert all(len(v) == 4 for v in variants)
    with pytest.raises(DataError, match="multiple of 4"):
        make_set("paired", n=81, tone_share_dark=0.5, stroke_share_thick=0.5, seed=1,
                 balanced=True)
    with pytest.raises(DataError, match=r"both shares must be 0\.5"):
        make_set("paired", n=80, tone_share_dark=0.2, stroke_share_thick=0.5, seed=1,
                 balanced=True)


def test_make_set_refuses_what_it_cannot_draw():
    with pytest.raises(DataError, match="unknown part"):
        make_set("train", n=10, tone_share_dark=0.2, stroke_share_thick=0.3, seed=0)
    with pytest.raises(DataError, match="between 0 and 1"):
        make_set("audit", n=10, tone_share_dark=1.2, stroke_share_thick=0.0, seed=0)


def test_builtin_sources():
    split = digits_split()
    images, labels = builtin_source("digits-paired")
    assert len(labels) == 4 * len(split["paired"]) == len(images)
    assert (labels["tone"] == "dark").mean() == 0.5 and (labels["stroke"] == "thick").mean() == 0.5
    images, labels = builtin_source("builtin:digits-audit", n=200, seed=2)
    assert images.shape == (200, 1, 32, 32)
    assert (labels["tone"] == "dark").sum() == round(200 * GAN_MIX["tone_dark"])
    assert (labels["stroke"] == "thick").sum() == round(200 * GAN_MIX["stroke_thick"])
    _, labels = builtin_source("digits-audit")
    assert len(labels) == len(split["audit"])
    with pytest.raises(DataError, match="known sources: builtin:digits-paired") as info:
        builtin_source("digits-gan")
    for name in BUILTIN_SOURCES:
        assert name in str(info.value)
