"""Image sources: layouts, labels from concept sets, transforms, bad images, subsampling."""

from __future__ import annotations

import gzip
import json
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from audit.concepts import ConceptSet
from audit.config import ImageSourceConfig
from audit.errors import DataError
from audit.images import load_images, read_idx, to_model_input
from audit.load import InputSpec


def concept_set(**sources) -> ConceptSet:
    """One binary concept per keyword: name -> (groups, label source)."""
    return ConceptSet.model_validate({"name": "t", "concepts": [
        {"name": name, "kind": "binary" if len(groups) == 2 else "multiclass",
         "groups": groups, "source": source} for name, (groups, source) in sources.items()]})


TONE = concept_set(tone=(["light", "dark"], {"type": "column", "column": "tone"}))


def write_png(path: Path, value: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for i in range(4):
        write_png(root / f"a{i}.png", 40 * i)
    (root / "broken.png").write_bytes(b"not a png")
    pd.DataFrame({"image": ["a0.png", "a1.png", "a2.png", "a3.png", "broken.png"],
                  "tone": ["light", "dark", "light", None, "dark"]}).to_csv(
        tmp_path / "labels.csv", index=False)
    return root


# ---------------------------------------------------------------- transforms


def test_transform_resizes_crops_and_rescales() -> None:
    x = torch.rand(2, 1, 10, 20)
    y = to_model_input(x, InputSpec(image_size=5, channels=1, value_range=(0.0, 255.0)))
    assert y.shape == (2, 1, 5, 5)
    const = to_model_input(torch.full((1, 1, 10, 20), 0.25), InputSpec(5, 1))
    torch.testing.assert_close(const, torch.full((1, 1, 5, 5), -0.5))
    # center crop of an image with a bright middle keeps the middle
    wide = torch.zeros(1, 1, 4, 12)
    wide[..., 4:8] = 1
    torch.testing.assert_close(to_model_input(wide, InputSpec(4, 1, (0.0, 1.0))),
                               torch.ones(1, 1, 4, 4))


def test_rgb_to_grey_matches_pillow() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    ours = to_model_input(x, InputSpec(None, 1, (0.0, 1.0)))[0, 0].numpy()
    np.testing.assert_allclose(ours, grey, atol=1 / 255 + 1e-6)
    grey_in = torch.rand(1, 1, 3, 3)
    rgb_out = to_model_input(grey_in, InputSpec(None, 3, (0.0, 1.0)))
    assert rgb_out.shape == (1, 3, 3, 3) and torch.equal(rgb_out[0, 2], grey_in[0, 0])
    with pytest.raises(DataError, match="2 channels"):
        to_model_input(torch.rand(1, 2, 3, 3), InputSpec(None, 3))


# ---------------------------------------------------------------- folder + CSV


def test_folder_with_labels_and_a_corrupt_image(folder: Path, tmp_path: Path) -> None:
    cfg = ImageSourceConfig(source=f"folder:{folder}", labels=tmp_path / "labels.csv")
    src = load_images(cfg, concept_set=TONE, input=InputSpec(4, 1))
    assert src.image_ids == ["a0.png", "a1.png", "a2.png", "a3.png", "broken.png"]
    assert src.labels["tone"].tolist() == ["light", "dark", "light", None, "dark"]
    batch = src.get_batch(range(5))
    assert batch.image_ids == ["a0.png", "a1.png", "a2.png", "a3.png"]
    assert batch.skipped[0]["image_id"] == "broken.png"
    # the record goes into the run folder: no directory of this disk in it
    assert str(folder) not in json.dumps(batch.skipped) and "path" not in batch.skipped[0]
    torch.testing.assert_close(batch.images[1], torch.full((1, 4, 4), 40 / 255 * 2 - 1))
    stop = load_images(cfg.model_copy(update={"on_bad_image": "stop"}), concept_set=TONE)
    with pytest.raises(DataError, match=r"broken\.png: cannot read the image.*on_bad_image"):
        stop.get_batch(range(5))


def test_bad_images_are_listed_in_the_store(folder: Path, tmp_path: Path,
                                            tiny_discriminator) -> None:
    from audit.extract import extract
    from audit.load import LoadedModel, probe_layers, state_sha256

    model = LoadedModel(module=tiny_discriminator, spec="t", input=InputSpec(16, 1),
                        sha256=state_sha256(tiny_discriminator))
    model.layer_info = probe_layers(model)
    src = load_images(f"folder:{folder}", input=model.input)
    store = extract(model, ["1"], src, out=tmp_path / "s", batch_size=2, progress=False)
    assert store.image_ids == ["a0.png", "a1.png", "a2.png", "a3.png"]
    assert [s["image_id"] for s in store.skipped] == ["broken.png"]
    assert store.read("1").shape == (4, 4) and src.skipped[0]["image_id"] == "broken.png"


def test_label_problems_are_clear(folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"image": ["a0.png", "a1.png", "a2.png", "a3.png", "broken.png"],
                  "tone": ["light", "DARK", "light", "dark", "dark"]}).to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"'DARK' \(1 images\).*\['light', 'dark'\].*values:"):
        load_images(ImageSourceConfig(source=f"folder:{folder}", labels=bad), concept_set=TONE)
    short = tmp_path / "short.csv"
    pd.DataFrame({"image": ["a0.png"], "tone": ["light"]}).to_csv(short, index=False)
    with pytest.raises(DataError, match=r"4 image\(s\) have no row.*a1\.png"):
        load_images(ImageSourceConfig(source=f"folder:{folder}", labels=short), concept_set=TONE)
    typo = concept_set(tone=(["light", "dark"], {"type": "column", "column": "tones"}))
    with pytest.raises(DataError, match=r"'column:tones'.*closest: column:tone"):
        load_images(ImageSourceConfig(source=f"folder:{folder}", labels=tmp_path / "labels.csv"),
                    concept_set=typo)
    with pytest.raises(DataError, match="needs labels"):
        load_images(f"folder:{folder}", concept_set=TONE, require_labels=True)
    mapped = concept_set(tone=(["light", "dark"], {"type": "column", "column": "tone",
                                                    "values": {"DARK": "dark",
                                                               "light": "light",
                                                               "dark": "dark"}}))
    src = load_images(ImageSourceConfig(source=f"folder:{folder}", labels=bad),
                      concept_set=mapped)
    assert src.labels["tone"].tolist()[:2] == ["light", "dark"]


