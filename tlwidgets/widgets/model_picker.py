"""Choose a pretrained model on a speed/accuracy map, by click or by keyboard."""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Iterable
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.graph_objs import (
    FigureWidget,  # imported with the panel, not at its first figure
)

from ..core import catalog, speed, timm_accuracy
from ..core.device import best_device, describe
from ..core.session import Session
from ..core.status import Status
from ._model_text import hover_text, marker_size, sort_rows, table_html
from ._panel import Panel, guarded
from ._picker_controls import PickerControls
from ._speed_meter import SpeedMeter
from .compare_view import CompareView

_ALL = "All"
_OFFLINE = ("cached", "packaged", "checkpoint")
_SORTS = (
    ("Accuracy (top-1, best first)", "top1"),
    ("Speed (fastest first)", "speed"),
    ("Download size (smallest first)", "size_mb"),
    ("Parameters (fewest first)", "params_m"),
    ("Name", "name"),
)
_NOTE = (
    "<b>How to choose.</b> Each point is a model: up = more accurate on ImageNet (top-1 %), "
    "left = faster (prediction time measured here, or GFLOPs until every shown model is measured). "
    "Start small and fast (top-left: quick to train and predict), then try a more accurate model "
    "(higher up) if accuracy matters more than speed. Marker size = download size; colour = family; "
    "&#9670; = weights available offline, &#9679; = needs a download. Click a point to load it."
)


