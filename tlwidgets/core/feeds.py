"""Feeding the trainer's batches: decoded images through a DataLoader, or cached features.

A :class:`Feed` times data loading and the frozen prefix separately from the training
steps, so the logs can report images/s for each.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from tlwidgets.core.errors import DataError
from tlwidgets.core.features import FeatureCache, Plan
from tlwidgets.core.loading import read_batches


class Feed:
    """Yields the model inputs of each batch: images, or cached features, with timings.

    Attributes:
        forward: the module to train (the model, or the split's suffix).
        forward_eval: the module to validate with.
        data_s, data_images: time spent waiting for decoded batches, and their images.
        feature_s, feature_images: time spent in the frozen prefix, and its images.
    """

    def __init__(self, model: nn.Module, plan_: Plan, train_ds: Dataset, val_ds: Dataset | None,
                 device: torch.device, channels_last: bool, batch_size: int, loader_kw: dict,
                 cache: FeatureCache | None) -> None:
        self.plan = plan_
        self.train_ds, self.val_ds = train_ds, val_ds
        self.device, self.channels_last = device, channels_last
        self.batch_size, self.loader_kw = batch_size, loader_kw
        self.cache = cache
        split = plan_.split
        self.forward = split.suffix if split is not None else model
        self.forward_eval = split.suffix_eval if split is not None else model
        self.reset_timing()

    def reset_timing(self) -> None:
        self.data_s = self.feature_s = 0.0
        self.data_images = self.feature_images = 0

    def prepare_train_mode(self) -> None:
        """After ``model.train()``: the prefix stays in eval mode."""
        if self.plan.split is not None:
            self.plan.split.prefix_eval()

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _loaded(self, dataset: Dataset, batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, Any]]:
        if not batches:
            return
        it = read_batches(dataset, batches, self.loader_kw)
        while True:
            start = _now(self.device)
            try:
                x, y = next(it)
            except StopIteration:
                return
            except DataError as exc:
                plain = _unwrapped(exc)
                if plain is exc:
                    raise
                raise plain from exc
            x = self._to_device(x)
            self.data_s += _now(self.device) - start
            self.data_images += len(x)
            yield x, y

    def _extract(self, x: torch.Tensor) -> torch.Tensor:
        start = _now(self.device)
        with torch.no_grad():
            features = self.plan.entry.prefix_fn(x)
        self.feature_s += _now(self.device) - start
        self.feature_images += len(x)
        if self.cache is not None:
            self.cache.stats["images_extracted"] += len(x)
        return features

    def _batches(self, part: Any, dataset: Dataset, view: int,
                 batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if part is None:
            for x, y in self._loaded(dataset, batches):
                yield x, torch.as_tensor(y)
            return
        need = [not part.complete(view, b) for b in batches]
        loaded = self._loaded(dataset, [b for b, n in zip(batches, need) if n])
        for b, missing in zip(batches, need):
            if missing:
                x, y = next(loaded)
                features, y = self._extract(x), torch.as_tensor(y)
                part.put(view, b, features, y)
                yield features, y
            else:
                if self.cache is not None:
                    self.cache.stats["images_reused"] += len(b)
                features, y = part.get(view, b)
                if self.channels_last and features.dim() == 4:
                    features = features.contiguous(memory_format=torch.channels_last)
                yield features, y

    def train_batches(self, epoch: int, batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Inputs and labels of this epoch's training batches, in the order given."""
        entry = self.plan.entry
        view = (epoch - 1) % self.plan.views
        return self._batches(entry.train if entry is not None else None, self.train_ds, view, batches)

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Inputs and labels of the validation set, in order."""
        if self.val_ds is None:
            return iter(())
        order = torch.arange(len(self.val_ds))
        batches = list(order.split(self.batch_size))
        entry = self.plan.entry
        if entry is not None and not self.plan.val_cached:
            return self._uncached_val(batches)
        return self._batches(entry.val if entry is not None else None, self.val_ds, 0, batches)

    def _uncached_val(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self._loaded(self.val_ds, batches):
            yield self._extract(x), torch.as_tensor(y)

    def rates(self) -> dict[str, float | None]:
        """Images per second of data loading and of the frozen prefix (None when none ran)."""
        def rate(n: int, s: float) -> float | None:
            return n / s if n and s > 0 else None

        return {"data_images_per_s": rate(self.data_images, self.data_s),
                "feature_images_per_s": rate(self.feature_images, self.feature_s)}


def _unwrapped(exc: DataError) -> DataError:
    """A DataError from a DataLoader worker with its own message again, not the worker's traceback.

    The loader re-raises a worker's error as ``Caught DataError in DataLoader worker process 0.
    Original Traceback ...``; the user needs only the last line (which names the file).
    """
    text = str(exc)
    marker = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    if not text.startswith("Caught ") or marker not in text:
        return exc
    return type(exc)(text.rsplit(marker, 1)[1].strip())


def _now(device: torch.device) -> float:
    """A clock reading after the device's queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def decoded_fits(bundle: Any, device: str | torch.device, num_workers: int | None) -> bool:
    """Whether to keep decoded images in memory: yes when they are decoded in the training process.

    Loader workers would each hold their own copy, lost at the end of every epoch, so the
    in-memory copy only pays off without workers. How much it keeps is bounded by the
    datasets (:func:`tlwidgets.core.data.decoded_cache_bound`); images past the bound are
    decoded on every read, so ``bundle`` (kept for callers) no longer matters.
    """
    device = torch.device(device)
    workers = num_workers if num_workers is not None else (0 if device.type != "cuda" else 1)
    return not workers
