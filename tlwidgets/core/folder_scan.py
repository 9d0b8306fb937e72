"""The class-folder scan: which files of ``root/<class>/**`` are usable images, and why the others are not.

Every candidate file is decoded once while scanning (:func:`tlwidgets.core.images.inspect_file`),
so a corrupt or truncated image is reported up front (with its reason) instead of failing
mid-training. JPEGs are decoded at reduced size (``draft``), which keeps the scan fast.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError
from .images import IMAGE_EXTENSIONS, file_kind, inspect_file, is_hidden

_WORKERS = min(8, (os.cpu_count() or 2) * 2)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Sample:
    """One image file and its class index; unpacks like a ``(path, label)`` tuple."""

    path: str
    label: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.path, self.label))


@dataclass
class _Scan:
    """What one class-folder scan found (internal; :func:`scan_folder` returns a plain tuple)."""

    root: Path
    classes: list[str]
    samples: list[Sample]
    skipped: list[tuple[str, str]]
    sizes: list[tuple[int, int]]  # (width, height) per sample, same order
    stray_images: int = 0  # images lying directly in root, outside any class folder


def _skip_reason_by_name(name: str) -> str | None:
    """Why a file is skipped without opening it, or None when it is a candidate."""
    if is_hidden(name):
        return "hidden file"
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return None
    if ext in (".heic", ".heif"):
        return f"unsupported image format (extension {ext}; convert it to JPEG or PNG)"
    return f"not an image (extension {ext})" if ext else "not an image (no file extension)"


def _walk_class(folder: str, root: str, skipped: list[tuple[str, str]]) -> list[str]:
    """Files under one class folder (sub-folders included), sorted; loops through links are cut."""
    root_real = os.path.realpath(root)
    files: list[str] = []
    stack = [folder]
    seen: set[tuple[int, int]] = set()
    while stack:
        current = stack.pop()
        try:
            st = os.stat(current)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                skipped.append((current, "folder already scanned (symbolic link loop)"))
                continue
            seen.add(key)
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            skipped.append((current, "folder cannot be read (permission denied)"))
            continue
        except OSError as exc:
            skipped.append((current, f"folder cannot be read ({exc.strerror or exc})"))
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                real = os.path.realpath(entry.path) if entry.is_symlink() else ""
                if is_hidden(entry.name):
                    skipped.append((entry.path, "hidden folder"))
                elif real and (real == root_real or root_real.startswith(real + os.sep)):
                    # A link back to the scanned folder would pull other classes' images in.
                    skipped.append((entry.path, "folder already scanned (symbolic link loop)"))
                else:
                    stack.append(entry.path)
            elif is_file:
                files.append(entry.path)
            elif entry.is_symlink() and not os.path.exists(entry.path):
                skipped.append((entry.path, "broken symbolic link"))
            else:  # a pipe, socket or device (perhaps behind a link): opening it could block
                try:
                    kind = f" ({file_kind(entry.stat().st_mode)})"
                except OSError:
                    kind = ""
                skipped.append((entry.path, f"not a regular file{kind}"))
    return sorted(files)


def _list_root(root: Path) -> tuple[list[str], list[tuple[str, str]], int]:
    """Class folder names in root, the skipped root entries, and how many images lie loose in root."""
    if not root.is_dir():
        raise DataError(f"Folder not found: {root}. Pass a folder with one sub-folder per class.")
    dirs, skipped, stray = [], [], 0
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except PermissionError as exc:
        raise DataError(f"Cannot read the folder {root} (permission denied).") from exc
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            if is_hidden(entry.name):
                skipped.append((entry.path, "hidden folder"))
            else:
                dirs.append(entry.name)
        elif is_hidden(entry.name):
            skipped.append((entry.path, "hidden file"))
        else:
            is_image = os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
            stray += is_image
            skipped.append((entry.path, "not inside a class folder"))
    return dirs, skipped, stray


def _scan(
    root: str | os.PathLike[str],
    max_per_class: int | None = None,
    progress: Progress | None = None,
    class_names: Sequence[str] | None = None,
) -> _Scan:
    """Scan ``root/<class>/**`` and decode every candidate image once.

    Args:
        root: folder with one sub-folder per class.
        max_per_class: keep only the first N usable images (sorted by path) per class;
            later files are not decoded at all.
        progress: called with (files checked, files to check).
        class_names: label with these names' indices instead of the sorted found classes
            (a folder class missing from them is skipped).
    """
    root = Path(root)
    dirs, skipped, stray = _list_root(root)
    if class_names is not None:
        known = {name: i for i, name in enumerate(class_names)}
        for name in [d for d in dirs if d not in known]:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            skipped.append((str(root / name), f"class not among the training classes{hint}"))
        dirs = [d for d in dirs if d in known]
    per_class: list[tuple[str, list[str]]] = []
    for name in dirs:
        candidates = []
        for path in _walk_class(str(root / name), str(root), skipped):
            reason = _skip_reason_by_name(os.path.basename(path))
            if reason is None:
                candidates.append(path)
            else:
                skipped.append((path, reason))
        per_class.append((name, candidates))

    total = sum(len(c) for _, c in per_class)
    done = 0
    found: list[tuple[str, list[tuple[str, tuple[int, int]]]]] = []
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        for name, candidates in per_class:
            good: list[tuple[str, tuple[int, int]]] = []
            start = 0
            while start < len(candidates):
                need = len(candidates) - start if max_per_class is None else max_per_class - len(good)
                if need <= 0:
                    break
                chunk = candidates[start : start + need]
                for path, result in zip(chunk, pool.map(inspect_file, chunk)):
                    if isinstance(result, str):
                        skipped.append((path, result))
                    else:
                        good.append((path, result))
                start += len(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            if good:
                found.append((name, good))
            else:
                skipped.append((str(root / name), "no usable images in class folder"))
    if progress is not None and done < total:
        progress(total, total)

    classes = list(class_names) if class_names is not None else [name for name, _ in found]
    index = {name: i for i, name in enumerate(classes)}
    samples = [Sample(p, index[name]) for name, good in found for p, _ in good]
    sizes = [size for _, good in found for _, size in good]
    return _Scan(root, classes, samples, sorted(skipped), sizes, stray)


def scan_folder(
    root: str | os.PathLike[str],
) -> tuple[list[str], list[Sample], list[tuple[str, str]]]:
    """Find the usable images of a folder with one sub-folder per class.

    Class names are the sorted sub-folder names that hold at least one usable image.
    Every file that cannot be used is listed with a plain reason (hidden file, not an
    image, empty file, cannot be decoded, truncated image, ...).

    Returns:
        ``(classes, samples, skipped)``; ``skipped`` holds ``(path, reason)`` pairs.

    Raises:
        DataError: when ``root`` is not a readable folder.
    """
    scan = _scan(root)
    return scan.classes, scan.samples, scan.skipped