def test_subsample_is_seeded_and_keeps_order(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(20):
        write_png(root / f"{i:02d}.png", i)
    a = load_images(ImageSourceConfig(source=f"folder:{root}", n=6, seed=1))
    b = load_images(ImageSourceConfig(source=f"folder:{root}", n=6, seed=1))
    c = load_images(ImageSourceConfig(source=f"folder:{root}", n=6, seed=2))
    assert a.image_ids == b.image_ids == sorted(a.image_ids) and len(a) == 6
    assert a.image_ids != c.image_ids and a.fingerprint != c.fingerprint


# ---------------------------------------------------------------- other layouts


def test_celeba_layout_and_partition(tmp_path: Path) -> None:
    root = tmp_path / "celeba"
    names = [f"{i:06d}.jpg" for i in range(1, 5)]
    for i, name in enumerate(names):
        write_png(root / "img_align_celeba" / name, 50 * i, size=(6, 8), mode="RGB")
    lines = ["4", "Male Young"] + [f"{n} {m} {y}" for n, m, y in
                                   zip(names, [1, -1, 1, -1], [1, 1, -1, -1], strict=True)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "\n".join(f"{n} {p}" for n, p in zip(names, [0, 0, 2, 2], strict=True)) + "\n")
    cs = concept_set(sex=(["female", "male"], {"type": "celeba", "attribute": "Male"}))
    src = load_images(ImageSourceConfig(source=f"celeba:{root}"), concept_set=cs,
                      input=InputSpec(4, 3))
    assert src.labels["sex"].tolist() == ["male", "female", "male", "female"]
    assert src.get_batch([0, 1]).images.shape == (2, 3, 4, 4)
    test = load_images(ImageSourceConfig(source=f"celeba:{root}", partition="test"),
                       concept_set=cs)
    assert test.image_ids == names[2:]
    bad = concept_set(sex=(["female", "male"], {"type": "celeba", "attribute": "Mal"}))
    with pytest.raises(DataError, match="closest: celeba:Male"):
        load_images(ImageSourceConfig(source=f"celeba:{root}"), concept_set=bad)
    # A labels CSV adds columns to CelebA's attributes (e.g. FairFace-style race labels).
    pd.DataFrame({"image": names, "race": ["a", "b", "a", "b"]}).to_csv(
        tmp_path / "extra.csv", index=False)
    both = concept_set(sex=(["female", "male"], {"type": "celeba", "attribute": "Male"}),
                       race=(["a", "b"], {"type": "column", "column": "race"}))
    src = load_images(ImageSourceConfig(source=f"celeba:{root}", labels=tmp_path / "extra.csv"),
                      concept_set=both)
    assert src.labels["race"].tolist() == ["a", "b", "a", "b"]
    assert src.labels["sex"].tolist() == ["male", "female", "male", "female"]


def test_classfolders(tmp_path: Path) -> None:
    for cls in ("cat", "dog"):
        for i in range(2):
            write_png(tmp_path / "cf" / cls / f"{i}.png", 10 * i)
    cs = concept_set(animal=(["cat", "dog"], {"type": "folder"}))
    src = load_images(f"classfolders:{tmp_path / 'cf'}", concept_set=cs)
    assert src.image_ids == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"]
    assert src.labels["animal"].tolist() == ["cat", "cat", "dog", "dog"]


def write_idx(path: Path, arr: np.ndarray, *, gz: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(
        struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files(tmp_path: Path, gz: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 7, 7), dtype=np.uint8)
    write_idx(tmp_path / "img.idx", images, gz=gz)
    write_idx(tmp_path / "lab.idx", np.array([0, 1, 2, 1, 0]), gz=gz)
    np.testing.assert_array_equal(read_idx(tmp_path / "img.idx"), images)
    cs = concept_set(digit=(["0", "1", "2"], {"type": "idx"}))
    src = load_images(ImageSourceConfig(source=f"idx:{tmp_path / 'img.idx'}",
                                        label_file=tmp_path / "lab.idx"), concept_set=cs,
                      input=InputSpec(None, 1, (0.0, 1.0)))
    assert src.labels["digit"].tolist() == ["0", "1", "2", "1", "0"]
    np.testing.assert_allclose(src.get_batch([3]).images[0, 0].numpy(), images[3] / 255,
                               atol=1e-6)
    (tmp_path / "bad.idx").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "bad.idx")
    two = concept_set(digit=(["0", "1"], {"type": "idx"}))
    with pytest.raises(DataError, match=r"'2' \(1 images\)"):
        load_images(ImageSourceConfig(source=f"idx:{tmp_path / 'img.idx'}",
                                      label_file=tmp_path / "lab.idx"), concept_set=two)


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_layouts(tmp_path: Path, layout: str) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, size=(4, 6, 6, 3), dtype=np.uint8)
    arr = {"nhw": rgb[..., 0], "nhwc": rgb, "nchw": rgb.transpose(0, 3, 1, 2)}[layout]
    np.savez(tmp_path / "d.npz", images=arr, labels=np.array([1, 0, 1, 1]))
    cs = concept_set(flag=(["no", "yes"], {"type": "idx"}))
    src = load_images(f"npz:{tmp_path / 'd.npz'}", concept_set=cs,
                      input=InputSpec(None, None, (0.0, 1.0)))
    assert src.labels["flag"].tolist() == ["yes", "no", "yes", "yes"]
    got = src.get_batch([2]).images[0].numpy()
    want = rgb[2, ..., :1] if layout == "nhw" else rgb[2]
    np.testing.assert_allclose(got, want.transpose(2, 0, 1) / 255, atol=1e-6)


