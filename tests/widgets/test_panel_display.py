"""Plotly figures in panels: their current data reaches views made later (Voila), and updates
from the training thread are not lost while the kernel handles a message from the browser."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from tlwidgets import App, ModelPicker, Session, TrainingPanel


def test_displaying_a_panel_stores_its_figures_current_data_as_widget_state() -> None:
    picker = ModelPicker(Session(device="cpu", image_size=64))
    shown = len(picker.points_trace.x)
    assert shown > 50
    # drawn after the figure was built: so far only sent as messages to existing views
    assert len(picker.fig._widget_data[0].get("x", [])) == 0
    bundle = picker._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert len(picker.fig._widget_data[0]["x"]) == shown
    assert picker.fig._widget_layout["xaxis"]["title"]["text"] == picker.fig.layout.xaxis.title.text
    picker.close()


def test_the_app_stores_the_figures_of_every_tab() -> None:
    app = App(Session(device="cpu", image_size=64))
    app._repr_mimebundle_()
    assert len(app.model_picker.fig._widget_data[0]["x"]) == len(app.model_picker.points_trace.x) > 50
    app.close()


def test_a_figure_update_from_a_thread_is_not_lost_while_a_browser_message_is_handled() -> None:
    # While the kernel applies a message from the browser to a widget, traitlets holds that
    # widget's change notifications and merges them: a FigureWidget's "send the update, then
    # reset the message to None" from the training thread would reach the browser as None.
    panel = TrainingPanel(Session(device="cpu", image_size=64))
    fig = panel.curves_fig
    sent: list[dict] = []
    original_send = fig._send
    fig._send = lambda msg, buffers=None: sent.append(msg) or original_send(msg, buffers)
    inside, release = threading.Event(), threading.Event()
    trait_metadata = fig.trait_metadata

    def slow_metadata(name: str, key: str, default: Any = None) -> Any:
        value = trait_metadata(name, key, default)
        if name == "_js2py_relayout" and key == "from_json":
            def slow_from_json(data: Any, obj: Any) -> Any:  # runs inside the held notifications
                inside.set()
                release.wait(5)
                return value(data, obj)

            return slow_from_json
        return value

    fig.trait_metadata = slow_metadata
    message = {"content": {"data": {"method": "update", "state": {
        "_js2py_relayout": {"relayout_data": {}, "source_view_id": "view"}}}}, "buffers": []}
    browser = threading.Thread(target=fig.comm.handle_msg, args=(message,))  # the kernel's main thread
    browser.start()
    assert inside.wait(5)

    def draw() -> None:  # the training thread redraws the curve meanwhile
        with fig.batch_update():
            fig.data[0].x = np.arange(3.0)
            fig.data[0].y = np.arange(3.0)

    trainer = threading.Thread(target=draw)
    trainer.start()
    time.sleep(0.3)
    release.set()
    browser.join(5)
    trainer.join(5)
    updates = [m["state"]["_py2js_update"] for m in sent if "_py2js_update" in m.get("state", {})]
    assert any(u is not None and "x" in u["style_data"] for u in updates), updates
    panel.close()
