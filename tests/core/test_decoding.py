"""Decoding at the model's size, the bounded decoded-image cache, and cached features on disk.

Tolerance of draft decoding: a JPEG decoded at 1/2, 1/4 or 1/8 scale (never below the
resize step's output) and then resized gives, after the whole evaluation transform, pixels
within a mean absolute difference of ``TOLERANCE`` (2/255 of the 0-255 range, before
normalisation) of the full decode's; measured at most 1.3/255 on photos at 224 pixels.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from tests.helpers import colour_task
from tlwidgets.core import data as D
from tlwidgets.core import datasets, feature_store, features, feeds, images
from tlwidgets.core._cache import cache_dir
from tlwidgets.core.errors import DataError, TrainingError
from tlwidgets.core.training import TrainConfig, Trainer
from tlwidgets.core.transforms import Resize, decode_shrink, make_transforms

TOLERANCE = 2.0 / 255
_SPEC = SimpleNamespace(input_size=224, resize_size=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        interpolation="bilinear")


def _eval_tf(interpolation: str = "bilinear", image_size: int | None = None) -> T.Compose:
    spec = SimpleNamespace(**{**vars(_SPEC), "interpolation": interpolation})
    return make_transforms(spec, None, image_size)[1]


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like picture: smooth shapes, edges and fine noise, not a flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    arr = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, phase = rng.uniform(2, 9), rng.uniform(2, 9), rng.uniform(0, 6)
        arr[..., c] = 128 + 80 * np.sin(fx * x / width * 6.28 + phase) * np.cos(fy * y / height * 6.28)
    arr[(x - width / 3) ** 2 + (y - height / 2) ** 2 < (height / 5) ** 2] = (230, 40, 60)  # a hard-edged disc
    arr += rng.normal(0, 6, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _jpeg(path: Path, image: Image.Image, orientation: int = 1) -> Path:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(path, quality=92, exif=exif.tobytes())
    return path


def _pixel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two normalised tensors, in 0-1 pixel units."""
    std = torch.tensor(_SPEC.std)[:, None, None]
    return float(((a - b).abs() * std).mean())


@pytest.fixture
def big_jpegs(tmp_path: Path) -> list[Path]:
    """Photos of 4000x3000, 3000x4000, 1600x1200 and 700x520 pixels."""
    sizes = [(4000, 3000), (3000, 4000), (1600, 1200), (700, 520)]
    return [_jpeg(tmp_path / f"big{i}.jpg", _photo(w, h, i)) for i, (w, h) in enumerate(sizes)]


