"""Class-conditional models: each image is scored with its own class.

Real images take their class from their labels (``discriminator.class_source``);
generated images take the class the generator was given (``generator.class_sampling``).
The test networks make the class visible: the generator paints class k as brightness k,
and the discriminator's score is the index of the class it was given (plus a little of
the image), so a wrong or default class shows in the stored scores.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_images import TONE, write_png

from audit.config import DiscriminatorConfig, GeneratorConfig, ImageSourceConfig
from audit.errors import ConfigError, DataError, ModelLoadError
from audit.extract import extract
from audit.images import GeneratedSource, load_images
from audit.load import image_seed, load_discriminator, load_generator

NETS = textwrap.dedent('''
    import torch
    from torch import nn


    class ClassD(nn.Module):
        """Score = class index given + 0.001 * mean brightness."""

        img_resolution = 8
        img_channels = 1
        c_dim = 3

        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, img, c):
            h = self.body(img)
            k = (c * torch.arange(3.0)).sum(1, keepdim=True)
            return k + 0.001 * img.mean(dim=(1, 2, 3))[:, None] + 0 * h.mean()


    class ClassG(nn.Module):
        """Class k -> a flat image of brightness (k - 1) / 2 in [-1, 1]."""

        z_dim = 4
        c_dim = 3

        def __init__(self):
            super().__init__()
            self.unused = nn.Linear(1, 1)

        def forward(self, z, c):
            k = (c * torch.arange(3.0)).sum(1)
            return ((k - 1) / 2)[:, None, None, None].expand(len(z), 1, 8, 8) + 0 * z.mean()
''')


@pytest.fixture
def nets(tmp_path: Path) -> Path:
    path = tmp_path / "class_nets.py"
    path.write_text(NETS)
    return path


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    """Six images with a class column (names for two of them, mapped by 'values')."""
    root = tmp_path / "imgs"
    for i in range(6):
        write_png(root / f"im{i}.png", 30 * i)
    pd.DataFrame({"image": [f"im{i}.png" for i in range(6)],
                  "tone": ["light", "dark"] * 3,
                  "cls": [0, 2, 1, "cat", 0, "dog"]}).to_csv(tmp_path / "labels.csv",
                                                            index=False)
    return root


CLASS_SOURCE = {"type": "column", "column": "cls", "values": {"cat": 1, "dog": 2}}


def test_real_images_are_scored_with_their_own_class(nets, labelled, tmp_path):
    d = DiscriminatorConfig(spec=f"python:{nets}:ClassD", class_source=CLASS_SOURCE)
    model = load_discriminator(d)
    source = load_images(ImageSourceConfig(source=f"folder:{labelled}",
                                           labels=tmp_path / "labels.csv"),
                         concept_set=TONE, input=model.input, class_source=d.class_source)
    np.testing.assert_array_equal(source.class_labels, [0, 2, 1, 1, 0, 2])
    store = extract(model, ["body"], source, out=tmp_path / "s", batch_size=4, progress=False,
                    class_labels=source.class_labels)
    np.testing.assert_allclose(np.round(store.scores()), [0, 2, 1, 1, 0, 2])


def test_a_missing_class_names_the_image(nets, labelled, tmp_path):
    table = pd.read_csv(tmp_path / "labels.csv")
    table.loc[3, "cls"] = None
    table.to_csv(tmp_path / "holes.csv", index=False)
    cfg = ImageSourceConfig(source=f"folder:{labelled}", labels=tmp_path / "holes.csv")
    with pytest.raises(DataError, match=r"image 'im3.png' has class missing in 'column:cls'"):
        load_images(cfg, concept_set=TONE, class_source=DiscriminatorConfig(
            spec="builtin:x", class_source=CLASS_SOURCE).class_source)
    with pytest.raises(DataError, match=r"has class 'cat'.*class_source.values"):
        load_images(ImageSourceConfig(source=f"folder:{labelled}",
                                      labels=tmp_path / "labels.csv"),
                    concept_set=TONE, class_source=DiscriminatorConfig(
                        spec="builtin:x", class_source={"type": "column", "column": "cls"}
                    ).class_source)


@pytest.mark.parametrize("batch_size", [2, 5])
def test_generated_images_carry_the_class_they_were_made_with(nets, tmp_path, batch_size):
    g = GeneratorConfig(spec=f"python:{nets}:ClassG", n=9, seed=4, class_sampling="uniform")
    gen = load_generator(g)
    # Real images would get class 0; generated ones carry their own.
    model = load_discriminator(DiscriminatorConfig(spec=f"python:{nets}:ClassD", class_label=0))
    source = GeneratedSource(gen, n=g.n, seed=g.seed, target=model.input,
                             batch_size=batch_size, class_sampling=g.class_sampling)
    expected = np.array([image_seed(4, i) % 3 for i in range(9)])
    np.testing.assert_array_equal(source.class_labels, expected)
    assert len(set(expected)) > 1
    batch = source.get_batch(range(9))            # brightness k -> pixel (k - 1) / 2
    np.testing.assert_allclose(batch.images.mean(dim=(1, 2, 3)).numpy(), (expected - 1) / 2,
                               atol=1e-6)
    store = extract(model, ["body"], source, out=tmp_path / f"g{batch_size}", batch_size=4,
                    progress=False, class_labels=source.class_labels)
    np.testing.assert_allclose(np.round(store.scores()), expected)


def test_fixed_class_and_uniform_without_num_classes(nets):
    gen = load_generator(GeneratorConfig(spec=f"python:{nets}:ClassG"))
    fixed = GeneratedSource(gen, n=3, seed=0, target=None, class_label=2)
    np.testing.assert_array_equal(fixed.class_labels, [2, 2, 2])
    no_classes = dataclasses.replace(gen, conditioning=dataclasses.replace(
        gen.conditioning, num_classes=None))
    with pytest.raises(ModelLoadError, match="class_sampling: uniform needs the number"):
        GeneratedSource(no_classes, n=3, seed=0, target=None, class_sampling="uniform")


def test_class_source_is_validated():
    with pytest.raises(ConfigError, match="class_source"):
        from audit.config import config_from_dict

        config_from_dict({"discriminator": {"spec": "builtin:digits-dcgan",
                                            "class_source": {"type": "celeba",
                                                             "attribute": "Male"}},
                          "generator": {"spec": "builtin:digits-dcgan"},
                          "concept_set": "digits_tone",
                          "paired": {"source": "builtin:digits-paired"},
                          "real": {"source": "builtin:digits-audit"}})


def test_a_run_scores_every_image_with_its_class(nets, labelled, tmp_path):
    """extract_from_config: real images by their labels, generated ones by theirs."""
    from audit.extract import extract_from_config

    stores = extract_from_config(_config(nets, labelled, tmp_path, class_source=CLASS_SOURCE),
                                 progress=False)
    np.testing.assert_allclose(np.round(stores["real"].scores()), [0, 2, 1, 1, 0, 2])
    np.testing.assert_allclose(np.round(stores["generated"].scores()),
                               [image_seed(1, i) % 3 for i in range(7)])
    assert torch.is_tensor(torch.as_tensor(stores["paired"].scores()))


def _config(nets: Path, labelled: Path, tmp_path: Path, **discriminator):
    """An audit of the labelled folder (paired and real) and 7 uniformly sampled classes."""
    from audit.config import config_from_dict

    labels = str(tmp_path / "labels.csv")
    return config_from_dict({
        "discriminator": {"spec": f"python:{nets}:ClassD", "layers": ["body"], **discriminator},
        "generator": {"spec": f"python:{nets}:ClassG", "n": 7, "seed": 1,
                      "class_sampling": "uniform"},
        "concept_set": str(_tone_set(tmp_path)),
        "paired": {"source": f"folder:{labelled}", "labels": labels},
        "real": {"source": f"folder:{labelled}", "labels": labels},
        "out": str(tmp_path / "run"),
    })


def _tone_set(tmp_path: Path) -> Path:
    path = tmp_path / "tone.yaml"
    path.write_text("name: tone\nconcepts:\n  - name: tone\n    kind: binary\n"
                    "    groups: [light, dark]\n    protected: true\n"
                    "    source: {type: column, column: tone}\n")
    return path


def test_a_store_made_with_other_classes_is_not_resumed(nets, labelled, tmp_path):
    from audit.errors import RunFolderError

    model = load_discriminator(DiscriminatorConfig(spec=f"python:{nets}:ClassD", class_label=0))
    source = load_images(ImageSourceConfig(source=f"folder:{labelled}",
                                           labels=tmp_path / "labels.csv"), input=model.input)
    extract(model, ["body"], source, out=tmp_path / "s", progress=False,
            class_labels=[0, 1, 2, 0, 1, 2])
    again = extract(model, ["body"], source, out=tmp_path / "s", progress=False,
                    class_labels=[0, 1, 2, 0, 1, 2])
    np.testing.assert_allclose(np.round(again.scores()), [0, 1, 2, 0, 1, 2])
    with pytest.raises(RunFolderError, match="source fingerprint"):
        extract(model, ["body"], source, out=tmp_path / "s", progress=False,
                class_labels=[2] * 6)


def test_classes_out_of_range_name_the_image(nets, labelled, tmp_path):
    model = load_discriminator(DiscriminatorConfig(spec=f"python:{nets}:ClassD", class_label=0))
    source = load_images(ImageSourceConfig(source=f"folder:{labelled}",
                                           labels=tmp_path / "labels.csv"), input=model.input)
    with pytest.raises(DataError, match=r"image 'im2.png' has class 3, but .* takes classes "
                                        r"0..2 \(2 image\(s\) out of range\)"):
        extract(model, ["body"], source, out=tmp_path / "s", progress=False,
                class_labels=[0, 1, 3, 0, -1, 2])


def test_the_rejected_grid_redraws_each_image_with_its_class(nets):
    """Insight's grid of generated images shows them as audited, each with its class."""
    import types

    from audit.insight.run import InsightRun, _grid_generated

    g = GeneratorConfig(spec=f"python:{nets}:ClassG", n=6, seed=4, class_sampling="uniform",
                        class_label=0)
    gen = load_generator(g)
    audited = GeneratedSource(gen, n=6, seed=4, target=None, class_label=g.class_label,
                              class_sampling=g.class_sampling)
    assert len(set(audited.class_labels.tolist())) > 1
    run = InsightRun.__new__(InsightRun)
    run.cfg = types.SimpleNamespace(generator=g)
    run.generator = gen
    grid, value_range = _grid_generated(run, [f"gen-4-{i}" for i in range(6)])
    assert value_range == (-1.0, 1.0)
    np.testing.assert_allclose(grid.mean(axis=(1, 2, 3)), (audited.class_labels - 1) / 2,
                               atol=1e-6)


