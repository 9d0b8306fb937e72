"""Image files: which are usable, opening them as RGB, and the class-folder scan.

Every candidate file is decoded once while scanning, so a corrupt or truncated
image is reported up front (with its reason) instead of failing mid-training.
JPEGs are decoded at reduced size (``draft``), which keeps the scan fast.

Training reads go through :func:`load_image` with a :class:`Shrink`: an image larger than
the model's resize step needs is decoded straight to that step's output size, and a JPEG
first at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) while that stays at least that size.
A 4000x3000 photo for a 256-pixel resize is then decoded and transformed about 6x faster
(20 ms instead of 128 ms on one AMD EPYC core; ``torchvision.io.decode_jpeg`` decodes the
full picture, 74 ms, no faster than Pillow here, so Pillow's draft mode is used).
"""

from __future__ import annotations

import difflib
import io
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError, features

from .errors import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm"}
    | ({".avif"} if features.check("avif") else set())
)
# Folders that tools leave behind; they never hold a class. ``_removed`` holds the images the
# Cleaner took out of a data set (see tlwidgets.core.cleaning_apply).
_HIDDEN_DIRS = frozenset({"__MACOSX", "__pycache__", "$RECYCLE.BIN", "System Volume Information", "_removed"})
_DRAFT_SIZE = (64, 64)
_EXIF_ORIENTATION = 0x0112
_WORKERS = min(8, (os.cpu_count() or 2) * 2)
# O_NONBLOCK: opening a named pipe returns at once instead of waiting for a writer.
# O_NOCTTY: opening a terminal device never makes it the controlling terminal.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
ACCEPTED_IMAGES = (
    "a file path (str or pathlib.Path), a PIL image, a numpy array (HxWx3 or HxW, uint8 0-255 "
    "or float 0-1), a torch tensor (3xHxW or HxWx3, uint8 or float 0-1), or a list of those"
)

Progress = Callable[[int, int], None]

# What each EXIF orientation needs to stand upright (as ImageOps.exif_transpose does it).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class Shrink:
    """How :func:`load_image` may decode an image straight to a resize step's output size.

    Made from a transform by :func:`tlwidgets.core.transforms.decode_shrink`. An image is
    only ever made smaller this way; one already at most that size is decoded as it is.

    Attributes:
        size: the upright image's ``(width, height)`` -> the resize step's ``(width, height)``.
        resample: the step's Pillow filter (``Image.Resampling``).
        draft: let a JPEG decode at 1/2, 1/4 or 1/8 scale first, never below the output
            size; the result then differs slightly from resizing the full decode.
    """

    size: Callable[[int, int], tuple[int, int]]
    resample: int = Image.Resampling.BILINEAR
    draft: bool = True


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


class NotRegularFileError(OSError):
    """The path is a named pipe, socket, device or folder: reading it could block or never end.

    ``str()`` says what it is instead: ``"a named pipe"``, ``"a device"``, ...
    """


