"""How the model picker shows a catalog model: marker size, hover box, weights words, table."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd


def marker_size(
    size_mb: Any, smallest_mb: float, largest_mb: float, lo_px: float = 6.0, hi_px: float = 40.0
) -> np.ndarray:
    """Marker diameters in pixels, proportional to the square root of the file size.

    Args:
        size_mb: file sizes in MB (scalar or array).
        smallest_mb: size drawn at ``lo_px``; largest_mb: size drawn at ``hi_px``.
        lo_px: smallest marker; hi_px: largest marker.
    """
    s = np.sqrt(np.clip(np.asarray(size_mb, dtype=float), smallest_mb, largest_mb))
    lo, hi = math.sqrt(smallest_mb), math.sqrt(largest_mb)
    if hi <= lo:
        return np.full(s.shape, (lo_px + hi_px) / 2)
    return lo_px + (s - lo) / (hi - lo) * (hi_px - lo_px)


def weights_text(status: str, size_mb: float) -> str:
    """Plain words for a weights status: ``"download 44.7 MB"``, ``"packaged (offline)"``, ..."""
    return {
        "download": f"download {size_mb:.1f} MB",
        "packaged": "packaged (offline)",
        "checkpoint": "checkpoint (local file)",
    }.get(status, status)


def hover_text(r: Any) -> str:
    """Hover box of one catalog row: name, family, top-1, parameters, size, speed, weights."""
    top1 = "n/a" if pd.isna(r.top1) else f"{r.top1:.1f}%"
    timed = "not measured here" if pd.isna(r.speed_ms) else f"{r.speed_ms:.2f} ms/image"
    return (f"<b>{html.escape(r.name)}</b> ({html.escape(r.family)})<br>top-1: {top1}<br>"
            f"params: {r.params_m:.1f} M · size: {r.size_mb:.1f} MB<br>"
            f"speed: {timed} · {r.gflops:.2f} GFLOPs<br>weights: {weights_text(r.weights, r.size_mb)}")


def sort_rows(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """``df`` in the table's order for ``key`` (see :func:`table_html`)."""
    if key == "speed":
        return df.sort_values(["x", "name"])
    if key == "name":
        return df.sort_values("name")
    return df.sort_values([key, "name"], ascending=[key != "top1", True], na_position="last")


def table_html(
    df: pd.DataFrame, current: str | None, key: str, x_mode: str, page: int = 0, page_size: int | None = None
) -> str:
    """The models of ``df`` as an HTML table sorted by ``key``; ``current`` is highlighted.

    ``key`` is a column name or ``"speed"`` (the x column, ms/image when ``x_mode`` is
    ``"time"``, else GFLOPs); accuracy sorts best first, the rest smallest first. With
    ``page_size``, only page ``page`` (from 0) of the sorted rows is shown.
    """
    df = sort_rows(df, key)
    if page_size:
        df = df.iloc[page * page_size:(page + 1) * page_size]
    xhead = "ms/image" if x_mode == "time" else "GFLOPs"
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>" for h in
                   ("Model", "Family", "Top-1 %", xhead, "Size MB", "Params M", "Weights"))
    rows = []
    for r in df.itertuples():
        style = " style='font-weight:bold;background:#eef5ff'" if r.name == current else ""
        top1 = "" if pd.isna(r.top1) else f"{r.top1:.1f}"
        cells = (r.name, r.family, top1, "" if pd.isna(r.x) else f"{r.x:.3g}", f"{r.size_mb:.1f}", f"{r.params_m:.1f}",
                 weights_text(r.weights, r.size_mb))
        rows.append(f"<tr{style}>" + "".join(f"<td style='padding:1px 8px'>{html.escape(c)}</td>"
                                             for c in cells) + "</tr>")
    if not rows:
        return "<i>No model passes these filters: loosen them.</i>"
    return f"<table style='border-collapse:collapse;font-size:90%'><tr>{head}</tr>{''.join(rows)}</table>"