def test_builtin_source_is_called_lazily(monkeypatch) -> None:
    """The source asks the demo for its plan, and renders only the images a batch needs."""
    import audit.demo.data as demo_data

    images = torch.linspace(-1, 1, 3 * 32 * 32).view(3, 1, 32, 32)
    rendered: list[list[int]] = []

    class Plan:
        def render(self, rows):
            rendered.append(list(rows))
            return images[list(rows)]

    def fake(name, *, n=None, seed=0):
        assert name == "digits-paired" and n == 3 and seed == 5
        return Plan(), pd.DataFrame({"image_id": ["p0", "p1", "p2"], "tone": ["light"] * 3,
                                     "digit": [0, 7, 9]})

    monkeypatch.setattr(demo_data, "builtin_plan", fake)
    cs = concept_set(tone=(["light", "dark"], {"type": "column", "column": "tone"}),
                     digit=([str(i) for i in range(10)], {"type": "column", "column": "digit"}))
    src = load_images(ImageSourceConfig(source="builtin:digits-paired", n=3, seed=5),
                      concept_set=cs, input=InputSpec(32, 1))
    assert src.labels["digit"].tolist() == ["0", "7", "9"] and rendered == []
    torch.testing.assert_close(src.get_batch([2, 0]).images, images[[2, 0]])
    assert rendered == [[2, 0]]


