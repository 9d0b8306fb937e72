"""A displayed panel hands its Plotly figures' current data to views made later (Voila, a reloaded page)."""

from __future__ import annotations

from tlwidgets import App, ModelPicker, Session


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
