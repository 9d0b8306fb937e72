"""Frozen-prefix feature cache: run the frozen front of a network once per image.

When the frozen layers form a prefix of the network (see :mod:`tlwidgets.core.splits`),
the trainer computes the prefix's output for each image once, keeps it (on the
training device) and trains the rest on those tensors in later epochs. The validation
set is cached the same way. Features are extracted lazily, batch by batch, in the
first epoch, so the first epoch costs what a full pass costs and Stop works at once.

With random training transforms (augmentation) each image gets ``augment_views``
cached views: epoch ``e`` uses view ``(e - 1) % views``, so the first ``views`` epochs
see fresh augmentations and later epochs reuse them.

Under ``cache_features="auto"``, features larger than :func:`memory_budget` are kept in a
memory-mapped file in the cache folder (:mod:`tlwidgets.core.feature_store`) while half
the free disk holds them; only beyond that do fits fall back to full passes.

A :class:`FeatureCache` outlives one fit: the next fit reuses its features while the
cut point, the frozen prefix's weights (checked by tensor identity, in-place version and
storage), the datasets and their transforms, the precision, the memory layout and the
device stay the same. A new head (its size, dropout, hidden layer) or new training options
reuse them; any change of what the prefix computes starts a new cache.

How the prefix itself runs (eager, compiled, or the runtime chosen by measurement) is
:mod:`tlwidgets.core.prefix_run`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from tlwidgets.core.errors import TrainingError
from tlwidgets.core.feature_store import FeaturePart as _Part
from tlwidgets.core.feature_store import disk_room
from tlwidgets.core.loading import dataset_is_random, is_random_transform, read_items
from tlwidgets.core.prefix_run import (
    COMPILE_MIN_IMAGES,
    COMPILE_MODES,
    autocast,
    prefix_function,
)
from tlwidgets.core.runtimes import RuntimeChoice
from tlwidgets.core.splits import Split, find_split, first_trainable

__all__ = ["CACHE_MODES", "COMPILE_MIN_IMAGES", "COMPILE_MODES", "FeatureCache", "Plan", "dataset_is_random",
           "is_random_transform", "memory_budget", "plan", "prefix_function"]

CACHE_MODES = ("auto", "on", "off")
#: Share of the device's free memory the cache may fill under ``cache_features="auto"``.
MEMORY_FRACTION = 0.25

def memory_budget(device: torch.device) -> int:
    """Bytes the cache may use on ``device`` under ``cache_features="auto"``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_FRACTION)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            fields = dict(line.split(":", 1) for line in fh)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = 8 << 30
    return int(available * MEMORY_FRACTION)


# ---------------------------------------------------------------------------- the key
def _ref(obj: Any) -> Any:
    return None if obj is None else weakref.ref(obj)


def _alive_same(refs: tuple, others: tuple) -> bool:
    if len(refs) != len(others):
        return False
    for a, b in zip(refs, others):
        if (a is None) != (b is None):
            return False
        if a is not None and (a() is None or a() is not b()):
            return False
    return True


@dataclass
class _Key:
    """What the cached features depend on: objects (held weakly) and values."""

    refs: tuple
    values: tuple

    def same(self, other: _Key) -> bool:
        return self.values == other.values and _alive_same(self.refs, other.refs)


def _transform_of(dataset: Dataset | None) -> str:
    return repr(getattr(dataset, "transform", None))


def _make_key(model: nn.Module, split: Split, train_ds: Dataset, options: tuple) -> _Key:
    """What the prefix's outputs depend on: where the cut is, the prefix's weights and
    buffers, the images and their transform, and how the prefix runs. Not the layers
    after the cut, so a new head, dropout or hidden layer reuses the features."""
    prefix_params = list(split.prefix.parameters())
    buffers = [b for b in split.prefix.buffers()]
    values = (
        split.where,
        tuple((p._version, p.data_ptr(), p.dtype, tuple(p.shape), p.requires_grad) for p in prefix_params),
        tuple((b._version, b.data_ptr(), float(b.double().sum())) for b in buffers),
        len(train_ds), _transform_of(train_ds), options,
    )
    refs = (_ref(model), _ref(train_ds), *map(_ref, prefix_params))
    return _Key(refs, values)


def _data_key(dataset: Dataset) -> _Key:
    return _Key((_ref(dataset),), (len(dataset), _transform_of(dataset)))


# ---------------------------------------------------------------------------- storage
@dataclass
class _Entry:
    key: _Key
    train: _Part
    val: _Part | None = None
    val_key: _Key | None = None
    prefix_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    compiled: bool = False
    runtime: RuntimeChoice | None = None