def test_rendering_on_demand_gives_the_eager_pixels() -> None:
    from audit.demo.data import builtin_plan, builtin_source

    eager, labels = builtin_source("digits-audit", n=40, seed=3)
    plan, same = builtin_plan("digits-audit", n=40, seed=3)
    assert labels.equals(same)
    rows = [39, 0, 17, 17, 5]
    assert torch.equal(plan.render(rows), eager[rows])


def test_rows_match_by_the_file_name_of_the_tables_own_paths(folder: Path, tmp_path: Path
                                                             ) -> None:
    # FairFace lists "train/1.jpg" while the source folder is train/ itself.
    table = tmp_path / "fairface.csv"
    pd.DataFrame({"file": [f"train/{n}" for n in ["a0.png", "a1.png", "a2.png", "a3.png",
                                                  "broken.png"]],
                  "tone": ["light", "dark", "dark", "light", "dark"]}).to_csv(table, index=False)
    src = load_images(ImageSourceConfig(source=f"folder:{folder}", labels=table,
                                        image_column="file"), concept_set=TONE)
    assert src.labels["tone"].tolist() == ["light", "dark", "dark", "light", "dark"]
    # an ambiguous file name (two rows) is not guessed
    pd.DataFrame({"file": ["train/a0.png", "val/a0.png"],
                  "tone": ["light", "dark"]}).to_csv(table, index=False)
    with pytest.raises(DataError, match=r"have no row"):
        load_images(ImageSourceConfig(source=f"folder:{folder}", labels=table,
                                      image_column="file"), concept_set=TONE)


# ---------------------------------------------------------------- pixel depth and range


def grey_picture(seed: int = 0, size: tuple[int, int] = (9, 7)) -> np.ndarray:
    """A 16-bit grey picture using the whole 0..65535 range (its corners are 0 and 65535)."""
    v = np.random.default_rng(seed).integers(0, 65536, size=size).astype(np.uint16)
    v[0, 0], v[-1, -1] = 0, 65535
    return v


def decoded(path: Path, channels: int | None = 1, **cfg) -> np.ndarray:
    """The first image of a folder as the source gives it: C x H x W in [0, 1]."""
    src = load_images(ImageSourceConfig(source=f"folder:{path}", **cfg),
                      input=InputSpec(None, channels, (0.0, 1.0)))
    return src.get_batch([0]).images[0].numpy()


