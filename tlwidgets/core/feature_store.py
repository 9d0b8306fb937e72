"""Where cached prefix features live: in memory, or in a memory-mapped file on disk.

Features that do not fit the memory budget (see :mod:`tlwidgets.core.features`) are kept
in a file in the cache folder (``<cache>/features``), mapped into memory, so a large data
set still trains from cached features: the operating system keeps the pages it has room
for and reads the others back from disk. The file's blocks are reserved when it is made,
so a full disk fails there, with a message, and never in the middle of a write.

The file is removed when its features are released (the cache is cleared or replaced),
when they are garbage-collected, or when the process ends; files left by a process that
was killed are removed by the next process that stores features on disk.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tlwidgets.core._cache import cache_dir
from tlwidgets.core.errors import TrainingError

#: Share of the free disk space the features may fill (as for extracted archives).
DISK_SHARE = 0.5
_FOLDER = "features"
_FILE = re.compile(r"features-(\d+)-\w+\.bin")


def disk_room() -> tuple[int, str]:
    """Bytes the features may fill on disk, and those words for a message.

    Returns:
        ``(bytes, words)``: ``(0, "no usable cache folder (why)")`` when the folder cannot
        be made or read.
    """
    try:
        free = shutil.disk_usage(cache_dir(_FOLDER)).free
    except OSError as exc:
        return 0, f"no usable cache folder on disk ({exc.strerror or exc})"
    room = int(free * DISK_SHARE)
    return room, f"{room / 2**30:.2f} GB on disk (half the free space)"


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:  # Windows keeps a mapped file; the next process removes it
        pass


def _remove_stale(folder: Path) -> None:
    """Remove feature files whose process has ended (it was killed before it could)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _FILE.fullmatch(name)
        if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        _remove(str(folder / name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):  # another user's process, or unknowable
        return True
    return True


def _mapped_file(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, str]:
    """A zero-filled tensor mapped onto a new file in the cache folder, and the file's path.

    Raises:
        TrainingError: the folder cannot be written or the disk lacks the space.
    """
    folder = cache_dir(_FOLDER)
    _remove_stale(folder)
    numel = 1
    for n in shape:
        numel *= int(n)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    try:
        fd, path = tempfile.mkstemp(prefix=f"features-{os.getpid()}-", suffix=".bin", dir=folder)
    except OSError as exc:
        raise TrainingError(f"Cannot write the cached features to {folder} ({exc.strerror or exc}). "
                            "Free some space or set TLWIDGETS_CACHE_DIR, or use fit(cache_features='off').") from exc
    try:
        try:
            if hasattr(os, "posix_fallocate") and nbytes:
                os.posix_fallocate(fd, 0, nbytes)  # reserve the blocks: a full disk fails here
            else:
                os.ftruncate(fd, nbytes)
        finally:
            os.close(fd)
        data = torch.from_file(path, shared=True, size=numel, dtype=dtype).view(shape)
    except (OSError, RuntimeError) as exc:
        _remove(path)
        raise TrainingError(
            f"Cannot keep {nbytes / 2**30:.2f} GB of cached features in {folder} "
            f"({getattr(exc, 'strerror', None) or exc}). Free some disk space, or use "
            "fit(cache_features='off')."
        ) from exc
    return data, path


@dataclass
class FeaturePart:
    """Features of one split of the data: ``views x n`` slots, filled lazily.

    Attributes:
        n, views: images and cached views of each.
        on_disk: keep the features in a memory-mapped file instead of device memory;
            :meth:`get` still returns them on the device they were computed on.
        data: the ``views x n x ...`` tensor, made by the first :meth:`put`.
        path: the file behind ``data`` when on disk.
    """

    n: int
    views: int
    on_disk: bool = False
    data: torch.Tensor | None = None
    path: str | None = None
    filled: torch.Tensor = field(init=False)
    labels: torch.Tensor = field(init=False)
    _device: torch.device | None = field(default=None, init=False, repr=False)
    _remover: weakref.finalize | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.filled = torch.zeros(self.views, self.n, dtype=torch.bool)
        self.labels = torch.zeros(self.n, dtype=torch.long)

    def complete(self, view: int, index: torch.Tensor) -> bool:
        return bool(self.filled[view, index].all())

    def put(self, view: int, index: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> None:
        if self.data is None:
            self._allocate(tuple(features.shape[1:]), features.dtype, features.device)
        assert self.data is not None
        rows = features.detach().to(self.data.device, self.data.dtype)
        self.data[view].index_copy_(0, index.to(self.data.device), rows)
        self.filled[view, index] = True
        self.labels[index] = labels.to("cpu", torch.long)

    def get(self, view: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.data is not None
        rows = self.data[view].index_select(0, index.to(self.data.device))
        if self._device is not None and rows.device != self._device:
            rows = rows.to(self._device, non_blocking=True)
        return rows, self.labels[index]

    def _allocate(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self._device = device
        full = (self.views, self.n, *shape)
        if not self.on_disk:
            self.data = torch.empty(full, dtype=dtype, device=device)
            return
        self.data, self.path = _mapped_file(full, dtype)
        self._remover = weakref.finalize(self, _remove, self.path)  # also runs when the process ends

    def release(self) -> None:
        """Drop the features (and remove their file); the part is empty again."""
        self.data = None
        self.filled.zero_()
        if self._remover is not None:
            self._remover()
            self._remover = None
        self.path = None