class ModelPicker(Panel):
    """A speed/accuracy map of the catalog; click a point (or use the list) to load that model.

    The x axis shows prediction time in ms/image on the session's device when *every* shown
    model has been measured there (this session's measurements or the speed cache), and
    GFLOPs per image otherwise: one axis never mixes the two units. Measuring the shown
    models (the "Measure speed" button) switches the axis to time once the last one is done;
    before that each point's hover already shows its measured time. Both axes are
    logarithmic in x and linear in y (ImageNet top-1 %).

    Trace 0 (``points_trace``) holds one point per shown model with its name in
    ``customdata``; trace 1 (``highlight_trace``) rings the loaded model.

    Args:
        session: the shared session (a new one when omitted).
        speed_batch_size: batch size used when timing models.
    """

    css_class = "tlw-model-picker"

    def __init__(self, session: Session | None = None, speed_batch_size: int = 8, **kwargs: Any) -> None:
        super().__init__(session, title="Choose a model", **kwargs)
        self._lock = threading.RLock()
        self.x_mode = "gflops"
        self._default = catalog.default_model()
        self.catalog = catalog.list_models()
        self.shown = self.catalog.iloc[:0]
        # search, licence, "show all", table pages, timm accuracies
        self.controls = PickerControls(self.catalog, lambda: self.redraw(), self.fetch_accuracy)

        self.note = widgets.HTML(f"<div style='font-size:90%;line-height:1.35'>{_NOTE}</div>")
        families = sorted(self.catalog["family"].unique())
        self.family = widgets.Dropdown(options=[_ALL, *families], value=_ALL, description="Family")
        sizes = self.catalog["size_mb"]
        self.max_size = widgets.FloatLogSlider(
            value=float(sizes.max()), base=10, min=math.log10(max(float(sizes.min()), 0.1)),
            max=math.log10(float(sizes.max())), step=0.01, description="Max MB", readout_format=".1f",
        )
        top1 = self.catalog["top1"].dropna()
        self.min_top1 = widgets.FloatSlider(
            value=math.floor(top1.min()) if len(top1) else 0.0, min=math.floor(top1.min()) if len(top1) else 0.0,
            max=math.ceil(top1.max()) if len(top1) else 100.0, step=0.5, description="Min top-1 %",
        )
        self.offline_only = widgets.Checkbox(value=False, description="Weights available offline only", indent=False)
        self.pretrained = widgets.Checkbox(value=True, description="Pretrained weights", indent=False)
        self.model_dropdown = widgets.Dropdown(description="Model", layout=widgets.Layout(width="420px"))
        self.load_button = widgets.Button(description="Load", button_style="primary", icon="download")
        self.status_line = widgets.HTML("")
        self.download_progress = widgets.IntProgress(
            min=0, max=100, description="Download", layout=widgets.Layout(display="none")
        )
        # "Measure speed": timed in a background thread, drawn as each model is done
        self.meter = SpeedMeter(lambda: list(self.shown["name"]), lambda: self.session.device,
                                on_result=lambda: self.redraw(dropdown=False), on_error=self.show_error,
                                on_idle=lambda: self._on_status_change({}), batch_size=speed_batch_size)
        self._measured = self.meter.measured
        self.measure_button, self.stop_button = self.meter.button, self.meter.stop_button
        self.batch_size, self.progress, self.progress_label = self.meter.batch_size, self.meter.progress, self.meter.label
        self.stop_event = self.meter.stop_event
        self.sort_by = widgets.Dropdown(options=_SORTS, value="top1", description="Sort by")
        self.table = widgets.HTML("")
        self.fig = self._make_figure()
        # accuracy on the user's own data, drawn next to the ImageNet map; a click loads the model
        self.compare = CompareView(self.session, on_select=self.select, show_figure=False)
        for w, cls in ((self.fig, "tlw-model-plot"), (self.model_dropdown, "tlw-model-dropdown"),
                       (self.load_button, "tlw-load"), (self.table, "tlw-model-table"),
                       (self.pretrained, "tlw-pretrained"), (self.status_line, "tlw-picker-status")):
            w.add_class(cls)

        box = widgets.HBox
        self.set_body(
            self.note,
            box([self.family, self.max_size, self.min_top1, self.offline_only], layout={"flex_flow": "row wrap"}),
            self.controls.filters,
            box([self.fig, self.compare.fig], layout={"flex_flow": "row wrap"}),
            self.controls.note,
            box([self.model_dropdown, self.pretrained, self.load_button]),
            self.status_line,
            self.download_progress,
            self.meter.row,
            self.compare,
            self.sort_by,
            box([self.table], layout={"max_height": "320px", "overflow": "auto"}),
            self.controls.pager,
        )
        for w in (self.family, self.max_size, self.min_top1, self.offline_only):
            w.observe(self._on_filter_change, names="value")
        self.sort_by.observe(self._on_filter_change, names="value")
        self.load_button.on_click(self._on_load_click)
        self.measure_button.on_click(self._on_measure_click)
        self.points_trace.on_click(self._on_point_click)
        self.observe_session(self._on_spec_change, "spec")
        self.observe_session(self._on_status_change, "status")
        self.observe_session(lambda change: self.redraw(), "device")
        self.redraw()
        self._on_status_change({})

    # ------------------------------------------------------------------ figure
    def _make_figure(self) -> FigureWidget:
        # WebGL: a thousand points and more stay fluid
        points = go.Scattergl(name="models", mode="markers", hoverinfo="text",
                            marker={"line": {"width": 0.5, "color": "white"}, "opacity": 0.85})
        ring = go.Scattergl(name="loaded", mode="markers", hoverinfo="skip",
                          marker={"symbol": "circle-open", "color": "black", "line": {"width": 3}})
        layout = go.Layout(
            height=440, margin={"l": 60, "r": 20, "t": 30, "b": 50}, showlegend=False, hovermode="closest",
            xaxis={"type": "log", "title": {"text": ""}}, yaxis={"title": {"text": "ImageNet top-1 accuracy (%)"}},
            template="plotly_white",
        )
        return FigureWidget(data=[points, ring], layout=layout)

    @property
    def points_trace(self) -> Any:
        """The scatter trace with one point per shown model (names in ``customdata``)."""
        return self.fig.data[0]

    @property
    def highlight_trace(self) -> Any:
        """The ring around the loaded model (empty when it is filtered out)."""
        return self.fig.data[1]

    # ------------------------------------------------------------------ data
    def speed_of(self, name: str) -> float | None:
        """Measured ms/image of ``name`` on the session's device, or ``None`` if not measured."""
        device = self.session.device
        if (device, name) in self._measured:
            return self._measured[(device, name)]
        row = self.catalog[self.catalog["name"] == name]
        same_device = describe(device) == describe(best_device())  # list_models() times best_device()
        if same_device and len(row) and not pd.isna(row["ms_per_image"].iloc[0]):
            return float(row["ms_per_image"].iloc[0])
        if same_device:
            return None
        value = speed.cached_speed(name, device)
        return None if value is None else float(value)

    def _speeds(self, df: pd.DataFrame) -> np.ndarray:
        """:meth:`speed_of` for every row of ``df`` (NaN where not measured), in one pass."""
        device = self.session.device
        if describe(device) != describe(best_device()):
            return np.array([np.nan if (v := self.speed_of(n)) is None else v for n in df["name"]], dtype=float)
        ms = df["ms_per_image"].to_numpy(dtype=float, copy=True)
        for i, name in enumerate(df["name"]):
            if (device, name) in self._measured:
                value = self._measured[(device, name)]
                ms[i] = np.nan if value is None else value
        return ms

    def filtered(self) -> pd.DataFrame:
        """The catalog rows passing the filters, with ``speed_ms`` (measured ms/image or NaN) and ``x``."""
        df = self.catalog.copy()
        if self.family.value != _ALL:
            df = df[df["family"] == self.family.value]
        df = self.controls.apply(df)
        df = df[df["size_mb"] <= self.max_size.value * 1.0001]
        if self.min_top1.value > self.min_top1.min:
            df = df[df["top1"] >= self.min_top1.value]
        if self.offline_only.value:
            df = df[df["weights"].isin(_OFFLINE)]
        df = df.assign(speed_ms=self._speeds(df))
        timed = len(df) > 0 and bool(df["speed_ms"].notna().all())
        self.x_mode = "time" if timed else "gflops"
        return df.assign(x=df["speed_ms"] if timed else df["gflops"]).reset_index(drop=True)

    def refresh(self) -> None:
        """Re-read the catalog (weights now cached, new checkpoints) and redraw."""
        self.catalog = catalog.list_models()
        self.controls.set_catalog(self.catalog)
        families = [_ALL, *sorted(self.catalog["family"].unique())]
        largest = float(self.catalog["size_mb"].max())
        if math.log10(largest) > self.max_size.max:
            at_max = self.max_size.value >= 10**self.max_size.max * 0.9999
            self.max_size.max = math.log10(largest)
            if at_max:
                self.max_size.value = largest
        if list(self.family.options) != families:
            keep = self.family.value if self.family.value in families else _ALL
            self.family.options = families
            self.family.value = keep
        self.redraw()

    def redraw(self, dropdown: bool = True) -> None:
        """Redraw scatter, highlight, table and (optionally) the model list from filters and session."""
        with self._lock:
            self.shown = df = self.filtered()
            cat = self.catalog
            families = sorted(cat["family"].unique())
            palette = plotly.colors.qualitative.Dark24
            colour = {f: palette[i % len(palette)] for i, f in enumerate(families)}
            sizes = marker_size(df["size_mb"], float(cat["size_mb"].min()), float(cat["size_mb"].max()))
            device = describe(self.session.device)
            title = (f"Prediction time on {device} (ms/image, log)" if self.x_mode == "time"
                     else "GFLOPs per image (not yet measured here; log)")
            current = self.session.spec.name if self.session.spec is not None else None
            here = df[df["name"] == current]
            with self.fig.batch_update():
                t = self.points_trace
                t.x = df["x"].to_numpy(float)
                t.y = df["top1"].to_numpy(float)
                t.customdata = df["name"].to_numpy(object)
                t.hovertext = [hover_text(r) for r in df.itertuples()]
                t.marker.size = sizes
                t.marker.color = [colour[f] for f in df["family"]]
                t.marker.symbol = ["diamond" if w in _OFFLINE else "circle" for w in df["weights"]]
                small = self.controls.default_timm  # small fast timm models: a gold outline
                t.marker.line.color = ["gold" if n in small else "white" for n in df["name"]]
                t.marker.line.width = [2 if n in small else 0.5 for n in df["name"]]
                h = self.highlight_trace
                h.x = here["x"].to_numpy(float)
                h.y = here["top1"].to_numpy(float)
                h.customdata = here["name"].to_numpy(object)
                h.marker.size = sizes[here.index.to_numpy()] + 10 if len(here) else []
                self.fig.layout.xaxis.title.text = title
            if self.controls.follow and current in set(df["name"]):  # show the page of the loaded model
                order = sort_rows(df, self.sort_by.value)["name"].tolist()
                self.controls.page, self.controls.follow = order.index(current) // self.controls.PAGE_SIZE, False
            self.table.value = table_html(df, current, self.sort_by.value, self.x_mode,
                                          *self.controls.paging(len(df)))
            self.controls.no_accuracy_note(df)
            if dropdown:
                self._fill_dropdown(df, current)

    def _fill_dropdown(self, df: pd.DataFrame, current: str | None) -> None:
        rows = df.sort_values(["family", "name"])
        options = [(f"{r.family} — {r.name}", r.name) for r in rows.itertuples()]
        keep = self.model_dropdown.value
        self.model_dropdown.options = options
        names = [v for _, v in options]
        for pick in (keep, current, self._default):
            if pick in names:
                self.model_dropdown.value = pick
                break
        self._on_status_change({})

    # ------------------------------------------------------------------ loading
    def select(self, name: str, reload: bool = False) -> bool:
        """Load catalog model ``name`` into the session (weights per the "Pretrained" box).

        Errors (no internet, unknown name, training running) show in the error area and
        the previous model stays. Returns True when ``name`` is the loaded model afterwards.
        ``reload=False`` keeps an already loaded model as it is (a stray click must not
        throw away a trained head).
        """
        spec = self.session.spec
        if spec is not None and spec.name == name and not reload:
            self.status_line.value = f"{html.escape(name)} is already loaded (press Load to load it afresh)."
            return True
        pretrained = bool(self.pretrained.value)
        what = "pretrained weights" if pretrained else "random weights"
        self.status_line.value = f"&#8987; Loading {html.escape(name)} ({what})…"
        self.load_button.disabled = True
        self._last_pct = -1
        try:
            self.session.load_model(name, pretrained=pretrained, progress=self._on_download_progress)
        except Exception as exc:  # noqa: BLE001 - shown in plain words; the session keeps its model
            self.show_error(exc)
            kept = "the previous model stays" if self.session.model is not None else "no model is loaded yet"
            self.status_line.value = f"Could not load {html.escape(name)}; {kept}."
            return False
        finally:
            self.download_progress.layout.display = "none"
            self._on_status_change({})
        self.clear_error()
        self.status_line.value = html.escape(self.session.message)
        return True

    def _on_download_progress(self, done: int, total: int) -> None:
        pct = int(100 * done / total) if total else 0
        if pct != self._last_pct:
            self._last_pct = pct
            self.download_progress.layout.display = None
            self.download_progress.value = pct

    @guarded
    def _on_point_click(self, trace: Any, points: Any, state: Any) -> None:
        # Plotly dispatches every click to every trace; only this trace's points matter.
        if points is None or not points.point_inds:
            return
        name = str(trace.customdata[points.point_inds[0]])
        self.select(name)

    @guarded
    def _on_load_click(self, _button: widgets.Button) -> None:
        if self.model_dropdown.value:
            self.select(self.model_dropdown.value, reload=True)

    def fetch_accuracy(self) -> bool:
        """Download timm's ImageNet results table so the timm models get their top-1 and show on the map."""
        self.controls.fetch_button.disabled = True
        self.status_line.value = "&#8987; Fetching timm's ImageNet results table…"
        try:
            got = timm_accuracy.update_accuracy()
        except Exception as exc:  # noqa: BLE001 - offline or a bad table: said in plain words
            self.show_error(exc)
            self.status_line.value = "timm's accuracies were not updated."
            return False
        finally:
            self.controls.fetch_button.disabled = False
        self.clear_error()
        self.status_line.value = f"ImageNet top-1 of {got['matched']} timm models, as published on {got['fetched']}."
        self.refresh()
        return True

    # ------------------------------------------------------------------ speed
    def measure(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """Time models one by one on the session's device (blocking); default: the shown ones.

        Stops between models once ``stop_event`` is set. Results go to the speed cache
        and onto the plot as each arrives. Returns ``{name: ms_per_image}`` of those timed.
        """
        return self.meter.measure(names)

    def start_measure(self, names: Iterable[str] | None = None) -> threading.Thread:
        """Run :meth:`measure` in a background thread so Stop stays clickable; returns the thread."""
        return self.meter.start(names)

    @property
    def measure_thread(self) -> threading.Thread | None:
        """The thread of the latest :meth:`start_measure` (None before the first)."""
        return self.meter.thread

    def stop_measure(self) -> None:
        """Ask a running measurement to stop after the current model."""
        self.meter.stop()

    @guarded
    def _on_measure_click(self, _button: widgets.Button) -> None:
        self.clear_error()
        self.start_measure()

    # ------------------------------------------------------------------ session
    @guarded
    def _on_filter_change(self, _change: dict) -> None:
        self.redraw()

    def _on_spec_change(self, change: dict) -> None:
        spec = self.session.spec
        self.controls.follow = True
        if spec is not None and spec.name not in set(self.catalog["name"]):
            self.refresh()  # a newly registered checkpoint
        else:
            self.catalog = catalog.list_models()  # weights may have just been downloaded
            self.redraw()
        if spec is not None and spec.name in [v for _, v in self.model_dropdown.options]:
            self.model_dropdown.value = spec.name

    def _on_status_change(self, _change: dict) -> None:
        busy = self.session.status != Status.IDLE
        hint = "Training is running: stop it to change the model." if busy else ""
        self.load_button.disabled = busy or not self.model_dropdown.value
        self.load_button.tooltip = hint or "Load the chosen model into the session"
        self.measure_button.disabled = busy or self.meter.running
        self.measure_button.tooltip = hint or "Time the shown models on this machine"