def test_16_bit_png_reads_like_the_8_bit_png_of_the_same_picture(tmp_path: Path) -> None:
    v16 = grey_picture()
    v8 = np.round(v16 / 257).astype(np.uint8)  # the same picture at 8 bits
    Image.fromarray(v16).save(write_dir(tmp_path / "deep") / "p.png")
    Image.fromarray(v8).save(write_dir(tmp_path / "flat") / "p.png")
    assert Image.open(tmp_path / "deep" / "p.png").mode == "I;16"
    deep, flat = decoded(tmp_path / "deep"), decoded(tmp_path / "flat")
    np.testing.assert_allclose(deep[0], v16 / 65535, atol=1e-6)  # scaled, not clipped at 255
    np.testing.assert_allclose(deep, flat, atol=0.5 / 255 + 1e-6)
    rgb = decoded(tmp_path / "deep", channels=3)  # one deep channel, repeated for RGB
    assert rgb.shape == (3, 9, 7) and (rgb == deep[0]).all()


def test_16_bit_pgm_and_32_bit_integer_tiff_are_scaled_by_their_depth(tmp_path: Path) -> None:
    v16 = grey_picture(1)
    Image.fromarray(v16).save(write_dir(tmp_path / "pgm") / "p.pgm")
    assert Image.open(tmp_path / "pgm" / "p.pgm").mode == "I"  # int32, 16-bit samples
    np.testing.assert_allclose(decoded(tmp_path / "pgm")[0], v16 / 65535, atol=1e-6)
    unit = v16 / 65535
    v32 = np.round(unit * (2 ** 31 - 1)).astype(np.int32)  # a signed 32-bit TIFF
    Image.fromarray(v32).save(write_dir(tmp_path / "tif") / "p.tif")
    assert Image.open(tmp_path / "tif" / "p.tif").mode == "I"
    np.testing.assert_allclose(decoded(tmp_path / "tif")[0], unit, atol=1e-6)
    v32[2, 3] = -5
    Image.fromarray(v32).save(tmp_path / "tif" / "p.tif")
    with pytest.raises(DataError, match=r"p\.tif: pixel values -5\.\.2\.14748e\+09 lie outside "
                                        r"0\.\.2147483647"):
        decoded(tmp_path / "tif")


def test_float_tiff_in_0_1_reads_like_the_8_bit_png(tmp_path: Path) -> None:
    v8 = np.round(grey_picture(2) / 257).astype(np.uint8)
    Image.fromarray(v8).save(write_dir(tmp_path / "png") / "p.png")
    Image.fromarray(v8.astype(np.float32) / 255).save(write_dir(tmp_path / "tif") / "p.tif")
    assert Image.open(tmp_path / "tif" / "p.tif").mode == "F"
    np.testing.assert_allclose(decoded(tmp_path / "tif"), decoded(tmp_path / "png"), atol=1e-6)
    np.testing.assert_allclose(decoded(tmp_path / "tif", channels=None)[0], v8 / 255, atol=1e-6)


@pytest.mark.parametrize(("scale", "shift", "found"), [(255.0, 0.0, "0..255"),
                                                       (2.0, -1.0, "-1..1"),
                                                       (1.0, 0.5, "0.5..1.5")])
def test_float_tiff_outside_0_1_is_an_error_never_clipped(tmp_path: Path, scale: float,
                                                         shift: float, found: str) -> None:
    unit = grey_picture(3) / 65535
    Image.fromarray((unit * scale + shift).astype(np.float32)).save(
        write_dir(tmp_path / "tif") / "p.tif")
    # a wrong range is the data's format, not a damaged file: on_bad_image skip does not hide it
    with pytest.raises(DataError, match=rf"p\.tif: float pixel values must lie in \[0, 1\], "
                                        rf"found {found}\..*x / 255"):
        decoded(tmp_path / "tif", on_bad_image="skip")


