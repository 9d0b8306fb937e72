"""Reading batches with several threads: the same tensors as one reader, errors named, the
decoded-image bound kept, random augmentations still read in one seeded order."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from tests.conftest import make_image_folder
from tlwidgets.core import loading
from tlwidgets.core.data import Augment, make_transforms
from tlwidgets.core.datasets import DecodedBudget, ImageDataset
from tlwidgets.core.errors import DataError
from tlwidgets.core.folder_scan import Sample
from tlwidgets.core.transforms import IMAGENET

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "flowers-dev"


def _samples(folder: Path) -> list[Sample]:
    files = sorted(folder.rglob("*.jpg"))
    classes = sorted({f.parent.name for f in files})
    return [Sample(str(f), classes.index(f.parent.name)) for f in files]


@pytest.fixture
def two_threads():
    """torch's thread count at 2 (what a two-core laptop has); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _sequential(dataset: Dataset, batches: list[torch.Tensor]) -> list:
    return list(DataLoader(dataset, batch_sampler=loading.IndexBatches(batches)))


def test_threads_read_exactly_what_one_reader_reads(tmp_path: Path, two_threads: None) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=10, size=80)
    _, eval_tf = make_transforms(IMAGENET, image_size=64)
    samples = _samples(folder)
    batches = list(torch.randperm(len(samples), generator=torch.Generator().manual_seed(0)).split(7))
    threaded = ImageDataset(samples, eval_tf, cache=True)
    assert loading.read_threads(threaded) == min(2, os.cpu_count() or 1)
    got = list(loading.read_batches(threaded, batches))
    want = _sequential(ImageDataset(samples, eval_tf), batches)
    assert len(got) == len(want) == len(batches)
    for (x, y), (x0, y0) in zip(got, want):
        assert torch.equal(x, x0) and torch.equal(y, y0)
    assert len(threaded._cache) == len(samples)  # every decoded image kept once
    again = list(loading.read_batches(threaded, batches))  # now from the kept pixels
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, want))


@pytest.mark.skipif(not SHARED.is_dir(), reason="the flower photos are not in ../shared")
def test_real_photos_read_by_threads_match_one_reader(two_threads: None) -> None:
    samples = _samples(SHARED)[::10]
    _, eval_tf = make_transforms(IMAGENET)
    batches = list(torch.arange(len(samples)).split(8))
    got = torch.cat([x for x, _ in loading.read_batches(ImageDataset(samples, eval_tf), batches)])
    want = torch.cat([x for x, _ in _sequential(ImageDataset(samples, eval_tf), batches)])
    assert got.shape == (len(samples), 3, 224, 224) and torch.equal(got, want)


def test_the_decoded_bound_holds_when_threads_keep_images(tmp_path: Path, two_threads: None) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=12, size=96)
    _, eval_tf = make_transforms(IMAGENET, image_size=64)
    budget = DecodedBudget(max_bytes=5 * 3 * 73 * 73)  # room for about five decoded images
    dataset = ImageDataset(_samples(folder), eval_tf, cache=budget)
    for _ in loading.read_batches(dataset, list(torch.arange(len(dataset)).split(9))):
        pass
    assert 0 < budget.nbytes <= budget.max_bytes
    assert sum(b.size for b in dataset._cache.blocks) == budget.nbytes
    assert 0 < len(dataset._cache) < len(dataset)
    dataset.clear_cache()
    assert budget.nbytes == 0


def test_random_augmentation_is_read_in_one_seeded_order(tmp_path: Path, two_threads: None) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=4, size=48)
    train_tf, _ = make_transforms(IMAGENET, Augment(flip=True, rotation=20), image_size=32)
    dataset = ImageDataset(_samples(folder), train_tf)
    assert loading.read_threads(dataset) == 1
    batches = list(torch.arange(len(dataset)).split(5))
    torch.manual_seed(3)
    first = [x for x, _ in loading.read_batches(dataset, batches)]
    torch.manual_seed(3)
    second = [x for x, _ in loading.read_batches(dataset, batches)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_only_datasets_that_say_so_are_read_by_threads(two_threads: None) -> None:
    class Plain(Dataset):
        transform = None

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.full((2,), float(i)), i

    assert loading.read_threads(Plain()) == 1  # not known to be thread-safe
    assert loading.read_threads(TensorDataset(torch.zeros(4, 2))) == 1
    assert loading.read_threads(ImageDataset([], None), num_workers=2) == 1  # loader workers read
    x, y = next(loading.read_batches(Plain(), [torch.tensor([3, 1])]))
    assert x.tolist() == [[3.0, 3.0], [1.0, 1.0]] and y.tolist() == [3, 1]


def test_a_broken_image_is_named_when_threads_read_it(tmp_path: Path, two_threads: None) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=4, size=48)
    broken = folder / "class_1" / "img_2.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _, eval_tf = make_transforms(IMAGENET, image_size=32)
    dataset = ImageDataset(_samples(folder), eval_tf)
    with pytest.raises(DataError, match="img_2.jpg"):
        list(loading.read_batches(dataset, list(torch.arange(len(dataset)).split(6))))


def test_a_dataset_with_kept_images_still_pickles_for_loader_workers(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "images", per_class=2, size=40)
    _, eval_tf = make_transforms(IMAGENET, image_size=32)
    dataset = ImageDataset(_samples(folder), eval_tf, cache=True)
    x0, _ = dataset[0]
    copy = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(copy[0][0], x0) and copy._budget.lock is not dataset._budget.lock
    assert copy._budget.lock.acquire(blocking=False)