def test_mixed_classes_are_warned_about(nets, labelled, tmp_path):
    """Generated images of many classes against real ones all scored as class_label."""
    from audit.extract import extract_from_config

    cfg = _config(nets, labelled, tmp_path, class_label=0)
    with pytest.warns(UserWarning, match="every real image is scored with "
                                         "discriminator.class_label"):
        extract_from_config(cfg, progress=False)


def test_images_read_like_a_run_keep_their_classes(nets, labelled, tmp_path):
    """extract_like_run (behind `gan-audit decode --class-label` and insight) passes the
    source's classes to a conditional discriminator."""
    import types

    from audit.decode.run import extract_like_run

    model = load_discriminator(DiscriminatorConfig(spec=f"python:{nets}:ClassD", class_label=0))
    source = load_images(ImageSourceConfig(source=f"folder:{labelled}"), input=model.input)
    bundle = types.SimpleNamespace(layers=("body",), best={"tone": "body"})
    paired = types.SimpleNamespace(pooling="avg", batch_size=4, max_dim=4096, projection_seed=0)
    _, scores, _, _ = extract_like_run(model, bundle, paired, source)
    np.testing.assert_allclose(np.round(scores), 0)                 # the config's class
    source.class_labels = np.full(len(source), 2)
    _, scores, _, _ = extract_like_run(model, bundle, paired, source)
    np.testing.assert_allclose(np.round(scores), 2)


def test_a_latent_path_holds_the_class_of_its_start_image(nets):
    import types

    from audit.insight.run import InsightRun

    g = GeneratorConfig(spec=f"python:{nets}:ClassG", n=6, seed=4, class_sampling="uniform")
    run = InsightRun.__new__(InsightRun)
    run.cfg = types.SimpleNamespace(generator=g)
    run.generator = load_generator(g)
    with pytest.raises(ConfigError, match="start the path at a generated image"):
        run.generate(np.zeros((2, 4), dtype=np.float32))
    for index in range(3):
        run.hold_class_of(f"gen-4-{index}")
        k = image_seed(4, index) % 3
        images = run.generate(np.zeros((3, 4), dtype=np.float32))
        np.testing.assert_allclose(images.mean(dim=(1, 2, 3)).numpy(), (k - 1) / 2, atol=1e-6)