def test_pixels_to_unit_scales_by_the_full_range_of_each_type() -> None:
    from audit.images import pixels_to_unit

    np.testing.assert_array_equal(pixels_to_unit(np.array([0, 51, 255], np.uint8), where="x"),
                                  np.array([0, 0.2, 1], np.float32))
    np.testing.assert_allclose(pixels_to_unit(np.array([0, 257, 65535], np.uint16), where="x"),
                               [0, 1 / 255, 1], atol=1e-7)
    np.testing.assert_array_equal(pixels_to_unit(np.array([True, False]), where="x"), [1, 0])
    np.testing.assert_allclose(pixels_to_unit(np.array([0, 1000], np.int32), where="x",
                                              white=1000), [0, 1])
    exact = np.array([0.0, 0.25, 1.0])
    np.testing.assert_array_equal(pixels_to_unit(exact, where="x"), exact)
    with pytest.raises(DataError, match=r"x: pixel values are int64, signed.*astype"):
        pixels_to_unit(np.array([0, 255]), where="x")
    with pytest.raises(DataError, match="NaN or infinity"):
        pixels_to_unit(np.array([0.5, np.nan]), where="x")
    with pytest.raises(DataError, match=r"pixel values 0\.\.1001 lie outside 0\.\.1000"):
        pixels_to_unit(np.array([0, 1001], np.int32), where="x", white=1000)
    with pytest.raises(DataError, match="type complex128"):
        pixels_to_unit(np.array([1j]), where="x")


@pytest.mark.parametrize(("dtype", "scale", "error"), [
    (np.uint16, 65535, None), (np.float32, 1.0, None), (np.float64, 1.0, None),
    (np.float32, 255.0, r"found 0\.\.255"), (np.int64, 255, "signed integers")])
def test_npz_images_of_each_type(tmp_path: Path, dtype: type, scale: float,
                                 error: str | None) -> None:
    unit = grey_picture(4, size=(3, 6, 6)) / 65535
    arr = (np.round(unit * scale) if np.dtype(dtype).kind in "ui" else unit * scale)
    np.savez(tmp_path / "d.npz", images=arr.astype(dtype))
    if error is not None:
        with pytest.raises(DataError, match=rf"npz:.*d\.npz: .*{error}"):
            load_images(f"npz:{tmp_path / 'd.npz'}")
        return
    src = load_images(f"npz:{tmp_path / 'd.npz'}", input=InputSpec(None, 1, (0.0, 1.0)))
    np.testing.assert_allclose(src.get_batch([1]).images[0, 0].numpy(), unit[1], atol=1e-6)


@pytest.mark.parametrize("mode", ["1", "P", "LA", "RGBA", "CMYK"])
def test_eight_bit_modes_go_through_pillows_grey_or_rgb(tmp_path: Path, mode: str) -> None:
    rgb = np.random.default_rng(5).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    picture = Image.fromarray(rgb).convert(mode)
    picture.save(write_dir(tmp_path / "m") / ("p.tif" if mode == "CMYK" else "p.png"))
    for channels, as_mode in ((1, "L"), (3, "RGB")):
        want = np.asarray(picture.convert(as_mode), dtype=np.float32) / 255
        got = decoded(tmp_path / "m", channels=channels)
        np.testing.assert_allclose(got, want.reshape(6, 5, -1).transpose(2, 0, 1), atol=1e-6)


def write_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- the run's own folder


def test_a_run_folder_inside_an_image_folder_is_left_out(folder: Path, tmp_path: Path) -> None:
    run = folder / "reports" / "run"
    write_png(run / "samples" / "real-lowest.png", 10)
    write_png(run / "generated" / "gen-0-0.png", 20)
    everything = load_images(f"folder:{folder}")
    assert "reports/run/samples/real-lowest.png" in everything.image_ids  # what went wrong
    with pytest.warns(UserWarning, match=r"the run folder .*run lies inside this image folder"):
        src = load_images(f"folder:{folder}", run_dir=run)
    assert src.image_ids == ["a0.png", "a1.png", "a2.png", "a3.png", "broken.png"]
    assert "are not read as images" in src.notes[0]
    assert src.describe()["notes"] == src.notes
    with warnings.catch_warnings():  # the stages open the source again: said once
        warnings.simplefilter("error")
        assert load_images(f"folder:{folder}", run_dir=run).notes == src.notes
    # the same folder under another name (a link) is the same folder
    (tmp_path / "link").symlink_to(run)
    with pytest.warns(UserWarning):
        assert load_images(f"folder:{folder}", run_dir=tmp_path / "link").image_ids == \
            src.image_ids
    # a run folder elsewhere changes nothing and says nothing
    outside = load_images(f"folder:{folder}", run_dir=tmp_path / "elsewhere")
    assert outside.image_ids == everything.image_ids and outside.notes == []
    with pytest.raises(DataError, match=r"is the run folder .* itself.*set out \(--out\)"):
        load_images(f"folder:{folder}", run_dir=folder)


