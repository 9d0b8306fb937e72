"""Pictures for panels: thumbnails as PNG bytes, tensors back to pictures, and the HTML that shows them.

Thumbnails go into HTML as base64 ``<img>`` tags: one HTML widget renders hundreds of
them far faster than one ``ipywidgets.Image`` per picture.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..core.data import load_image
from ..core.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalisation

THUMB_SIZE = 64


def png_bytes(img: Image.Image, size: int | None = THUMB_SIZE) -> bytes:
    """PNG bytes of ``img`` shrunk (never enlarged) to fit a ``size`` square; ``None`` keeps its size."""
    img = img.convert("RGB") if img.mode not in ("RGB", "L") else img
    if size is not None:
        img = img.copy()
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


@functools.lru_cache(maxsize=2048)
def _cached_thumbnail(path: str, mtime_ns: int, size: int) -> bytes:
    return png_bytes(load_image(path), size)


def thumbnail_png(path: str | os.PathLike[str], size: int = THUMB_SIZE) -> bytes | None:
    """PNG bytes of a small thumbnail of the file at ``path``; ``None`` if it cannot be read.

    Cached by path and modification time, so redrawing the same data is cheap.
    """
    try:
        path = os.fspath(path)
        return _cached_thumbnail(path, os.stat(path).st_mtime_ns, int(size))
    except (OSError, ValueError):
        # Unreadable, vanished or undecodable (DataError is a ValueError): the caller shows a placeholder.
        return None


def img_tag(png: bytes | None, title: str = "", size: int = THUMB_SIZE, css_class: str = "tlw-thumb") -> str:
    """An inline ``<img>`` (base64 PNG) or, for ``None``, a grey placeholder box of the same size."""
    tip = html.escape(title, quote=True)
    if png is None:
        return (
            f"<div class='{css_class} tlw-thumb-missing' title='{tip}' style='width:{size}px;height:{size}px;"
            "background:#eee;display:inline-block;font-size:10px;color:#888;text-align:center'>unreadable</div>"
        )
    data = base64.b64encode(png).decode("ascii")
    return (
        f"<img class='{css_class}' src='data:image/png;base64,{data}' title='{tip}' "
        f"style='max-width:{size}px;max-height:{size}px;margin:1px;image-rendering:auto'/>"
    )


def tensor_to_image(
    tensor: Any, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Image.Image:
    """Undo ``Normalize(mean, std)`` on a CxHxW tensor (or array) and return an RGB picture."""
    arr = tensor.detach().cpu().float().numpy() if hasattr(tensor, "detach") else np.asarray(tensor, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"expected a CxHxW image tensor, got shape {tuple(arr.shape)}")
    channels = arr.shape[0]
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)[:channels]
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)[:channels]
    arr = np.clip(arr * s + m, 0.0, 1.0)
    arr = (arr.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
    if channels == 1:
        return Image.fromarray(arr[:, :, 0]).convert("RGB")
    return Image.fromarray(np.ascontiguousarray(arr[:, :, :3]))


def thumbnail_grid_html(
    rows: Sequence[tuple[str, int, Sequence[str]]], size: int = THUMB_SIZE, note: str = ""
) -> str:
    """An HTML table with one row per class: name, image count, then thumbnails of ``paths``.

    Args:
        rows: ``(class name, number of images, paths to show)`` per class.
        size: thumbnail side in pixels.
        note: a line under the table (e.g. "first 50 of 100 classes shown").
    """
    out = ["<table class='tlw-samples-table' style='border-collapse:collapse'>"]
    for name, count, paths in rows:
        thumbs = "".join(img_tag(thumbnail_png(p, size), title=os.path.basename(p), size=size) for p in paths)
        out.append(
            f"<tr class='tlw-sample-row' data-class='{html.escape(name, quote=True)}'>"
            "<td style='padding:2px 8px 2px 0;vertical-align:middle;white-space:nowrap'>"
            f"<b>{html.escape(name)}</b><br><span style='color:#666;font-size:11px'>{count} images</span></td>"
            f"<td style='padding:2px 0'>{thumbs}</td></tr>"
        )
    out.append("</table>")
    if note:
        out.append(f"<div style='color:#666;font-size:11px'>{html.escape(note)}</div>")
    return "".join(out)


def preview_strip_html(original: Image.Image, views: Sequence[Image.Image], caption: str, size: int = 112) -> str:
    """A caption, the original picture, an arrow, then the augmented views (class ``tlw-aug-view``)."""
    first = img_tag(png_bytes(original, size), "original", size, "tlw-aug-original")
    cells = "".join(img_tag(png_bytes(v, size), f"view {i + 1}", size, "tlw-aug-view") for i, v in enumerate(views))
    return (
        f"<div style='font-size:11px;color:#666'>{html.escape(caption)}</div>"
        "<div style='display:flex;flex-wrap:wrap;gap:4px;align-items:center'>"
        f"{first}<span style='font-size:18px;color:#999'>&rarr;</span>{cells}</div>"
    )


def skipped_table_html(skipped: Any, limit: int = 500) -> str:
    """HTML table of skipped files: a DataFrame with ``path`` and ``reason`` columns, first ``limit`` rows."""
    n = len(skipped)
    if n == 0:
        return "<i>Every file found was used.</i>"
    rows = "".join(
        f"<tr><td style='padding:1px 8px 1px 0'><code>{html.escape(str(p))}</code></td>"
        f"<td>{html.escape(str(r))}</td></tr>"
        for p, r in zip(list(skipped["path"])[:limit], list(skipped["reason"])[:limit])
    )
    more = f"<div>... and {n - limit} more.</div>" if n > limit else ""
    return (
        "<table class='tlw-skipped-table'><tr><th align='left'>file</th><th align='left'>reason</th></tr>"
        f"{rows}</table>{more}"
    )


def sizes_html(sizes: Any) -> str:
    """The image-size summary (a DataFrame such as ``describe()`` of width and height) as a small table."""
    if sizes is None or len(sizes) == 0:
        return ""
    table = sizes.to_html(classes="tlw-sizes-table", border=0, float_format=lambda v: f"{v:.0f}")
    return f"<div style='margin-left:12px'><b>Image sizes (pixels)</b>{table}</div>"


def normalisation(bundle: Any, spec: Any = None) -> Normalisation:
    """``(mean, std)`` a data bundle's transforms normalise with, as core reports it.

    Transforms core did not build (a bundle whose transforms are still identities) fall
    back to ``spec``'s, else ImageNet's.
    """
    found = bundle.normalisation
    if found is not None:
        return found
    if spec is not None:
        return tuple(spec.mean), tuple(spec.std)
    return IMAGENET_MEAN, IMAGENET_STD


def augmented_views(
    bundle: Any, index: int, count: int, spec: Any = None
) -> tuple[str, str, Image.Image, list[Image.Image]]:
    """Training image ``index`` of a data bundle and ``count`` passes of it through the training transform.

    Returns ``(path, class name, original picture, views)``; the views are pictures as the
    model sees them (normalisation undone), so augmentation can be judged by eye.
    """
    path, label = bundle.train[index % len(bundle.train)]  # a Sample unpacks like (path, label)
    path, label = os.fspath(path), int(label)
    original = load_image(path)
    mean, std = normalisation(bundle, spec)
    views = []
    for _ in range(count):
        out = bundle.train_tf(original)
        views.append(out if isinstance(out, Image.Image) else tensor_to_image(out, mean, std))
    name = bundle.classes[label] if 0 <= label < len(bundle.classes) else str(label)
    return path, name, original, views