@dataclass
class Stored:
    """Features a :class:`FeatureCache` holds for every image of a training and a validation set.

    Attributes:
        train: the first cached view of each training image (``n_train x ...``), in dataset order.
        val: the validation images' features, or ``None`` for no validation set.
        split: the cut: ``split.suffix_eval(features)`` gives the model's output.
        views: cached views per training image; above 1 the training features are of
            augmented images.
    """

    train: torch.Tensor
    val: torch.Tensor | None
    split: Split
    views: int


class FeatureCache:
    """Cached prefix features, kept between fits while nothing they depend on changes.

    Attributes:
        stats: ``images_extracted`` (images run through the frozen prefix),
            ``images_reused`` (batches served from the cache, in images) and ``builds``
            (how many times the cache was started afresh).
    """

    def __init__(self) -> None:
        self._entry: _Entry | None = None
        self._split: tuple[tuple, tuple, Split | str] | None = None
        self.stats = {"images_extracted": 0, "images_reused": 0, "builds": 0}

    def clear(self) -> None:
        """Drop the cached features (the next fit extracts them again) and remove their file."""
        _release(self._entry)
        self._entry = None
        self._split = None

    @property
    def nbytes(self) -> int:
        """Bytes held by cached features."""
        entry = self._entry
        if entry is None:
            return 0
        parts = [entry.train] + ([entry.val] if entry.val is not None else [])
        return sum(p.data.numel() * p.data.element_size() for p in parts if p.data is not None)

    def _find_split(self, model: nn.Module, head_path: str | None, probe: torch.Tensor) -> Split | str:
        refs = tuple(weakref.ref(m) for m in model.modules())
        values = (head_path, tuple(n for n, p in model.named_parameters() if p.requires_grad), tuple(probe.shape))
        if self._split is not None and self._split[1] == values and _alive_same(self._split[0], refs):
            return self._split[2]
        split = find_split(model, head_path, probe)
        self._split = (refs, values, split)
        return split

    def stored(self, model: nn.Module, train_ds: Dataset, val_ds: Dataset | None = None) -> Stored | None:
        """The cached features of every image of ``train_ds`` and ``val_ds``, as ``model`` computes them now.

        Nothing is computed: ``None`` unless the last fit cached the features of all these
        images (``val_ds`` may be ``None`` or empty) and nothing they depend on has changed
        since (the cut, the frozen weights, the datasets and their transforms).
        """
        entry, found = self._entry, self._split
        if entry is None or found is None or not isinstance(found[2], Split) or entry.key.refs[0]() is not model:
            return None
        split = found[2]
        if not entry.key.same(_make_key(model, split, train_ds, entry.key.values[-1])):
            return None
        train = entry.train
        if train.data is None or not bool(train.filled[0].all()):
            return None
        val = None
        if val_ds is not None and len(val_ds) > 0:
            part = entry.val
            if (part is None or part.data is None or entry.val_key is None
                    or not entry.val_key.same(_data_key(val_ds)) or not bool(part.filled[0].all())):
                return None
            val = part.data[0]
        return Stored(train.data[0], val, split, train.views)

    def _lookup(self, key: _Key, make: Callable[[], _Entry]) -> _Entry:
        if self._entry is None or not self._entry.key.same(key):
            _release(self._entry)  # free the old features before allocating new ones
            self._entry = None
            self._entry = make()
            self.stats["builds"] += 1
        return self._entry


def _release(entry: _Entry | None) -> None:
    """Free an entry's features now, even while an old trainer's plan still refers to it."""
    if entry is not None:
        for part in (entry.train, entry.val):
            if part is not None:
                part.release()


# ---------------------------------------------------------------------------- planning
@dataclass
class Plan:
    """How one fit feeds its batches: ``mode`` says it in words."""

    mode: str
    split: Split | None = None
    entry: _Entry | None = None
    views: int = 1
    val_cached: bool = False


def _probe(train_ds: Dataset, val_ds: Dataset | None) -> torch.Tensor:
    """One input image, read without touching the global random state."""
    source = val_ds if val_ds is not None and len(val_ds) > 0 else train_ds
    with torch.random.fork_rng(devices=[]):
        x = source[0][0]
    return torch.as_tensor(x)[None]


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