def test_class_folders_leave_the_run_folder_out(tmp_path: Path) -> None:
    for cls in ("cat", "dog"):
        write_png(tmp_path / "cf" / cls / "0.png", 10)
    write_png(tmp_path / "cf" / "run" / "samples" / "x.png", 10)  # out: cf/run, class "run"?
    cs = concept_set(animal=(["cat", "dog"], {"type": "folder"}))
    with pytest.warns(UserWarning, match="lies inside"):
        src = load_images(f"classfolders:{tmp_path / 'cf'}", concept_set=cs,
                          run_dir=tmp_path / "cf" / "run")
    assert src.labels["animal"].tolist() == ["cat", "dog"]


def test_the_cache_stamp_of_an_image_folder_ignores_the_run_folder(folder: Path) -> None:
    from audit.pipeline import _spec_files

    source = ImageSourceConfig(source=f"folder:{folder}")
    run = folder / "run"
    run.mkdir()
    before = _spec_files(source, run_dir=run)
    (run / "manifest.json").write_text("{}")  # every run rewrites its folder
    assert _spec_files(source, run_dir=run) == before
    assert _spec_files(source) != before  # (without run_dir it counts)


# ---------------------------------------------------------------- file names


def test_a_file_name_that_is_not_utf8_gets_a_writable_id(folder: Path) -> None:
    import json

    from audit.images import path_text

    raw = os.fsencode(folder)
    Path(os.fsdecode(raw + b"/bad-\xff.png")).write_bytes((folder / "a1.png").read_bytes())
    Path(os.fsdecode(raw + b"/cut-\xfe.png")).write_bytes(b"\x89PNG\r\n\x1a\n cut")
    src = load_images(f"folder:{folder}", input=InputSpec(4, 1))
    assert src.image_ids[:2] == ["a0.png", "a1.png"] and "bad-\\xff.png" in src.image_ids
    batch = src.get_batch(range(len(src)))
    k = batch.image_ids.index("bad-\\xff.png")
    torch.testing.assert_close(batch.images[k], batch.images[batch.image_ids.index("a1.png")])
    assert [s["image_id"] for s in batch.skipped] == ["broken.png", "cut-\\xfe.png"]
    text = json.dumps([src.image_ids, batch.skipped], ensure_ascii=False)
    text.encode("utf-8")  # no surrogate left
    pd.DataFrame({"image_id": src.image_ids}).to_parquet(folder.parent / "ids.parquet")
    assert path_text("plain/ü.png") == "plain/ü.png"
    stop = load_images(ImageSourceConfig(source=f"folder:{folder}", on_bad_image="stop"))
    with pytest.raises(DataError, match=r"cut-\\xfe\.png: cannot read") as caught:
        stop.get_batch([src.image_ids.index("cut-\\xfe.png")])
    str(caught.value).encode("utf-8")


def test_a_truncated_image_is_an_error_even_after_weasyprint_was_imported(folder: Path,
                                                                          tmp_path: Path):
    """WeasyPrint sets PIL's LOAD_TRUNCATED_IMAGES = True when imported (the report's PDF);
    an audit in the same process must still refuse a truncated image, not read it grey."""
    from PIL import ImageFile

    path = folder / "noise.png"  # (a flat picture cut in half loses its header: no test)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
                    ).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 6 // 10])
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # what `import weasyprint` does
    try:
        source = load_images(ImageSourceConfig(source=f"folder:{folder}", on_bad_image="stop"),
                             input=InputSpec(image_size=32, channels=1))
        index = source.image_ids.index(path.name)
        with pytest.raises(DataError, match=rf"{path.name}: cannot read the image"):
            source.get_batch([index])
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
