"""Compare models on the user's own images: accuracy here vs prediction time, size = file size.

:class:`CompareView` runs :func:`tlwidgets.core.compare.compare_models` in a background
thread (so Stop stays clickable) and fills a scatter as each model finishes. The
session's own model is left as it is unless "Keep the best" is ticked.
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..core import catalog
from ..core.compare import COMPARE_COLUMNS, classic_small_models, compare_models
from ..core.device import describe
from ..core.errors import BusyError, DataError
from ..core.session import Session
from ..core.status import Status
from ._panel import Panel, guarded

_NOTE = (
    "<b>Compare on my data.</b> Each chosen model gets a new head for your classes and trains "
    "briefly with its backbone frozen; then its validation accuracy and prediction time are "
    "measured. Your current model stays loaded (tick \"Keep the best\" to switch to the winner). "
    "Every run also lands in the runs table (6. Compare &amp; runs)."
)

_EMPTY_TITLE = "On your data: press \"Compare on my data\""


def size_px(size_mb: Any, lo_px: float = 8.0, hi_px: float = 36.0) -> np.ndarray:
    """Marker diameters proportional to the square root of the file size, within [lo_px, hi_px]."""
    s = np.sqrt(np.clip(np.asarray(size_mb, dtype=float), 0.01, None))
    finite = s[np.isfinite(s)]
    if finite.size == 0 or finite.max() <= finite.min():
        return np.full(s.shape, (lo_px + hi_px) / 2)
    return np.nan_to_num(lo_px + (s - finite.min()) / (finite.max() - finite.min()) * (hi_px - lo_px), nan=lo_px)


class CompareView(Panel):
    """Choose models, compare them on the session's data, see accuracy vs speed.

    Args:
        session: the shared session (its data is used; its model is kept).
        on_select: called with a model name when a point of the scatter is clicked
            (the ModelPicker passes its ``select``, which loads that model).
        show_figure: place the scatter in this panel; False when a host places ``fig`` itself.

    Attributes:
        models: SelectMultiple of catalog names (``tlw-compare-models``), default the
            five classic small models; epochs, pretrained, keep_best: options.
        compare_button: "Compare on my data" (``tlw-compare``); stop_button (``tlw-compare-stop``).
        progress: IntProgress, one step per model; progress_label: what runs now (``tlw-compare-progress``).
        fig: FigureWidget scatter, one point per measured model (``tlw-compare-fig``).
        table: HTML table of the results (``tlw-compare-table``). results: their DataFrame.
        thread: the thread of the current or last comparison.
    """

    css_class = "tlw-compare"

    def __init__(self, session: Session | None = None, on_select: Callable[[str], Any] | None = None,
                 show_figure: bool = True, title: str | None = None, **kwargs: Any) -> None:
        super().__init__(session, title, **kwargs)
        self.on_select = on_select
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.results = pd.DataFrame(columns=list(COMPARE_COLUMNS))
        self.fit_options: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._running = False

        names = list(catalog.list_models()["name"])
        self.note = widgets.HTML(f"<div style='font-size:90%;line-height:1.35'>{_NOTE}</div>")
        self.models = widgets.SelectMultiple(options=names, value=tuple(classic_small_models()), rows=7,
                                             description="Models", layout=widgets.Layout(width="320px"))
        self.epochs = widgets.BoundedIntText(value=2, min=1, max=100, description="Epochs",
                                             layout=widgets.Layout(width="160px"))
        self.pretrained = widgets.Checkbox(value=True, description="Pretrained weights", indent=False)
        self.keep_best = widgets.Checkbox(value=False, description="Keep the best", indent=False,
                                          tooltip="Afterwards, make the most accurate model (trained) the session's")
        self.compare_button = widgets.Button(description="Compare on my data", icon="balance-scale",
                                             button_style="info", layout=widgets.Layout(width="auto"))
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True,
                                          tooltip="Stop within one batch; models not started are skipped")
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout=widgets.Layout(width="200px"))
        self.progress_label = widgets.HTML("")
        self.table = widgets.HTML("")
        self.fig = self._make_figure()
        for w, cls in ((self.models, "tlw-compare-models"), (self.compare_button, "tlw-compare"),
                       (self.stop_button, "tlw-compare-stop"), (self.progress_label, "tlw-compare-progress"),
                       (self.fig, "tlw-compare-fig"), (self.table, "tlw-compare-table")):
            w.add_class(cls)
        controls = widgets.VBox([self.epochs, self.pretrained, self.keep_best,
                                 widgets.HBox([self.compare_button, self.stop_button])])
        body = [self.note, widgets.HBox([self.models, controls]),
                widgets.HBox([self.progress, self.progress_label]), self.table]
        if show_figure:
            body.insert(3, self.fig)
        self.set_body(*body)
        self.compare_button.on_click(self._on_compare_click)
        self.stop_button.on_click(self._on_stop_click)
        self.fig.data[0].on_click(self._on_point_click)
        self.observe_session(lambda change: self._sync_buttons(), ["data", "data_version"])
        self._sync_buttons()

    # ------------------------------------------------------------------ figure
    def _make_figure(self) -> go.FigureWidget:
        points = go.Scatter(mode="markers+text", textposition="top center", hoverinfo="text",
                            marker={"color": "#e45756", "opacity": 0.8, "line": {"width": 1, "color": "white"}})
        layout = go.Layout(
            height=440, width=440, margin={"l": 60, "r": 20, "t": 40, "b": 50}, showlegend=False,
            title={"text": _EMPTY_TITLE, "font": {"size": 14}}, hovermode="closest", template="plotly_white",
            # Before any result: 0.1-1000 ms and 0-100 %, not Plotly's empty-axes default.
            xaxis={"type": "log", "range": [-1, 3], "title": {"text": "Prediction time (ms/image, log)"}},
            yaxis={"range": [0, 100], "title": {"text": "Validation accuracy on your data (%)"}},
        )
        return go.FigureWidget(data=[points], layout=layout)

    @property
    def points_trace(self) -> Any:
        """The scatter trace: one point per measured model, names in ``customdata``."""
        return self.fig.data[0]

    def show_results(self, frame: pd.DataFrame) -> None:
        """Draw a comparison (rows of :func:`compare_models`) in the scatter and the table."""
        with self._lock:
            self.results = frame
            done = frame[frame["val_acc"].notna() & frame["ms_per_image"].notna()] if len(frame) else frame
            hover = [
                f"<b>{html.escape(str(r.name))}</b><br>accuracy here: {r.val_acc:.1%}<br>"
                f"{r.ms_per_image:.2f} ms/image · {r.size_mb:.1f} MB · {r.params_m:.1f} M params<br>"
                f"trained {r.train_time_s:.1f} s, {'pretrained' if r.pretrained else 'random'} weights"
                for r in done.itertuples()
            ]
            with self.fig.batch_update():
                t = self.points_trace
                t.x = done["ms_per_image"].to_numpy(float)
                t.y = done["val_acc"].to_numpy(float) * 100
                t.text = done["name"].astype(str).tolist()
                t.customdata = done["name"].to_numpy(object)
                t.hovertext = hover
                t.marker.size = size_px(done["size_mb"].to_numpy(float)) if len(done) else []
                self.fig.layout.title.text = "Accuracy on your data" if len(done) else _EMPTY_TITLE
                self.fig.layout.xaxis.autorange = True if len(done) else None
                if not len(done):
                    self.fig.layout.xaxis.range = [-1, 3]
                self.fig.layout.xaxis.title.text = f"Prediction time on {describe(self.session.device)} (ms/image, log)"
            self.table.value = self._table_html(frame)

    @staticmethod
    def _table_html(frame: pd.DataFrame) -> str:
        if len(frame) == 0:
            return ""
        heads = ("Model", "Val acc", "ms/image", "Size MB", "Params M", "Train s", "Weights", "Note")
        rows = []
        for r in frame.sort_values("val_acc", ascending=False, na_position="last").itertuples():
            def num(v: Any, spec: str) -> str:
                return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

            weights = {True: "pretrained", False: "random"}.get(r.pretrained, "")
            cells = (r.name, num(r.val_acc, ".1%"), num(r.ms_per_image, ".2f"), num(r.size_mb, ".1f"),
                     num(r.params_m, ".1f"), num(r.train_time_s, ".1f"), weights, r.note)
            rows.append("<tr>" + "".join(f"<td style='padding:1px 8px'>{html.escape(str(c))}</td>" for c in cells)
                        + "</tr>")
        head = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>" for h in heads)
        return f"<table style='border-collapse:collapse;font-size:90%'><tr>{head}</tr>{''.join(rows)}</table>"

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """True while a comparison runs."""
        return self._running

    def _sync_buttons(self) -> None:
        no_data = self.session.data is None
        self.compare_button.disabled = self._running or no_data
        self.compare_button.tooltip = ("Load images first (2. Data)" if no_data and not self._running
                                       else "Train each chosen model briefly on your images and time it")
        self.stop_button.disabled = not self._running
        for w in (self.models, self.epochs, self.pretrained, self.keep_best):
            w.disabled = self._running

    def run(self, names: Iterable[str] | None = None, **fit_options: Any) -> pd.DataFrame:
        """Compare ``names`` (default: the chosen models) now, blocking; returns the results."""
        if self.session.data is None:
            raise DataError("Load images first: the models are compared on your data.")
        names = list(self.models.value if names is None else names)
        if not names:
            raise DataError("Choose at least one model to compare.")
        rows: list[dict] = []

        def on_result(row: dict) -> None:
            rows.append(row)
            self.show_results(pd.DataFrame.from_records(rows, columns=list(COMPARE_COLUMNS)))

        def progress(done: int, total: int, text: str) -> None:
            self.progress.max, self.progress.value = max(total, 1), done
            self.progress_label.value = html.escape(text)

        self._running = True
        self._sync_buttons()
        try:
            frame = compare_models(
                self.session, names, epochs=int(self.epochs.value), stop_event=self.stop_event, progress=progress,
                pretrained=bool(self.pretrained.value), keep="best" if self.keep_best.value else "original",
                on_result=on_result, **{**self.fit_options, **fit_options},
            )
        finally:
            self._running = False
            self.stop_event.clear()
            self._sync_buttons()
        self.show_results(frame)
        failed = frame[frame["note"].str.contains("failed:", regex=False)]
        if len(failed):
            self.show_error("Could not compare: " + "; ".join(f"{r.name} ({r.note})" for r in failed.itertuples()))
        return frame

    def start(self, names: Iterable[str] | None = None, **fit_options: Any) -> threading.Thread:
        """Run :meth:`run` in a background thread and return the thread at once."""
        if self.thread is not None and self.thread.is_alive():
            return self.thread
        if self.keep_best.value and self.session.status != Status.IDLE:
            raise BusyError("Keep the best replaces the session's model, which is training now: stop it first.")
        todo = list(self.models.value if names is None else names)
        self.clear_error()
        self.stop_event.clear()

        def work() -> None:
            try:
                self.run(todo, **fit_options)
            except Exception as exc:  # noqa: BLE001 - errors of the thread reach the panel
                self.show_error(exc)

        self.thread = threading.Thread(target=work, name="tlwidgets-compare", daemon=True)
        self._running = True  # the button greys out before the thread is scheduled
        self._sync_buttons()
        self.thread.start()
        return self.thread

    def stop(self) -> None:
        """Stop the comparison within one batch."""
        self.stop_event.set()
        self.progress_label.value = "Stopping…"

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running comparison; True when it has finished."""
        thread = self.thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    # ------------------------------------------------------------------ handlers
    @guarded
    def _on_compare_click(self, _: Any) -> None:
        self.start()

    @guarded
    def _on_stop_click(self, _: Any) -> None:
        self.stop()

    @guarded
    def _on_point_click(self, trace: Any, points: Any, state: Any) -> None:
        if points is None or not points.point_inds or self.on_select is None:
            return
        self.on_select(str(trace.customdata[points.point_inds[0]]))

    def close(self) -> None:
        """Stop a comparison, detach from the session, close the widgets (the scatter too)."""
        if self.comm is None:
            return
        self.stop_event.set()
        fig = self.fig
        super().close()
        fig.close()
