"""Datasets of image files, and the bound on the decoded images they keep in memory.

An :class:`ImageDataset` decodes each image straight to its transform's resize size
(:func:`tlwidgets.core.transforms.decode_shrink`) and, with ``cache=``, keeps the decoded
pixels packed into large blocks within a :class:`DecodedBudget`, so later epochs decode
nothing while the images fit (:func:`decoded_cache_bound`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .features import memory_budget
from .folder_scan import Sample
from .images import Shrink, load_image
from .transforms import decode_shrink

#: Most bytes the decoded images of one data set keep in memory (``cache=True``), whatever
#: the free memory: 2 GiB holds about 8,000 photos at EfficientNet's 256x341 resize, or
#: 11,000 at ResNet's 232x309. Images past the bound are decoded on every read.
DECODED_CACHE_MAX_BYTES = 2 << 30
_BLOCK_BYTES = 64 << 20  # kept images are packed into blocks this large (see _Kept)


def decoded_cache_bound() -> int:
    """Bytes the decoded images of one bundle's datasets may hold in memory.

    A quarter of the available memory (the share :func:`features.memory_budget` gives
    a cache), at most :data:`DECODED_CACHE_MAX_BYTES`.
    """
    return max(0, min(memory_budget(torch.device("cpu")), DECODED_CACHE_MAX_BYTES))


class DecodedBudget:
    """The bytes of decoded images that the datasets sharing it may keep in memory.

    Attributes:
        max_bytes: the bound; default :func:`decoded_cache_bound`.
        nbytes: bytes held now: the blocks the kept pixels are packed into (and not
            the index of where each image lies, 32 bytes an image, made with the dataset).
    """

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = decoded_cache_bound() if max_bytes is None else int(max_bytes)
        self.nbytes = 0
        self.lock = threading.Lock()  # datasets sharing the budget keep images from several threads

    def __getstate__(self) -> dict[str, Any]:  # a loader worker gets a copy, without the lock
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` when they fit under the bound; False (nothing reserved) otherwise."""
        if self.nbytes + nbytes > self.max_bytes:
            return False
        self.nbytes += nbytes
        return True

    def give_back(self, nbytes: int) -> None:
        self.nbytes = max(0, self.nbytes - nbytes)

    @property
    def room(self) -> int:
        """Bytes that can still be taken."""
        return max(0, self.max_bytes - self.nbytes)


class _Kept:
    """One dataset's kept images, packed one after another into large uint8 blocks.

    Where each image lies is one row of a preallocated index, so keeping an image makes
    no small long-lived object: those, scattered between the decoder's temporaries, left
    the heap so fragmented that resident memory grew to several times the pixels kept.
    Nothing is evicted: once the budget is spent, further images are not kept (an epoch
    reads every image once, so evicting old ones would only trade one miss for another).
    """

    def __init__(self, n: int, budget: DecodedBudget) -> None:
        self.budget = budget
        self.where = np.full((n, 4), -1, dtype=np.int64)  # block, offset, height, width
        self.blocks: list[np.ndarray] = []
        self.free = 0  # bytes left at the end of the last block
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def get(self, index: int) -> Image.Image | None:
        block, offset, height, width = (int(v) for v in self.where[index])
        if block < 0:
            return None
        pixels = self.blocks[block][offset:offset + 3 * height * width].reshape(height, width, 3)
        return Image.fromarray(pixels)

    def keep(self, index: int, image: Image.Image) -> bool:
        """Copy ``image`` (RGB) into a block; False when the budget is spent. Thread-safe."""
        with self.budget.lock:
            return self._keep(index, image)

    def _keep(self, index: int, image: Image.Image) -> bool:
        width, height = image.size
        nbytes = 3 * width * height
        if nbytes > self.free:
            size = min(max(_BLOCK_BYTES, nbytes), self.budget.room)
            if size < nbytes or not self.budget.take(size):
                return False
            self.blocks.append(np.empty(size, np.uint8))
            self.free = size
        block = self.blocks[-1]
        offset = block.size - self.free
        block[offset:offset + nbytes] = np.frombuffer(image.tobytes(), np.uint8)
        self.where[index] = (len(self.blocks) - 1, offset, height, width)
        self.free -= nbytes
        self.count += 1
        return True

    def clear(self) -> None:
        with self.budget.lock:
            self.budget.give_back(sum(b.size for b in self.blocks))
            self.blocks, self.free, self.count = [], 0, 0
            self.where.fill(-1)


class ImageDataset(Dataset):
    """Samples as ``(transform(RGB image), label)`` pairs; several threads may read at once.

    When the transform starts with a resize (as
    :func:`~tlwidgets.core.transforms.make_transforms` builds it), each
    image is decoded straight to that resize's output size (JPEGs at 1/2, 1/4 or 1/8
    scale while that stays at least that size; see :func:`transforms.decode_shrink`).

    Args:
        samples: :class:`Sample` objects or ``(path, label)`` tuples.
        transform: PIL image -> tensor; ``None`` returns the PIL image itself.
        cache: keep decoded images in memory, so each file is decoded once: ``True`` (up
            to :func:`decoded_cache_bound` bytes) or a :class:`DecodedBudget` shared with
            other datasets. Images are kept at the resize's output size; those past the
            bound are decoded on every read.
        classes: class names, kept for display.
    """

    #: reads from several threads are safe (:mod:`tlwidgets.core.loading` reads batches so)
    thread_safe_reads = True

    def __init__(
        self,
        samples: Sequence[Sample | tuple[str, int]],
        transform: Callable[[Image.Image], Any] | None = None,
        cache: bool | DecodedBudget = False,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.samples = [s if isinstance(s, Sample) else Sample(os.fspath(s[0]), int(s[1])) for s in samples]
        self.classes = list(classes) if classes is not None else None
        self._budget = (cache if isinstance(cache, DecodedBudget) else DecodedBudget()) if cache else None
        self._cache = _Kept(len(self.samples), self._budget) if self._budget is not None else None
        self._shrink: Shrink | None = None
        self.transform = transform

    @property
    def transform(self) -> Callable[[Image.Image], Any] | None:
        """PIL image -> model input; setting one with another resize drops the decoded images."""
        return self._transform

    @transform.setter
    def transform(self, transform: Callable[[Image.Image], Any] | None) -> None:
        self._transform = transform
        shrink = decode_shrink(transform)
        if shrink != self._shrink:
            self._shrink = shrink
            self.clear_cache()

    def clear_cache(self) -> None:
        """Forget the decoded images kept in memory (their bytes go back to the budget)."""
        if self._cache is not None:
            self._cache.clear()

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order."""
        return [s.label for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = self.samples[index]
        image = self._image(index, sample.path)
        transform = self._transform
        return (image if transform is None else transform(image)), sample.label

    def _image(self, index: int, path: str) -> Image.Image:
        cache = self._cache
        if cache is None:
            return load_image(path, self._shrink)
        image = cache.get(index)
        if image is None:
            image = load_image(path, self._shrink)
            cache.keep(index, image)  # 3 bytes a pixel, where a PIL RGB image holds 4
        return image