def plan(model: nn.Module, train_ds: Dataset, val_ds: Dataset | None, config: Any, device: torch.device,
         amp: torch.dtype | None, channels_last: bool, cache: FeatureCache, head_path: str | None,
         first_batch: torch.Tensor | None = None) -> Plan:
    """Decide between cached features and full passes for one fit.

    ``first_batch`` (indices of the first training batch) is what the runtime choice is timed
    on; features it computes there are kept, so the first batch is not run twice.

    Raises:
        TrainingError: ``cache_features="on"`` and the model has no frozen prefix to cache.
    """
    if config.cache_features == "off":
        return Plan("full passes: feature cache off")
    probe = _probe(train_ds, val_ds).to(device)
    if channels_last and probe.dim() == 4:
        probe = probe.contiguous(memory_format=torch.channels_last)
    split = cache._find_split(model, head_path, probe)
    if not isinstance(split, Split):
        first = first_trainable(model)
        why = split if split in ("all layers trainable", "nothing is trainable") or first is None else (
            f"{first.rsplit('.', 1)[0]} trainable; {split}")
        if config.cache_features == "on":
            raise TrainingError(f"cache_features='on' but there is no frozen prefix to cache: {why}. "
                                "Freeze the first layers, or use cache_features='auto'.")
        return Plan(f"full passes: {why}")
    views = int(config.augment_views) if dataset_is_random(train_ds) else 1
    val_cached = val_ds is not None and len(val_ds) > 0 and not dataset_is_random(val_ds)
    with torch.no_grad(), autocast(device, amp):
        split.prefix_eval()
        sample = split.prefix(probe)
    per_image = sample[0].numel() * sample.element_size()
    total = per_image * (len(train_ds) * views + (len(val_ds) if val_cached else 0))
    budget = memory_budget(device)
    on_disk = False
    if config.cache_features == "auto" and total > budget:  # too large for memory: a file on disk
        room, words = disk_room()
        if total > room:
            return Plan(f"full passes: features need {_gb(total)}, more than the cache limit {_gb(budget)} "
                        f"in memory and {words}")
        on_disk = True
    options = (str(amp), channels_last, str(device), views, config.compile_features)
    key = _make_key(model, split, train_ds, options)
    entry = cache._lookup(key, lambda: _Entry(key, _Part(len(train_ds), views, on_disk)))
    if val_cached:  # a fit without validation (lr_find) keeps the cached validation features
        val_key = _data_key(val_ds)
        if entry.val is None or entry.val_key is None or not entry.val_key.same(val_key):
            if entry.val is not None:
                entry.val.release()
            entry.val, entry.val_key = _Part(len(val_ds), 1, on_disk), val_key
    if entry.prefix_fn is None:
        first = first_batch if first_batch is not None else torch.arange(min(config.batch_size, len(train_ds)))
        labels: list[torch.Tensor] = []
        entry.prefix_fn, entry.compiled = prefix_function(
            split, device, amp, config.compile_features, config.batch_size, total // max(per_image, 1),
            data=lambda: _first_images(train_ds, first, device, channels_last, labels), probe=probe)
        entry.runtime = getattr(entry.prefix_fn, "choice", None)
        _keep_computed(entry, first, labels, views == 1 and not dataset_is_random(train_ds), cache)
    where = split.where + (f", {views} augmented views" if views > 1 else "")
    runtime = entry.runtime  # named when it was measured or is not PyTorch
    compiled = (f"; frozen layers: {runtime.label}" if runtime is not None and runtime.worth_saying
                else ", compiled" if entry.compiled else "")
    stored = " on disk" if entry.train.on_disk else ""
    return Plan(f"cached features{stored} ({where}{compiled})", split, entry, views, val_cached)


def _first_images(dataset: Dataset, index: torch.Tensor, device: torch.device, channels_last: bool,
                  labels: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The inputs at ``index`` as one batch, read without touching the global random state.

    Their labels are appended to ``labels`` when given.
    """
    with torch.random.fork_rng(devices=[]):
        items = read_items(dataset, index)
    x = torch.stack([torch.as_tensor(item[0]) for item in items]).to(device)
    if labels is not None:
        labels.append(torch.as_tensor([int(item[1]) for item in items]))
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _keep_computed(entry: _Entry, index: torch.Tensor, labels: list[torch.Tensor], fixed: bool,
                   cache: FeatureCache) -> None:
    """Store the features the runtime choice computed for the images at ``index`` (fixed transforms only)."""
    computed = getattr(entry.prefix_fn, "computed", None)
    if computed is None:
        return
    entry.prefix_fn.computed = None  # type: ignore[union-attr]
    if fixed and labels and len(computed) == len(index) and not entry.train.complete(0, index):
        entry.train.put(0, index, computed, labels[0])
        cache.stats["images_extracted"] += len(index)
