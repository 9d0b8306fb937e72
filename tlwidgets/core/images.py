"""Image files: which names are images, and opening them (or images in memory) as upright RGB.

Training reads go through :func:`load_image` with a :class:`Shrink`: an image larger than
the model's resize step needs is decoded straight to that step's output size, and a JPEG
first at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) while that stays at least that size.
A 4000x3000 photo for a 256-pixel resize is then decoded and transformed about 6x faster
(20 ms instead of 128 ms on one AMD EPYC core; ``torchvision.io.decode_jpeg`` decodes the
full picture, 74 ms, no faster than Pillow here, so Pillow's draft mode is used).
:func:`inspect_file` decodes a candidate once for the class-folder scan
(:mod:`tlwidgets.core.folder_scan`). Pixels become RGB in :mod:`tlwidgets.core.pixels`;
files are opened through :mod:`tlwidgets.core.regular_files`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError, features

from .errors import DataError
from .pixels import ACCEPTED_IMAGES, array_to_image
from .pixels import describe as _describe
from .pixels import to_rgb as _to_rgb
from .regular_files import (
    NotRegularFileError,
    RegularFile,
    file_kind,
    open_regular_file,
)

__all__ = [
    "ACCEPTED_IMAGES", "IMAGE_EXTENSIONS", "NotRegularFileError", "RegularFile", "Shrink", "array_to_image",
    "file_kind", "inspect_file", "is_hidden", "load_image", "open_regular_file",
]

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


def is_hidden(name: str) -> bool:
    """True for dot-files and folders that tools leave behind (``.DS_Store``, ``__MACOSX``)."""
    return name.startswith(".") or name in _HIDDEN_DIRS


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


def inspect_file(path: str) -> tuple[int, int] | str:
    """Decode one candidate file of a scan; return its (width, height), or why it is unusable."""
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


_inspect = inspect_file  # its earlier name