def _decoded_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the size of every image as it leaves the decoder (before any resize)."""
    seen: list[tuple[int, int]] = []
    to_rgb = images._to_rgb

    def spy(im: Image.Image) -> Image.Image:
        seen.append(im.size)
        return to_rgb(im)

    monkeypatch.setattr(images, "_to_rgb", spy)
    return seen


# ---------------------------------------------------------------------------- decoding
def test_draft_decoding_gives_the_same_tensors_within_tolerance(big_jpegs: list[Path]) -> None:
    for interpolation in ("bilinear", "bicubic"):
        tf = _eval_tf(interpolation)
        shrink = decode_shrink(tf)
        assert shrink is not None and shrink.draft
        for path in big_jpegs:
            full, drafted = tf(D.load_image(path)), tf(D.load_image(path, shrink))
            assert full.shape == drafted.shape == (3, 224, 224)
            assert _pixel_diff(full, drafted) <= TOLERANCE, (path.name, interpolation)


def test_real_photos_give_the_same_tensors(flowers_dir: Path, tmp_path: Path) -> None:
    """The flower photos (about 240x160) are smaller than the resize: decoded as before, bit for bit."""
    tf = _eval_tf()
    shrink = decode_shrink(tf)
    for path in sorted(flowers_dir.glob("*/*.jpg"))[::30]:
        assert torch.equal(tf(D.load_image(path)), tf(D.load_image(path, shrink)))
    # Enlarged eight times, they are drafted and stay within the tolerance.
    for i, path in enumerate(sorted(flowers_dir.glob("*/*.jpg"))[::60]):
        with Image.open(path) as im:
            big = im.convert("RGB").resize((im.width * 8, im.height * 8), Image.Resampling.BICUBIC)
        target = _jpeg(tmp_path / f"flower{i}.jpg", big)
        assert _pixel_diff(tf(D.load_image(target)), tf(D.load_image(target, shrink))) <= TOLERANCE


def test_draft_decodes_far_fewer_pixels_but_never_fewer_than_the_resize_needs(
    big_jpegs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _decoded_sizes(monkeypatch)
    tf = _eval_tf()
    shrink = decode_shrink(tf)
    resize = tf.transforms[0]
    for path in big_jpegs:
        seen.clear()
        full = D.load_image(path)
        (full_size,) = seen
        seen.clear()
        small = D.load_image(path, shrink)
        (decoded,) = seen
        needed = resize(full).size
        assert small.size == needed  # decoded straight to the resize's output size
        assert decoded[0] >= needed[0] and decoded[1] >= needed[1]  # draft never goes below it
        assert decoded[0] < 2 * needed[0] or decoded == full_size  # the smallest such scale
        if full_size[0] * full_size[1] >= 64 * needed[0] * needed[1]:
            assert decoded[0] * decoded[1] * 16 <= full_size[0] * full_size[1]  # 4000x3000 -> 500x375
    assert D.load_image(big_jpegs[0], shrink).size == (341, 256)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_kept(tmp_path: Path, orientation: int) -> None:
    picture = _photo(1600, 1000, seed=3)
    path = _jpeg(tmp_path / "turned.jpg", picture, orientation)
    tf = _eval_tf()
    full, small = D.load_image(path), D.load_image(path, decode_shrink(tf))
    assert full.size == ((1000, 1600) if orientation >= 5 else (1600, 1000))
    assert small.size == tf.transforms[0](full).size
    assert _pixel_diff(tf(full), tf(small)) <= TOLERANCE
    # The disc sits where the upright full decode has it.
    diff = np.abs(np.asarray(tf.transforms[0](full), np.float32) - np.asarray(small, np.float32))
    assert diff.mean() <= 255 * TOLERANCE


def test_shrink_size_is_what_the_resize_step_gives() -> None:
    steps = [Resize(256), Resize(160, interpolation=T.InterpolationMode.BICUBIC), T.Resize(256),
             T.Resize(100, max_size=150), T.Resize((120, 90))]
    for step in steps:
        shrink = decode_shrink(T.Compose([step, T.ToTensor()]))
        assert shrink is not None
        for size in [(4000, 3000), (3000, 4000), (1000, 1000), (5000, 40), (40, 5000), (257, 255), (999, 301)]:
            assert shrink.size(*size) == step(Image.new("RGB", size)).size, (step, size)


def test_shrink_only_for_transforms_that_start_by_resizing() -> None:
    assert decode_shrink(None) is None
    assert decode_shrink(T.Compose([T.CenterCrop(8), T.Resize(8)])) is None
    assert decode_shrink(lambda im: im) is None
    nearest = decode_shrink(T.Compose([T.Resize(8, interpolation=T.InterpolationMode.NEAREST)]))
    assert nearest is not None and not nearest.draft  # picking pixels from a scaled decode would differ
    augmented = make_transforms(_SPEC, D.Augment(flip=True, random_resized_crop=True))[0]
    assert decode_shrink(augmented) is not None


def test_every_check_still_holds_with_a_shrink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shrink = decode_shrink(_eval_tf(image_size=64))
    grey = tmp_path / "grey.jpg"
    _photo(800, 600).convert("L").save(grey)
    cmyk = tmp_path / "cmyk.jpg"
    _photo(800, 600).convert("CMYK").save(cmyk)
    png = tmp_path / "alpha.png"
    Image.new("RGBA", (800, 600), (255, 0, 0, 0)).save(png)
    for path in (grey, cmyk, png):
        image = D.load_image(path, shrink)
        assert image.mode == "RGB" and image.size == (97, 73), path.name
    assert np.asarray(D.load_image(png, shrink)).min() == 255  # transparent pixels on white
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    with pytest.raises(DataError, match="named pipe"):
        D.load_image(pipe, shrink)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="too large to decode safely"):
        D.load_image(grey, shrink)


# ---------------------------------------------------------------------------- decoded cache
def _bundle(folder: Path, interpolation: str = "bilinear") -> D.DataBundle:
    bundle = D.load_data(folder, val_fraction=0.25, seed=0)
    bundle.train_tf, bundle.eval_tf = make_transforms(SimpleNamespace(**{**vars(_SPEC), "input_size": 56,
                                                                         "resize_size": 64}), None)
    return bundle


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    for c in range(2):
        (tmp_path / "photos" / f"c{c}").mkdir(parents=True)
        for i in range(6):
            _jpeg(tmp_path / "photos" / f"c{c}" / f"{i}.jpg", _photo(400, 300, seed=10 * c + i))
    return tmp_path / "photos"


def test_decoded_cache_never_exceeds_its_bound(photo_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    per_image = 85 * 64 * 3  # kept at the resize's 85x64, 3 bytes a pixel, not 400x300
    monkeypatch.setattr(datasets, "DECODED_CACHE_MAX_BYTES", 3 * per_image + 10)
    bundle = _bundle(photo_folder)
    train, val = bundle.datasets(cache=True)
    plain_train, plain_val = bundle.datasets(cache=False)
    budget = train._budget
    assert val._budget is budget and budget.max_bytes == 3 * per_image + 10
    for _ in range(2):
        for ds, plain in ((train, plain_train), (val, plain_val)):
            for i in range(len(ds)):
                x, y = ds[i]
                assert torch.equal(x, plain[i][0]) and y == plain[i][1]  # kept or not: the same
                assert budget.nbytes <= budget.max_bytes
    assert len(train._cache) + len(val._cache) == 3  # the first three; the others decode on every read
    assert sum(b.nbytes for b in train._cache.blocks + val._cache.blocks) == budget.nbytes
    kept = [train._cache.get(i) for i in range(3)]
    assert all(im is not None and im.size == (85, 64) and im.mode == "RGB" for im in kept)
    assert train._cache.get(3) is None


def test_decoded_cache_packs_many_images_into_few_blocks(photo_folder: Path) -> None:
    bundle = _bundle(photo_folder)
    train, val = bundle.datasets(cache=True)
    for ds in (train, val):
        for i in range(len(ds)):
            ds[i]
    assert len(train._cache) == len(train) and len(val._cache) == len(val)
    assert len(train._cache.blocks) == len(val._cache.blocks) == 1  # one block each, not one array an image
    assert train._budget.nbytes == 2 * datasets._BLOCK_BYTES
    train.clear_cache()
    assert len(train._cache) == 0 and train._budget.nbytes == datasets._BLOCK_BYTES


def test_decoded_cache_bound_is_a_quarter_of_free_memory_at_most_2_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    assert D.DECODED_CACHE_MAX_BYTES == 2 << 30
    assert 0 < D.decoded_cache_bound() <= 2 << 30
    monkeypatch.setattr(datasets, "memory_budget", lambda device: 123_456)
    assert D.decoded_cache_bound() == 123_456
    assert D.DecodedBudget().max_bytes == 123_456


def test_a_new_transform_with_another_resize_drops_the_kept_images(photo_folder: Path) -> None:
    bundle = _bundle(photo_folder)
    train, _ = bundle.datasets(cache=True)
    train[0]
    assert len(train._cache) == 1 and train._budget.nbytes > 0
    train.transform = _eval_tf(image_size=32)
    assert len(train._cache) == 0 and train._budget.nbytes == 0
    assert train[0][0].shape == (3, 32, 32)


def test_decoded_fits_only_decides_workers_or_not(photo_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _bundle(photo_folder)
    monkeypatch.setattr(features, "memory_budget", lambda device: 1)  # memory no longer decides
    assert feeds.decoded_fits(bundle, "cpu", None) and feeds.decoded_fits(bundle, "cpu", 0)
    assert not feeds.decoded_fits(bundle, "cpu", 2)
    assert not feeds.decoded_fits(bundle, "cuda", None)


# ---------------------------------------------------------------------------- features on disk
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def _fit(cache: features.FeatureCache, **options: object) -> tuple:
    model = _Net()
    for p in model.body.parameters():
        p.requires_grad_(False)
    config = TrainConfig(**{"epochs": 3, "batch_size": 8, "precision": "fp32", "lr": 0.05, **options})
    trainer = Trainer(model, colour_task(40, 0), colour_task(12, 1), config, device="cpu", feature_cache=cache)
    return trainer.fit(), trainer


def _feature_files() -> list[str]:
    return sorted(os.listdir(cache_dir("features")))


def test_features_past_the_memory_budget_go_to_disk_with_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    memory, _ = _fit(features.FeatureCache())
    monkeypatch.setattr(features, "memory_budget", lambda device: 100)
    cache = features.FeatureCache()
    on_disk, trainer = _fit(cache)
    assert trainer.mode == "cached features on disk (head input)"
    assert cache.stats["images_extracted"] == 52 and cache.stats["images_reused"] > 0
    assert memory.batch_frame()["loss"].tolist() == pytest.approx(on_disk.batch_frame()["loss"].tolist(), rel=1e-5)
    assert memory.epoch_frame()["val_loss"].tolist() == pytest.approx(on_disk.epoch_frame()["val_loss"].tolist(),
                                                                      rel=1e-5)
    files = _feature_files()
    assert len(files) == 2 and all(f.startswith(f"features-{os.getpid()}-") for f in files)  # train and val
    assert cache.nbytes == (40 + 12) * 8 * 4
    cache.clear()  # the trainer still refers to the features: the files go all the same
    assert _feature_files() == [] and cache.nbytes == 0


def test_a_new_cache_removes_the_old_file_and_files_of_ended_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    stale = cache_dir("features") / f"features-{int(ended.stdout)}-left.bin"
    stale.write_bytes(b"\0" * 64)
    monkeypatch.setattr(features, "memory_budget", lambda device: 100)
    cache = features.FeatureCache()
    _fit(cache, epochs=1)
    assert not stale.exists()
    first = _feature_files()
    _fit(cache, epochs=1)  # a new model: new features, the old files are removed at once
    assert len(first) == 2 and len(_feature_files()) == 2 and not set(first) & set(_feature_files())


def test_without_disk_space_fits_fall_back_to_full_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "memory_budget", lambda device: 100)
    usage = SimpleNamespace(total=10**12, used=10**12 - 1000, free=1000)
    monkeypatch.setattr(feature_store.shutil, "disk_usage", lambda path: usage)
    history, trainer = _fit(features.FeatureCache(), epochs=1)
    assert trainer.mode == ("full passes: features need 0.00 GB, more than the cache limit 0.00 GB in memory "
                            "and 0.00 GB on disk (half the free space)")
    assert len(history.epochs) == 1 and _feature_files() == []


def test_a_disk_that_fills_up_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("blocks are reserved with posix_fallocate")
    monkeypatch.setattr(features, "memory_budget", lambda device: 100)

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(feature_store.os, "posix_fallocate", full)
    with pytest.raises(TrainingError, match="No space left on device.*cache_features='off'"):
        _fit(features.FeatureCache(), epochs=1)
    assert _feature_files() == []


def test_session_fit_on_disk_and_its_file_goes_with_new_data(image_folder: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import ready_session

    monkeypatch.setattr(features, "memory_budget", lambda device: 100)
    s = ready_session(image_folder, "resnet18", image_size=64, torch_seed=0, batch_size=8, epochs=2)
    s.fit()
    assert "Batches: cached features on disk (head input)." in s.message
    assert len(_feature_files()) == 2
    s.load_data(image_folder, val_fraction=0.25, seed=1)
    assert _feature_files() == []
