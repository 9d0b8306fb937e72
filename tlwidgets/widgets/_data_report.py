"""The Data panel's report of the loaded data: what was found, per class, and what was skipped.

A summary line, the images per class (bars for the training and validation splits, and a
line of training counts with the core's imbalance warning, ``balance.imbalance_note``),
the image sizes, sample thumbnails per class and the skipped files with their reasons.
"""

from __future__ import annotations

import html
import os
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from . import _images
from ._balance_view import BalanceView

_MAX_CLASSES_SHOWN = 50
_MAX_SKIPPED_SHOWN = 500


def path_label(sample: Any) -> tuple[str, int]:
    """``(path, label)`` of a data set's sample."""
    path, label = sample  # Sample unpacks like a (path, label) tuple
    return os.fspath(path), int(label)


def _tag(widget: Any, css_class: str) -> Any:
    widget.add_class(css_class)
    return widget


class DataReport:
    """The report's widgets, redrawn by :meth:`show` for each loaded data set."""

    def __init__(self) -> None:
        self.sample_paths: dict[str, list[str]] = {}
        self.summary = _tag(widgets.HTML(), "tlw-data-summary")
        self.balance = BalanceView("Training images per class")
        self.imbalance = _tag(self.balance.warning, "tlw-data-imbalance")
        self.counts_fig = go.FigureWidget(
            data=[go.Bar(name="train", x=[], y=[]), go.Bar(name="val", x=[], y=[])],
            layout=go.Layout(
                barmode="group", height=260, margin=dict(l=40, r=10, t=30, b=40),
                title=dict(text="Images per class", font=dict(size=13)),
                xaxis=dict(type="category"), yaxis=dict(title="images"),
                legend=dict(orientation="h", y=1.12, x=1, xanchor="right"),
            ),
        )  # fmt: skip
        self.sizes = _tag(widgets.HTML(), "tlw-image-sizes")
        self.samples = _tag(widgets.HTML(), "tlw-samples")
        self.skipped_table = widgets.HTML()
        self.skipped = _tag(widgets.Accordion(children=[self.skipped_table], selected_index=None), "tlw-skipped")

    def show(self, bundle: Any, samples_per_class: int) -> None:
        """Draw the report of ``bundle`` (a ``DataBundle``; ``None``: no data yet)."""
        if bundle is None:
            self.summary.value = (
                "<i>No data loaded yet: choose a folder with one sub-folder per class, "
                "an archive, a torchvision dataset, or the built-in demo.</i>"
            )
            self._draw_counts([], np.zeros(0), np.zeros(0))
            self.balance.show({})
            self.sizes.value = self.samples.value = self.skipped_table.value = ""
            self.skipped.set_title(0, "Skipped files (0)")
            self.sample_paths = {}
            return
        report = bundle.report
        self.summary.value = f"<div style='margin:4px 0'>{html.escape(report.summary())}</div>"
        counts = report.counts.reindex(list(bundle.classes)).fillna(0)
        self.balance.show(counts["train"].astype(int).to_dict())
        self._draw_counts(list(bundle.classes), counts["train"].to_numpy(int), counts["val"].to_numpy(int))
        self.sizes.value = _images.sizes_html(getattr(report, "image_sizes", None))
        self._draw_samples(bundle, counts, samples_per_class)
        self._draw_skipped(report)

    def _draw_counts(self, classes: list[str], train: np.ndarray, val: np.ndarray) -> None:
        with self.counts_fig.batch_update():
            self.counts_fig.data[0].x = classes
            self.counts_fig.data[0].y = train
            self.counts_fig.data[1].x = classes
            self.counts_fig.data[1].y = val

    def _draw_samples(self, bundle: Any, counts: Any, samples_per_class: int) -> None:
        per_class: dict[int, list[str]] = {i: [] for i in range(len(bundle.classes))}
        for sample in [*bundle.train, *bundle.val]:
            path, label = path_label(sample)
            if label in per_class and len(per_class[label]) < samples_per_class:
                per_class[label].append(path)
        shown = list(bundle.classes)[:_MAX_CLASSES_SHOWN]
        self.sample_paths = {name: per_class[i] for i, name in enumerate(shown)}
        totals = counts["total"] if "total" in counts else counts["train"] + counts["val"]
        rows = [(name, int(totals.get(name, 0)), self.sample_paths[name]) for name in shown]
        note = f"First {len(shown)} of {len(bundle.classes)} classes shown." if len(bundle.classes) > len(shown) else ""
        self.samples.value = _images.thumbnail_grid_html(rows, note=note)

    def _draw_skipped(self, report: Any) -> None:
        self.skipped.set_title(0, f"Skipped files ({len(report.skipped)})")
        self.skipped_table.value = _images.skipped_table_html(report.skipped, limit=_MAX_SKIPPED_SHOWN)
