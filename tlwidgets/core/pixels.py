"""Pixels to 8-bit RGB: any Pillow mode, and numpy arrays or torch tensors holding one image.

Transparency is composited on white, 16-bit and float greyscale is scaled (not clipped) to
8 bits, and an array that does not describe an image is refused with its shape, type and
what is accepted (:data:`ACCEPTED_IMAGES`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import DataError

ACCEPTED_IMAGES = (
    "a file path (str or pathlib.Path), a PIL image, a numpy array (HxWx3 or HxW, uint8 0-255 "
    "or float 0-1), a torch tensor (3xHxW or HxWx3, uint8 or float 0-1), or a list of those"
)


def to_rgb(im: Image.Image) -> Image.Image:
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


def describe(value: Any) -> str:
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
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr), mode))


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