class RegularFile(io.BufferedReader):
    """A regular file opened by :func:`open_regular_file`; ``str()`` is its path."""

    def __str__(self) -> str:
        return str(self.name)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in plain words, from its ``st_mode``."""
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a special file"


def open_regular_file(path: str | os.PathLike[str]) -> RegularFile:
    """Open ``path`` for binary reading only when it is a regular file.

    The file is opened without blocking and checked on the open descriptor, so a file
    swapped for a named pipe or a device between any earlier check and this call is
    refused instead of blocking forever (or reading endless data).

    Raises:
        NotRegularFileError: a named pipe, socket, device or folder.
        OSError: the file is missing or cannot be opened (permission denied, ...).
    """
    name = os.fspath(path)
    fd = os.open(name, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(file_kind(mode))
        if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        raw = io.FileIO(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    raw.name = name
    return RegularFile(raw)


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


def load_image(path: Any, shrink: Shrink | None = None) -> Image.Image:
    """Open an image as 8-bit RGB, with its EXIF orientation applied.

    Palette and alpha images are composited on white, CMYK is converted, 16-bit
    greyscale is scaled to 8 bits. Only regular files are opened: a named pipe or a
    device is refused instead of blocking.

    Args:
        path: an image file; or an image already in memory: a PIL image, a numpy array
            (HxWx3, HxWx4 or HxW; uint8 0-255 or float 0-1) or a torch tensor (3xHxW or
            HxWx3; uint8 or float 0-1).
        shrink: decode a file larger than a resize step's output straight to that size
            (see :class:`Shrink`); images in memory are not shrunk.

    Raises:
        DataError: naming the file, when it cannot be read or decoded; saying what is
            accepted, for any other kind of value.
    """
    if isinstance(path, Image.Image):
        return _to_rgb(_upright(path))
    if isinstance(path, (np.ndarray, torch.Tensor)):
        return array_to_image(path)
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"Cannot use {_describe(path)} as an image. Pass {ACCEPTED_IMAGES}.")
    if not os.fspath(path).strip():
        raise DataError(f"The image path is empty. Pass {ACCEPTED_IMAGES}.")
    try:
        with open_regular_file(path) as fp, Image.open(fp) as im:
            _check_pixels(im)
            if shrink is not None:
                return _decode_shrunk(im, shrink)
            im.load()
            return _to_rgb(_upright(im))
    except FileNotFoundError as exc:
        raise DataError(f"Image not found: {path}. Check the path, or rescan the folder.") from exc
    except NotRegularFileError as exc:
        raise DataError(
            f"Cannot read the image {path}: it is {exc}, not a regular file. Pass an image file, "
            "or rescan the folder."
        ) from exc
    except Exception as exc:  # Pillow raises many types for bad files
        raise DataError(
            f"Cannot read the image {path}: {_decode_reason(exc)}. Remove or replace this file."
        ) from exc


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened image; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block does not make the pixels unusable
        return 1
    return value if value in _UPRIGHT else 1


def _decode_shrunk(im: Image.Image, shrink: Shrink) -> Image.Image:
    """An opened (size-checked) image decoded, upright and RGB, at most at ``shrink``'s size.

    With draft decoding, the resize reads only the part of the scaled image that covers
    the original (``box``): libjpeg rounds the scaled size up, and resizing that padding
    too would shift the picture by up to a pixel. That resize runs in the stored
    orientation, before the small image is turned upright.
    """
    box, orientation, stored = None, 1, (0, 0)
    if shrink.draft and im.format in ("JPEG", "MPO"):
        orientation = _orientation(im)  # a JPEG's EXIF block is read with its header: nothing is decoded
        width, height = im.size
        turned = orientation in (5, 6, 7, 8)
        out_w, out_h = shrink.size(*((height, width) if turned else (width, height)))
        stored = (out_h, out_w) if turned else (out_w, out_h)
        if out_w * out_h < width * height:
            drafted = im.draft("RGB", stored)  # the smallest 1/2, 1/4, 1/8 scale still >= stored
            if drafted is not None and im.size != (width, height):
                box = drafted[1]
    im.load()
    if box is None:
        image = _to_rgb(_upright(im))
        out = shrink.size(*image.size)
        if out[0] * out[1] >= image.size[0] * image.size[1]:  # not smaller: the transform enlarges it
            return image
        return image.resize(out, shrink.resample)
    small = _to_rgb(im).resize(stored, shrink.resample, box=box)
    method = _UPRIGHT.get(orientation)
    return small if method is None else small.transpose(method)


def _describe(value: Any) -> str:
    """A short description of an unusable value, for messages."""
    if value is None:
        return "None"
    text = repr(value)
    return f"the {type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def array_to_image(array: np.ndarray | torch.Tensor) -> Image.Image:
    """An RGB PIL image from a numpy array or torch tensor holding one image.

    numpy arrays are read as HxWxC (HxW for greyscale), tensors as CxHxW; each falls
    back to the other layout when only that one fits. C is 1 (grey), 3 (RGB) or 4
    (RGBA, composited on white). Integer values must lie in 0-255, float values in 0-1.

    Raises:
        DataError: the shape, type or value range does not describe an image.
    """
    is_tensor = isinstance(array, torch.Tensor)
    kind = "tensor" if is_tensor else "numpy array"
    if is_tensor:
        tensor = array.detach()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        arr = tensor.cpu().numpy()
    else:
        arr = np.asarray(array)
    shape = "x".join(str(n) for n in arr.shape) or "scalar"

    def refuse(why: str) -> DataError:
        return DataError(f"Cannot use a {kind} of shape {shape} and type {arr.dtype} as an image: {why}. "
                         f"Pass {ACCEPTED_IMAGES}.")

    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 4:
        raise refuse(f"it holds {arr.shape[0]} images; pass them as a list (list(batch))")
    if arr.ndim == 3:
        first, last = _channels_first(arr.shape, prefer_first=is_tensor)
        if not (first or last):
            raise refuse("it needs 1, 3 or 4 colour channels")
        if first:
            arr = np.moveaxis(arr, 0, -1)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    elif arr.ndim != 2:
        raise refuse("an image has 2 dimensions (greyscale) or 3 (colour)")
    if arr.size == 0:
        raise refuse("it holds no pixels")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise refuse(f"integer values must lie in 0-255, these lie in {lo}-{hi}")
        arr = arr.astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise refuse("it holds NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            raise refuse(f"float values must lie in 0-1, these lie in {lo:.3g} to {hi:.3g} (a normalised "
                         "tensor? pass the image before normalising; 0-255 floats: divide by 255)")
        arr = np.rint(arr * 255).astype(np.uint8)
    else:
        raise refuse("its values are neither integers nor floats")
    _check_array_pixels(arr.shape[0] * arr.shape[1], refuse)
    mode = "L" if arr.ndim == 2 else ("RGB" if arr.shape[-1] == 3 else "RGBA")
    return _to_rgb(Image.fromarray(np.ascontiguousarray(arr), mode))


def _channels_first(shape: tuple[int, ...], prefer_first: bool) -> tuple[bool, bool]:
    """Whether a 3-D image array is CxHxW or HxWxC, as ``(first, last)``; both False: neither.

    1 or 3 channels decide before 4; when both ends fit equally, torch's channels-first
    or numpy's channels-last convention decides.
    """
    for counts in ((1, 3), (4,)):
        first, last = shape[0] in counts, shape[-1] in counts
        if first and last:
            return prefer_first, not prefer_first
        if first or last:
            return first, last
    return False, False


def _check_array_pixels(pixels: int, refuse: Callable[[str], DataError]) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and pixels > limit:
        raise refuse(f"{pixels:,} pixels is above the limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS)")


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
        fp = open_regular_file(path)
    except NotRegularFileError as exc:
        return f"not a regular file ({exc})"
    except PermissionError:
        return "cannot be read (permission denied)"
    except (OSError, ValueError) as exc:  # ValueError: a name with a NUL byte
        return f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    try:
        with fp:
            if os.fstat(fp.fileno()).st_size == 0:
                return "empty file (0 bytes)"
            with Image.open(fp) as im:
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
