"""Every training run in a table, and the curves of chosen runs overlaid in one figure.

"Transfer learning vs training from scratch" is two runs: train once from pretrained
weights, once from random ones, and both curves show here side by side (new runs are
chosen automatically; runs of a model comparison are listed but not drawn unless chosen).
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.session import Session
from ._panel import Panel, guarded

_NOTE = (
    "Every training run is recorded here. Choose runs (Ctrl/Shift-click) to overlay their curves: "
    "train once from <b>pretrained</b> weights and once from <b>random</b> weights (untick "
    "\"Pretrained weights\" in 1. Model) to see what transfer learning buys."
)
_PALETTE = plotly.colors.qualitative.Plotly


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, spec)


def runs_table_html(frame: pd.DataFrame) -> str:
    """The runs as a compact HTML table, newest first."""
    if len(frame) == 0:
        return "<i>No runs yet: train a model (5. Train &amp; assess) or compare models (1. Model).</i>"
    heads = ("Run", "Model", "Weights", "Trained", "Epochs", "Val acc", "Best val acc", "Train loss", "Time",
             "Optimizer · LR · batch", "ms/image", "Size MB", "Note")
    rows = []
    for r in frame.iloc[::-1].to_dict("records"):
        weights = {True: "pretrained", False: "random"}.get(r["pretrained"], "?")
        note = "failed" if r["failed"] else ("stopped" if r["stopped"] else "")
        note = ", ".join(x for x in (note, r["tag"]) if x)
        cells = (
            f"#{r['run']}", r["model"], weights, r["trained"], str(r["epochs"]), _fmt(r["val_acc"], ".1%"),
            _fmt(r["best_val_acc"], ".1%"), _fmt(r["train_loss"], ".3f"), _fmt(r["wall_time_s"], ".1f") + " s",
            f"{r['optimizer']} · {_fmt(r['lr'], '.1e')} · {r['batch_size']}", _fmt(r.get("ms_per_image"), ".2f"),
            _fmt(r.get("size_mb"), ".1f"), note,
        )
        rows.append("<tr>" + "".join(f"<td style='padding:1px 8px'>{html.escape(str(c))}</td>" for c in cells)
                    + "</tr>")
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{h}</th>" for h in heads)
    return f"<table style='border-collapse:collapse;font-size:90%'><tr>{head}</tr>{''.join(rows)}</table>"


class RunsView(Panel):
    """A table of ``session.runs`` and an overlay of the chosen runs' curves.

    Attributes:
        table: HTML table of every run, newest first (``tlw-runs-table``).
        choice: SelectMultiple of runs whose curves are drawn (``tlw-runs-select``); values are run ids.
        last_two_button: choose the two newest runs (``tlw-runs-last-two``).
        forget_button: remove the chosen runs from the record (``tlw-runs-forget``).
        fig: FigureWidget, validation accuracy (left) and training loss (right) per epoch,
            one curve per chosen run in each (``tlw-runs-fig``).
    """

    css_class = "tlw-runs-view"

    def __init__(self, session: Session | None = None, title: str | None = "Compare runs", **kwargs: Any) -> None:
        super().__init__(session, title, **kwargs)
        self._lock = threading.RLock()
        self._known: set[int] = {r.id for r in self.session.runs}
        self.note = widgets.HTML(f"<div style='font-size:90%'>{_NOTE}</div>")
        self.table = widgets.HTML("")
        self.choice = widgets.SelectMultiple(options=[], rows=6, description="Overlay",
                                             layout=widgets.Layout(width="520px"))
        self.last_two_button = widgets.Button(description="Last two", icon="clone",
                                              tooltip="Overlay the two newest runs")
        self.forget_button = widgets.Button(description="Forget chosen", icon="trash",
                                            tooltip="Remove the chosen runs from the record")
        self.fig = self._make_figure()
        for w, cls in ((self.table, "tlw-runs-table"), (self.choice, "tlw-runs-select"), (self.fig, "tlw-runs-fig"),
                       (self.last_two_button, "tlw-runs-last-two"), (self.forget_button, "tlw-runs-forget")):
            w.add_class(cls)
        self.set_body(
            self.note,
            widgets.HBox([self.choice, widgets.VBox([self.last_two_button, self.forget_button])]),
            self.fig,
            widgets.Box([self.table], layout=widgets.Layout(max_height="320px", overflow="auto")),
        )
        self.choice.observe(self._on_choice_value, names="value")
        self.last_two_button.on_click(self._on_last_two_click)
        self.forget_button.on_click(self._on_forget_click)
        self.observe_session(self._on_session_runs, "runs")
        self.refresh()

    # ------------------------------------------------------------------ figure
    @staticmethod
    def _make_figure() -> go.FigureWidget:
        base = make_subplots(rows=1, cols=2, subplot_titles=("Validation accuracy", "Training loss"),
                             horizontal_spacing=0.1)
        fig = go.FigureWidget(base)
        fig.update_layout(height=340, margin={"l": 50, "r": 10, "t": 40, "b": 40}, template="plotly_white",
                          legend={"orientation": "h", "y": -0.2}, hovermode="closest")
        fig.update_xaxes(title_text="epoch")
        fig.update_yaxes(tickformat=".0%", row=1, col=1)
        return fig

    @property
    def acc_traces(self) -> tuple[Any, ...]:
        """The validation-accuracy curves, one per chosen run (left plot)."""
        return tuple(t for t in self.fig.data if t.xaxis in (None, "x"))

    @property
    def loss_traces(self) -> tuple[Any, ...]:
        """The training-loss curves, one per chosen run (right plot)."""
        return tuple(t for t in self.fig.data if t.xaxis == "x2")

    def draw(self) -> None:
        """Redraw the overlay from the chosen runs."""
        with self._lock:
            runs = {r.id: r for r in self.session.runs}
            chosen = [runs[i] for i in self.choice.value if i in runs]
            traces = []
            for run in chosen:
                colour = _PALETTE[(run.id - 1) % len(_PALETTE)]
                frame = run.history.epoch_frame() if run.history is not None else pd.DataFrame()
                x = (frame["epoch"].to_numpy(float) + run.first_epoch) if len(frame) else np.zeros(0)
                dash = "solid" if run.pretrained is not False else "dash"
                common = {"mode": "lines+markers", "name": run.label, "legendgroup": str(run.id),
                          "line": {"color": colour, "dash": dash}, "customdata": np.full(len(x), run.id)}
                acc = frame["val_acc"].to_numpy(float) if len(frame) else np.zeros(0)
                loss = frame["loss"].to_numpy(float) if len(frame) else np.zeros(0)
                traces.append(go.Scatter(x=x, y=acc, xaxis="x", yaxis="y", showlegend=True, **common))
                traces.append(go.Scatter(x=x, y=loss, xaxis="x2", yaxis="y2", showlegend=False, **common))
            self.fig.data = ()
            if traces:
                self.fig.add_traces(traces)

    # ------------------------------------------------------------------ state
    def refresh(self) -> None:
        """Redraw table, menu and overlay from ``session.runs``."""
        with self._lock:
            runs = self.session.runs
            self.table.value = runs_table_html(self.session.runs_frame())
            new = [r for r in runs if r.id not in self._known]
            self._known = {r.id for r in runs}
            keep = [i for i in self.choice.value if i in self._known]
            keep += [r.id for r in new if r.tag != "compare"]  # a comparison would crowd the overlay
            options = [(r.label, r.id) for r in reversed(runs)]
            if list(self.choice.options) != options:
                self.choice.unobserve(self._on_choice_value, names="value")
                try:
                    self.choice.options = options
                    self.choice.value = tuple(keep)
                finally:
                    self.choice.observe(self._on_choice_value, names="value")
            elif tuple(self.choice.value) != tuple(keep):
                self.choice.value = tuple(keep)
                return  # the value observer draws
            self.draw()

    def choose(self, run_ids: Iterable[int]) -> None:
        """Overlay exactly these runs (unknown ids are ignored)."""
        ids = {r.id for r in self.session.runs}
        self.choice.value = tuple(i for i in run_ids if i in ids)

    def choose_last(self, n: int = 2) -> None:
        """Overlay the ``n`` newest runs."""
        self.choose(r.id for r in self.session.runs[-n:])

    def forget(self, run_ids: Sequence[int] | None = None) -> None:
        """Remove runs (default: the chosen ones) from the session's record."""
        ids = list(self.choice.value if run_ids is None else run_ids)
        self.session.recorder.remove(ids)

    # ------------------------------------------------------------------ handlers
    def _on_session_runs(self, change: dict) -> None:
        # From the training thread after a fit: only values of existing widgets change.
        self.refresh()

    @guarded
    def _on_choice_value(self, change: dict) -> None:
        self.draw()

    @guarded
    def _on_last_two_click(self, _: Any) -> None:
        self.choose_last(2)

    @guarded
    def _on_forget_click(self, _: Any) -> None:
        self.forget()
