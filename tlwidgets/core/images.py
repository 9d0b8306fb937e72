"""Image files: which are usable, opening them as RGB, and the class-folder scan.

Every candidate file is decoded once while scanning, so a corrupt or truncated
image is reported up front (with its reason) instead of failing mid-training.
JPEGs are decoded at reduced size (``draft``), which keeps the scan fast.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from .errors import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm"}
    | ({".avif"} if features.check("avif") else set())
)
# Folders that tools leave behind; they never hold a class.
_HIDDEN_DIRS = frozenset({"__MACOSX", "__pycache__", "$RECYCLE.BIN", "System Volume Information"})
_DRAFT_SIZE = (64, 64)
_EXIF_ORIENTATION = 0x0112
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


def is_hidden(name: str) -> bool:
    """True for dot-files and folders that tools leave behind (``.DS_Store``, ``__MACOSX``)."""
    return name.startswith(".") or name in _HIDDEN_DIRS


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(im)
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "1":
        im = im.convert("L")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(f"unsupported colour mode {mode} ({exc})") from exc


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to 8-bit, scaled rather than clipped.

    16-bit images are scaled by their full range (65535 -> 255) so brightness stays
    comparable across images; other depths are scaled by the range their values use.
    """
    arr = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16"):
        scaled = arr * (255.0 / 65535.0)
    else:
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if im.mode == "F" and lo >= 0 and hi <= 1.0:
            scaled = arr * 255.0
        elif lo >= 0 and hi <= 255:
            scaled = arr
        elif lo >= 0 and hi <= 65535:
            scaled = arr * (255.0 / 65535.0)
        else:
            scaled = (arr - lo) * (255.0 / (hi - lo))
    out = np.clip(np.nan_to_num(np.rint(scaled)), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L").convert("RGB")


def load_image(path: str | os.PathLike[str] | Image.Image) -> Image.Image:
    """Open an image as 8-bit RGB, with its EXIF orientation applied.

    Palette and alpha images are composited on white, CMYK is converted, 16-bit
    greyscale is scaled to 8 bits.

    Args:
        path: an image file, or an already opened PIL image.

    Raises:
        DataError: naming the file, when it cannot be read or decoded.
    """
    if isinstance(path, Image.Image):
        return _to_rgb(_upright(path))
    try:
        with Image.open(path) as im:
            _check_pixels(im)
            im.load()
            return _to_rgb(_upright(im))
    except FileNotFoundError as exc:
        raise DataError(f"Image not found: {path}. Check the path, or rescan the folder.") from exc
    except Exception as exc:  # Pillow raises many types for bad files
        raise DataError(
            f"Cannot read the image {path}: {_decode_reason(exc)}. Remove or replace this file."
        ) from exc


def _upright(im: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; as stored when the EXIF block is broken."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block does not make the pixels unusable
        return im


def _check_pixels(im: Image.Image) -> None:
    """Refuse images above ``Image.MAX_IMAGE_PIXELS`` before decoding them.

    Pillow only warns between one and two times the limit, and would then decode a
    small file into gigabytes of pixels (a decompression bomb).
    """
    limit = Image.MAX_IMAGE_PIXELS
    pixels = im.size[0] * im.size[1]
    if limit is not None and pixels > limit:
        raise Image.DecompressionBombError(
            f"{im.size[0]}x{im.size[1]} is {pixels:,} pixels, above the limit of {limit:,} "
            "(PIL.Image.MAX_IMAGE_PIXELS; raise it if you trust this file)"
        )


def _decode_reason(exc: BaseException) -> str:
    """A plain reason for a decoding failure."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"too large to decode safely ({exc})"
    if isinstance(exc, UnidentifiedImageError):
        return "cannot be decoded: not a recognised image format"
    if isinstance(exc, PermissionError):
        return "cannot be read (permission denied)"
    message = str(exc) or type(exc).__name__
    if "truncated" in message or "broken data stream" in message:
        return "truncated image"
    return f"cannot be decoded: {message}"


def _inspect(path: str) -> tuple[int, int] | str:
    """Decode one candidate file; return its (width, height), or why it is unusable."""
    try:
        if os.stat(path).st_size == 0:
            return "empty file (0 bytes)"
    except PermissionError:
        return "cannot be read (permission denied)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    try:
        with Image.open(path) as im:
            _check_pixels(im)
            width, height = im.size
            if im.format == "JPEG":
                im.draft("RGB", _DRAFT_SIZE)
            # Decode before reading EXIF: for some formats getexif() decodes, and a decoding
            # error swallowed there would let a broken image through.
            im.load()
            try:
                if im.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
                    width, height = height, width
            except Exception:  # a broken EXIF block does not make the pixels unusable
                pass
            _to_rgb(im)
    except Exception as exc:
        return _decode_reason(exc)
    return width, height


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
                skipped.append((entry.path, "not a regular file"))
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
                for path, result in zip(chunk, pool.map(_inspect, chunk)):
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
