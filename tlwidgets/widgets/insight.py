"""HTML views that explain a model's decisions: confusion-cell drill-down and Grad-CAM overlays."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..core.errors import TLWidgetsError
from ._images import img_tag, png_bytes, thumbnail_png

DRILL_LIMIT = 48  # thumbnails drawn for one confusion cell; the rest are counted
_THUMB = 96
_CAM_SIZE = 160
CAM_LIMIT = 4  # uploaded images explained with Grad-CAM


def _note(text: str) -> str:
    return f"<div style='color:#777;font-style:italic'>{html.escape(text)}</div>"


def class_name(value: Any, classes: Sequence[str]) -> str:
    """A class given by name or by index, as its name."""
    if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(classes):
        return str(classes[int(value)])
    return str(value)


def cell_images(predictions: pd.DataFrame, true_class: str, pred_class: str) -> pd.DataFrame:
    """Rows of ``predictions`` with this true and predicted class, highest loss first."""
    mask = (predictions["true"].astype(str) == true_class) & (predictions["pred"].astype(str) == pred_class)
    return predictions[mask.to_numpy()].sort_values("loss", ascending=False, kind="stable")


def drilldown_html(rows: pd.DataFrame, true_class: str, pred_class: str, limit: int = DRILL_LIMIT) -> str:
    """Thumbnails of one confusion cell with true and predicted class, confidence and loss."""
    verdict = "correct" if true_class == pred_class else "mistaken"
    head = (f"<div style='margin:4px 0'><b>true {html.escape(true_class)}, predicted {html.escape(pred_class)}</b>"
            f" <span style='color:#555'>({len(rows)} {verdict} images, highest loss first)</span></div>")
    if len(rows) == 0:
        return head + _note("No images in this cell.")
    cells = []
    colour = "#070" if verdict == "correct" else "#a00"
    for row in rows.head(limit).itertuples(index=False):
        path = str(row.path)
        tag = img_tag(thumbnail_png(path, _THUMB) if isinstance(row.path, str) else None, title=path, size=_THUMB)
        cells.append(
            f"<div class='tlw-drill-item' data-path='{html.escape(path, quote=True)}' style='display:inline-block;"
            f"margin:4px;width:{_THUMB + 24}px;vertical-align:top;font-size:11px;text-align:center'>{tag}<br>"
            f"true <b>{html.escape(str(row.true))}</b><br>pred <b style='color:{colour}'>{html.escape(str(row.pred))}"
            f"</b> {float(row.confidence):.0%}<br><span style='color:#777'>loss {float(row.loss):.2f}</span></div>"
        )
    more = len(rows) - min(len(rows), limit)
    tail = f"<div style='color:#777'>and {more} more</div>" if more > 0 else ""
    return head + "<div>" + "".join(cells) + "</div>" + tail


def gradcam_html(session: Any, images: Sequence[Image.Image], names: Sequence[str], limit: int = CAM_LIMIT) -> str:
    """Grad-CAM overlays for the top class of each image (the first ``limit``), or why there are none."""
    from ..core import gradcam

    blocks = []
    for image, name in list(zip(images, names, strict=False))[:limit]:
        try:
            result = gradcam.explain(session, image)
        except TLWidgetsError as exc:  # no grad-cam, a transformer, ...: predictions still show
            return _note(f"Grad-CAM: {exc}")
        picture = gradcam.overlay(result["image"], result["heatmap"])
        caption = f"{name}: {result['class']} {result['probability']:.0%}"
        blocks.append(
            "<div class='tlw-gradcam-item' style='display:inline-block;margin:4px;text-align:center;font-size:11px;"
            f"vertical-align:top;width:{_CAM_SIZE}px'>"
            f"{img_tag(png_bytes(picture, _CAM_SIZE), title=caption, size=_CAM_SIZE, css_class='tlw-gradcam-img')}"
            f"<br>{html.escape(caption)}</div>"
        )
    if not blocks:
        return ""
    more = len(images) - len(blocks)
    tail = _note(f"Grad-CAM shown for the first {len(blocks)} images.") if more > 0 else ""
    title = ("<div style='font-size:90%;color:#555'>Grad-CAM: red areas weighed most for the top class "
             f"(layer {html.escape(str(result['layer']))}).</div>")
    return title + "<div>" + "".join(blocks) + "</div>" + tail
