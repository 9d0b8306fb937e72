"""The whole workflow in one widget: the panels in order, with a status line."""

from __future__ import annotations

import html
import os
from typing import Any

import ipywidgets as widgets

from ..core.session import Session
from ..core.status import Status
from ._panel import Panel
from .data_collector import DataCollector
from .dataset_browser import DatasetBrowser
from .head_editor import HeadEditor
from .layer_table import LayerTable
from .model_picker import ModelPicker
from .runs_view import RunsView
from .training_panel import TrainingPanel

_STEPS = (
    ("1. Model", "model_picker"),
    ("2. Data", "dataset_browser"),
    ("3. Head", "head_editor"),
    ("4. Layers", "layer_table"),
    ("5. Train & assess", "training_panel"),
    ("6. Compare & runs", "runs_view"),
)


class App(Panel):
    """Pick a model, load data, replace the head, choose what to freeze, train and assess.

    Every panel shares ``session``; a change made in one of them, or in code, shows
    in all of them. The panels are also available one by one as attributes
    (``app.model_picker``, ``app.dataset_browser``, ``app.head_editor``,
    ``app.layer_table``, ``app.training_panel``, ``app.runs_view``).

    Args:
        session: the shared session (a new one on the best device when omitted).
        load_defaults: load the offline default model and the built-in demo data
            when the session has none, so the App works with no network.
        collect: add a first tab, "0. Collect", with a :class:`DataCollector` for making
            your own classes from uploads and webcam pictures: a folder (opened at once)
            or ``True`` (the user opens one). Off by default.
    """

    css_class = "tlw-app"

    def __init__(
        self,
        session: Session | None = None,
        load_defaults: bool = False,
        collect: bool | str | os.PathLike[str] = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, title=None, **kwargs)
        s = self.session
        self._steps = _STEPS
        if collect is not False and collect is not None:
            folder = None if collect is True else collect
            self.data_collector = DataCollector(s, folder=folder)
            self._steps = (("0. Collect", "data_collector"), *_STEPS)
        self.model_picker = ModelPicker(s)
        self.dataset_browser = DatasetBrowser(s)
        self.head_editor = HeadEditor(s)
        self.layer_table = LayerTable(s)
        self.training_panel = TrainingPanel(s)
        self.runs_view = RunsView(s)
        self.status_line = widgets.HTML()
        self.status_line.add_class("tlw-status")
        self.tabs = widgets.Tab(children=[getattr(self, attr) for _, attr in self._steps])
        for i, (label, _) in enumerate(self._steps):
            self.tabs.set_title(i, label)
        self.set_body(self.status_line, self.tabs)
        self.observe_session(
            self._on_session_change,
            ["spec", "model_version", "data_version", "head", "classes", "frozen", "status", "message"],
        )
        if load_defaults:
            self._load_defaults()
        self._on_session_change({})

    @property
    def panels(self) -> tuple[Panel, ...]:
        """The panels in workflow order."""
        return tuple(getattr(self, attr) for _, attr in self._steps)

    def _load_defaults(self) -> None:
        from ..core.catalog import default_model

        try:
            if self.session.model is None:
                self.session.load_model(default_model())
            if self.session.data is None:
                self.session.load_data("demo")
            if self.session.readiness(require_trainable=False) is not None:  # the head does not fit the data
                self.session.replace_head()
                self.session.freeze_backbone()
        except Exception as exc:  # noqa: BLE001 - the App must still open; the reason shows
            self.show_error(exc)

    def _on_session_change(self, change: dict) -> None:
        facts = self.session.summary()
        parts = [f"<b>{html.escape(k)}</b>: {html.escape(str(v))}" for k, v in facts.items() if v is not None]
        message = self.session.message
        line = " &nbsp;·&nbsp; ".join(parts)
        missing = self.session.readiness(require_trainable=False) if self.session.status == Status.IDLE else None
        if missing:
            line += f" &nbsp;·&nbsp; <b>before training</b>: {html.escape(missing)}"
        if message:
            line += f"<br><span style='color:#555'>{html.escape(message)}</span>"
        self.status_line.value = f"<div style='font-size:90%'>{line}</div>"

    def close(self) -> None:
        """Close every panel and detach from the session."""
        for panel in self.panels:
            panel.close()
        super().close()
