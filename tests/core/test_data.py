"""Folders of images: scanning, skipped files, RGB loading, splits, transforms, held-out data."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tlwidgets.core import data as D
from tlwidgets.core.errors import DataError, ModelError


# ---------------------------------------------------------------------------- helpers
def _jpeg(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0, **save: object) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, "JPEG", quality=90, **save)
    return path


def _classes_folder(root: Path, per_class: dict[str, int]) -> Path:
    for i, (name, n) in enumerate(per_class.items()):
        for j in range(n):
            _jpeg(root / name / f"img_{j:02d}.jpg", (24, 24), seed=100 * i + j)
    return root


def _make_messy(root: Path) -> tuple[set[str], dict[str, str]]:
    """A folder with good images in every colour mode and every kind of bad file.

    Returns:
        the good image paths, and {path: expected reason (prefix)} for what must be skipped.
    """
    good: set[str] = set()
    bad: dict[str, str] = {}
    cats, dogs = root / "cats", root / "dogs"
    for i in range(6):
        good.add(str(_jpeg(cats / f"cat_{i}.jpg", seed=i)))
        good.add(str(_jpeg(dogs / f"dog_{i}.jpg", seed=10 + i)))

    (cats / "corrupt.jpg").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    bad[str(cats / "corrupt.jpg")] = "cannot be decoded"
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(whole, "JPEG")
    (cats / "truncated.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    bad[str(cats / "truncated.jpg")] = "truncated image"
    (cats / "zero.jpg").write_bytes(b"")
    bad[str(cats / "zero.jpg")] = "empty file (0 bytes)"
    (cats / "notes.txt").write_text("not a picture")
    bad[str(cats / "notes.txt")] = "not an image (extension .txt)"
    (cats / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    bad[str(cats / ".DS_Store")] = "hidden file"
    _jpeg(cats / ".ipynb_checkpoints" / "cat_0-checkpoint.jpg")
    bad[str(cats / ".ipynb_checkpoints")] = "hidden folder"
    _jpeg(root / ".ipynb_checkpoints" / "x" / "y.jpg")
    bad[str(root / ".ipynb_checkpoints")] = "hidden folder"
    (root / "empty").mkdir()
    bad[str(root / "empty")] = "no usable images in class folder"

    Image.new("L", (30, 20), 90).save(dogs / "gray.png")
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :15, 3] = 255  # left half opaque red, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(dogs / "rgba.png")
    pal = Image.new("P", (30, 20), 0)
    pal.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    pal.paste(1, (0, 0, 15, 20))
    pal.info["transparency"] = 0
    pal.save(dogs / "palette.png", transparency=0)
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(dogs / "cmyk.jpg", "JPEG")
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(dogs / "deep16.png")
    for name in ("gray.png", "rgba.png", "palette.png", "cmyk.jpg", "deep16.png"):
        good.add(str(dogs / name))
    return good, bad


def _spec(size: int = 32, resize: int = 36, interpolation: str = "bilinear") -> SimpleNamespace:
    return SimpleNamespace(resize_size=resize, input_size=size, mean=(0.5, 0.4, 0.3),
                           std=(0.25, 0.2, 0.1), interpolation=interpolation)


# ---------------------------------------------------------------------------- messy folders
def test_messy_folder_keeps_every_good_image_and_explains_every_skip(tmp_path: Path) -> None:
    good, bad = _make_messy(tmp_path / "messy")
    assert Image.open(tmp_path / "messy" / "dogs" / "deep16.png").mode == "I;16"

    bundle = D.load_data(tmp_path / "messy", val_fraction=0.2, seed=0)

    assert bundle.classes == ["cats", "dogs"]
    used = [s.path for s in bundle.train + bundle.val]
    assert len(used) == len(good) == 17
    assert set(used) == good
    skipped = dict(zip(bundle.report.skipped["path"], bundle.report.skipped["reason"]))
    for path, reason in bad.items():
        assert skipped[path].startswith(reason), (path, skipped.get(path))
    assert not any(p.startswith(str(tmp_path / "messy" / ".ipynb_checkpoints") + os.sep) for p in skipped)
    assert not good & set(skipped)
    assert list(bundle.report.counts.columns) == ["train", "val", "total"]
    assert all(str(t) == "int64" for t in bundle.report.counts.dtypes)
    assert bundle.report.counts.loc["cats"].tolist() == [5, 1, 6]
    assert bundle.report.counts.loc["dogs"].tolist() == [9, 2, 11]


def test_every_good_image_of_every_mode_becomes_a_three_channel_tensor(tmp_path: Path) -> None:
    good, _ = _make_messy(tmp_path / "messy")
    bundle = D.load_data(tmp_path / "messy", val_fraction=0.0)
    ds = D.ImageDataset(bundle.train, T.ToTensor())
    assert len(ds) == len(good)
    tensors = {s.path: ds[i][0] for i, s in enumerate(ds.samples)}
    for path, x in tensors.items():
        assert x.dtype == torch.float32 and x.ndim == 3 and x.shape[0] == 3, path
    deep = tensors[str(tmp_path / "messy" / "dogs" / "deep16.png")]
    assert deep.min() < 0.02 and deep.max() > 0.98      # full range kept ...
    assert abs(float(deep.mean()) - 0.5) < 0.05          # ... and scaled, not clipped to white
    assert float((deep >= 0.999).float().mean()) < 0.05


def test_load_image_converts_modes_to_rgb_on_white(tmp_path: Path) -> None:
    _make_messy(tmp_path / "m")
    dogs = tmp_path / "m" / "dogs"
    rgba = D.load_image(dogs / "rgba.png")
    assert rgba.mode == "RGB" and rgba.getpixel((0, 0)) == (200, 0, 0) and rgba.getpixel((29, 0)) == (255, 255, 255)
    pal = D.load_image(dogs / "palette.png")
    assert pal.getpixel((0, 0)) == (10, 200, 10) and pal.getpixel((29, 0)) == (255, 255, 255)
    gray = D.load_image(dogs / "gray.png")
    assert gray.mode == "RGB" and gray.getpixel((3, 3)) == (90, 90, 90)
    r, g, b = D.load_image(dogs / "cmyk.jpg").getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red
    assert D.load_image(Image.new("LA", (4, 4), (0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_load_image_applies_exif_orientation_and_reports_rotated_size(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    _jpeg(tmp_path / "imgs" / "a" / "wide.jpg", (40, 20), exif=exif)
    _jpeg(tmp_path / "imgs" / "b" / "wide.jpg", (40, 20), exif=exif)
    assert D.load_image(tmp_path / "imgs" / "a" / "wide.jpg").size == (20, 40)
    sizes = D.load_data(tmp_path / "imgs", val_fraction=0).report.image_sizes
    assert sizes.loc["max", "width"] == 20 and sizes.loc["max", "height"] == 40


def test_load_image_names_the_file_it_cannot_read(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        D.load_image(bad)
    with pytest.raises(DataError, match="not found"):
        D.load_image(tmp_path / "missing.jpg")


def test_decompression_bombs_and_unreadable_files_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _classes_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    _jpeg(root / "a" / "huge.jpg", (200, 200))
    _jpeg(root / "b" / "locked.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200x200 > 2x the limit: refused
    real_open = Image.open

    def fake_open(fp: object, *args: object, **kwargs: object) -> Image.Image:
        if str(fp).endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", fake_open)
    _, samples, skipped = D.scan_folder(root)
    reasons = dict(skipped)
    assert reasons[str(root / "a" / "huge.jpg")].startswith("too large to decode safely")
    assert reasons[str(root / "b" / "locked.jpg")] == "cannot be read (permission denied)"
    assert len(samples) == 4


def test_symlink_loops_and_broken_links_do_not_hang(tmp_path: Path) -> None:
    root = _classes_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    os.symlink(root / "a", root / "a" / "loop")
    os.symlink(root, root / "b" / "up")  # back to the root: must not pull class a into b
    os.symlink(tmp_path / "nowhere.jpg", root / "b" / "dangling.jpg")
    classes, samples, skipped = D.scan_folder(root)
    reasons = dict(skipped)
    assert classes == ["a", "b"] and len(samples) == 4
    assert all(Path(s.path).parent.name == classes[s.label] for s in samples)
    assert reasons[str(root / "a" / "loop")] == "folder already scanned (symbolic link loop)"
    assert reasons[str(root / "b" / "up")] == "folder already scanned (symbolic link loop)"
    assert reasons[str(root / "b" / "dangling.jpg")] == "broken symbolic link"


def test_fewer_than_two_usable_classes_is_a_clear_error(tmp_path: Path) -> None:
    root = _classes_folder(tmp_path / "one", {"only": 3})
    (root / "broken").mkdir()
    (root / "broken" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError) as err:
        D.load_data(root)
    message = str(err.value)
    assert str(root) in message and "'only'" in message
    assert "one sub-folder per class, e.g. root/cats/*.jpg, root/dogs/*.jpg" in message

    loose = tmp_path / "loose"
    for i in range(3):
        _jpeg(loose / f"{i}.jpg")
    with pytest.raises(DataError, match=r"3 image\(s\) lie directly in the folder"):
        D.load_data(loose)


def test_missing_source_and_plain_file_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Folder not found"):
        D.load_data(tmp_path / "nope")
    (tmp_path / "file.csv").write_text("a,b")
    with pytest.raises(DataError, match="not a folder or a supported archive"):
        D.load_data(tmp_path / "file.csv")
    with pytest.raises(DataError, match="source=42 is not a folder"):
        D.load_data(42)


# ---------------------------------------------------------------------------- splits
def test_stratified_split_counts_are_exact_and_seeded(tmp_path: Path) -> None:
    root = _classes_folder(tmp_path / "imgs", {"a": 10, "b": 10, "c": 10})
    one = D.load_data(root, val_fraction=0.2, seed=1)
    assert one.report.counts["val"].tolist() == [2, 2, 2]
    assert one.report.counts["train"].tolist() == [8, 8, 8]
    assert one.report.layout == "folder"
    assert not {s.path for s in one.train} & {s.path for s in one.val}
    again = D.load_data(root, val_fraction=0.2, seed=1)
    other = D.load_data(root, val_fraction=0.2, seed=2)
    assert [s.path for s in again.val] == [s.path for s in one.val]
    assert {s.path for s in other.val} != {s.path for s in one.val}
    for s in one.train + one.val:
        assert Path(s.path).parent.name == one.classes[s.label]


def test_split_of_uneven_and_single_image_classes(tmp_path: Path) -> None:
    root = _classes_folder(tmp_path / "imgs", {"big": 20, "pair": 2, "solo": 1})
    bundle = D.load_data(root, val_fraction=0.25)
    assert bundle.report.counts.to_dict("index") == {
        "big": {"train": 15, "val": 5, "total": 20},
        "pair": {"train": 1, "val": 1, "total": 2},
        "solo": {"train": 1, "val": 0, "total": 1},
    }
    assert any("solo" in note and "training only" in note for note in bundle.report.notes)
    assert "training only" in bundle.report.summary()


def test_val_fraction_is_validated_and_zero_means_no_validation(image_folder: Path) -> None:
    for bad in (1.0, -0.1, 1.5, "lots", float("nan"), True):
        with pytest.raises(DataError, match=f"val_fraction={bad!r}"):
            D.load_data(image_folder, val_fraction=bad)
    bundle = D.load_data(image_folder, val_fraction=0)
    assert bundle.val == [] and len(bundle.train) == 24
    assert bundle.report.counts["val"].tolist() == [0, 0, 0]


def test_progress_reports_every_checked_file(image_folder: Path) -> None:
    calls: list[tuple[int, int]] = []
    D.load_data(image_folder, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (24, 24)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and {t for _, t in calls} == {24}


def test_max_per_class_keeps_the_first_files(image_folder: Path) -> None:
    bundle = D.load_data(image_folder, val_fraction=0, max_per_class=3)
    assert bundle.report.counts["total"].tolist() == [3, 3, 3]
    assert sorted(Path(s.path).name for s in bundle.train if s.label == 0) == ["img_0.jpg", "img_1.jpg", "img_2.jpg"]
    with pytest.raises(DataError, match="max_per_class=0"):
        D.load_data(image_folder, max_per_class=0)


@pytest.mark.parametrize("val_name", ["val", "validation", "test"])
def test_train_val_layout_is_used_as_given(tmp_path: Path, val_name: str) -> None:
    root = tmp_path / "split"
    _classes_folder(root / "train", {"a": 5, "b": 4})
    _classes_folder(root / val_name, {"a": 2, "b": 3, "stranger": 1})
    bundle = D.load_data(root, val_fraction=0.5)  # ignored: the split is given
    assert bundle.report.layout == "train/val folders"
    assert bundle.classes == ["a", "b"]
    assert bundle.report.counts.to_dict("index") == {
        "a": {"train": 5, "val": 2, "total": 7}, "b": {"train": 4, "val": 3, "total": 7}}
    assert all(f"{os.sep}{val_name}{os.sep}" in s.path for s in bundle.val)
    assert all(Path(s.path).parent.name == bundle.classes[s.label] for s in bundle.val)
    reasons = dict(zip(bundle.report.skipped["path"], bundle.report.skipped["reason"]))
    assert reasons[str(root / val_name / "stranger")] == "class not among the training classes"


def test_summary_html_and_bundle_datasets(image_folder: Path) -> None:
    bundle = D.load_data(image_folder, val_fraction=0.25, seed=3)
    text = bundle.report.summary()
    assert "24 images in 3 classes" in text and "18 for training, 6 for validation" in text
    assert "<table" in bundle.report._repr_html_()
    assert bundle.report.image_sizes.loc["median"].tolist() == [32, 32]
    assert "All images are 32x32 pixels." in text
    train_ds, val_ds = bundle.datasets()
    image, label = train_ds[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == bundle.train[0].label
    bundle.train_tf, bundle.eval_tf = D.make_transforms(_spec(), None)
    train_ds, val_ds = bundle.datasets(cache=True)
    x, y = val_ds[1]
    assert x.shape == (3, 32, 32) and y == bundle.val[1].label
    assert torch.equal(val_ds[1][0], x) and len(val_ds._cache) == 1
    path, label = bundle.train[0]  # a sample unpacks like a tuple
    assert path == bundle.train[0].path and label == bundle.train[0].label


def test_flowers_scan_and_split(flowers_dir: Path) -> None:
    start = time.perf_counter()
    bundle = D.load_data(flowers_dir, val_fraction=0.2, seed=0)
    elapsed = time.perf_counter() - start
    assert bundle.classes == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert bundle.report.counts["train"].tolist() == [48] * 5
    assert bundle.report.counts["val"].tolist() == [12] * 5
    assert set(bundle.report.skipped["reason"]) == {"not inside a class folder"}
    assert elapsed < 10


# ---------------------------------------------------------------------------- transforms
def test_eval_transform_shape_and_normalisation() -> None:
    train_tf, eval_tf = D.make_transforms(_spec(), None)
    image = Image.new("RGB", (50, 40), (128, 64, 255))
    x = eval_tf(image)
    assert x.shape == (3, 32, 32)
    expected = torch.tensor([(128 / 255 - 0.5) / 0.25, (64 / 255 - 0.4) / 0.2, (255 / 255 - 0.3) / 0.1])
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-5)
    assert torch.allclose(x.amax(dim=(1, 2)), x.amin(dim=(1, 2)))
    assert torch.equal(train_tf(image), x)  # no augmentation: training sees the same
    assert D.make_transforms(_spec(), D.Augment(), image_size=48)[1](image).shape == (3, 48, 48)
    resize = D.make_transforms(_spec(), None, image_size=112)[1].transforms[0]
    assert resize.size == 128  # 112 * 256 / 224


def test_augmentation_changes_training_images_reproducibly() -> None:
    aug = D.Augment(flip=True, rotation=20, random_resized_crop=True, color_jitter=0.5)
    assert not aug.is_identity() and D.Augment().is_identity()
    train_tf, eval_tf = D.make_transforms(_spec(interpolation="bicubic"), aug)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (60, 70, 3), dtype=np.uint8))
    torch.manual_seed(0)
    a = train_tf(image)
    torch.manual_seed(0)
    b = train_tf(image)
    assert a.shape == eval_tf(image).shape == (3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.allclose(a, eval_tf(image))
    names = [type(t).__name__ for t in train_tf.transforms]
    assert names == ["Resize", "RandomRotation", "RandomResizedCrop", "RandomHorizontalFlip",
                     "ColorJitter", "ToTensor", "Normalize"]


def test_bad_augment_and_interpolation_are_rejected() -> None:
    with pytest.raises(DataError, match="rotation=200"):
        D.Augment(rotation=200)
    with pytest.raises(DataError, match="color_jitter=1.5"):
        D.Augment(color_jitter=1.5)
    with pytest.raises(ModelError, match="'lanczos3'"):
        D.make_transforms(_spec(interpolation="lanczos3"))


# ---------------------------------------------------------------------------- held-out data
def test_holdout_samples_use_training_indices_and_refuse_foreign_classes(tmp_path: Path) -> None:
    holdout = _classes_folder(tmp_path / "holdout", {"b": 2, "c": 1})
    samples = D.holdout_samples(holdout, ["a", "b", "c"])
    assert sorted((Path(s.path).parent.name, s.label) for s in samples) == [("b", 1), ("b", 1), ("c", 2)]
    _classes_folder(holdout, {"zebra": 1})
    with pytest.raises(DataError) as err:
        D.holdout_samples(holdout, ["a", "b", "c"])
    assert "zebra" in str(err.value) and "lacks: a" in str(err.value)
