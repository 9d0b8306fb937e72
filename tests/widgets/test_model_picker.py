"""ModelPicker: the speed/accuracy scatter, its filters, loading by click or list, speed timing."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from plotly.callbacks import InputDeviceState, Points

from tlwidgets.core import speed
from tlwidgets.core.catalog import list_models
from tlwidgets.core.session import Session
from tlwidgets.widgets.model_picker import ModelPicker, marker_size

SMALL = "mobilenet_v3_small"


@pytest.fixture
def session() -> Session:
    return Session(device="cpu", image_size=64)


@pytest.fixture
def picker(session: Session) -> ModelPicker:
    panel = ModelPicker(session)
    panel.pretrained.value = False
    yield panel
    panel.close()


def _points(panel: ModelPicker) -> dict[str, tuple[float, float, float]]:
    t = panel.points_trace
    return {str(n): (x, y, s) for n, x, y, s in zip(t.customdata, t.x, t.y, t.marker.size)}


def _click(panel: ModelPicker, name: str, state: InputDeviceState | None = None) -> None:
    trace = panel.fig.data[0]
    k = list(trace.customdata).index(name)
    points = Points(point_inds=[k], xs=[trace.x[k]], ys=[trace.y[k]], trace_name=trace.name, trace_index=0)
    trace._dispatch_on_click(points, state)


def test_one_point_per_catalog_model_with_catalog_values(picker: ModelPicker) -> None:
    picker.controls.show_all.value = True
    cat = list_models()
    points = _points(picker)
    assert sorted(points) == sorted(cat["name"])
    assert len(picker.points_trace.x) == len(cat)
    sizes = marker_size(cat["size_mb"], cat["size_mb"].min(), cat["size_mb"].max())
    for row, size in zip(cat.itertuples(), sizes):
        x, y, s = points[row.name]
        assert x == pytest.approx(row.gflops)
        assert y == pytest.approx(row.top1) if not np.isnan(row.top1) else np.isnan(y)
        assert s == pytest.approx(size)
    assert 6 <= min(picker.points_trace.marker.size) and max(picker.points_trace.marker.size) <= 40
    assert picker.x_mode == "gflops"
    assert picker.fig.layout.xaxis.type == "log"
    assert picker.fig.layout.xaxis.title.text.startswith("GFLOPs per image")


def test_hover_names_weights_status(picker: ModelPicker) -> None:
    hover = dict(zip(picker.points_trace.customdata, picker.points_trace.hovertext))
    cat = list_models().set_index("name")
    assert "packaged (offline)" in hover["efficientnet_lite0"]
    if cat.loc["resnet18", "weights"] == "download":
        assert f"download {cat.loc['resnet18', 'size_mb']:.1f} MB" in hover["resnet18"]
    assert "top-1: 69.8%" in hover["resnet18"]


def test_click_on_point_loads_model_and_highlights_it(picker: ModelPicker, session: Session) -> None:
    _click(picker, SMALL, InputDeviceState(button=0, buttons=1))
    assert session.spec.name == SMALL
    assert session.model is not None
    assert picker.last_error == ""
    assert list(picker.highlight_trace.customdata) == [SMALL]
    x, y, _ = _points(picker)[SMALL]
    assert (picker.highlight_trace.x[0], picker.highlight_trace.y[0]) == (x, y)
    # A click with no points of this trace (plotly sends one to every trace) changes nothing.
    model = session.model
    empty = Points(point_inds=[], xs=[], ys=[], trace_name="models", trace_index=0)
    picker.fig.data[0]._dispatch_on_click(empty, None)
    assert session.model is model


def test_click_message_from_the_front_end_loads_model(picker: ModelPicker, session: Session) -> None:
    """The path a browser click takes: one message, dispatched to every trace of the figure."""
    trace = picker.points_trace
    k = list(trace.customdata).index("squeezenet1_1")
    message = {
        "event_type": "plotly_click",
        "points": {"xs": [trace.x[k]], "ys": [trace.y[k]], "point_indexes": [k], "trace_indexes": [0]},
        "device_state": {"button": 0, "buttons": 1, "ctrl": False, "alt": False, "shift": False, "meta": False},
        "selector": None,
    }
    picker.fig._handler_js2py_pointsCallback({"new": message})
    assert session.spec.name == "squeezenet1_1"
    assert picker.last_error == ""


def test_packaged_model_loads_pretrained_offline(picker: ModelPicker, session: Session) -> None:
    picker.pretrained.value = True
    assert picker.select("efficientnet_lite0")
    assert session.spec.name == "efficientnet_lite0"
    assert session.model is not None
    assert picker.last_error == ""


def test_dropdown_and_load_button(picker: ModelPicker, session: Session) -> None:
    names = [v for _, v in picker.model_dropdown.options]
    assert sorted(names) == sorted(picker.shown["name"])
    picker.controls.show_all.value = True
    assert sorted(v for _, v in picker.model_dropdown.options) == sorted(list_models()["name"])
    picker.model_dropdown.value = "squeezenet1_1"
    picker.load_button.click()
    assert session.spec.name == "squeezenet1_1"
    assert session.model is not None
    assert "squeezenet1_1" in picker.status_line.value


def test_min_accuracy_filter(picker: ModelPicker) -> None:
    total = len(picker.points_trace.x)
    picker.min_top1.value = 80
    ys = np.asarray(picker.points_trace.y)
    assert 0 < len(ys) < total
    assert (ys >= 80).all()
    assert set(picker.model_dropdown.options) == {(f"{f} — {n}", n) for n, f in zip(picker.shown["name"], picker.shown["family"])}
    assert "mobilenet_v3_small" not in picker.table.value
    assert "vit_h_14" in picker.table.value


def test_family_size_and_offline_filters(picker: ModelPicker) -> None:
    picker.family.value = "ResNet"
    assert set(picker.points_trace.customdata) == {n for n in list_models()["name"] if n.startswith("resnet")}
    picker.family.value = "All"
    picker.max_size.value = 50
    cat = list_models().set_index("name")
    assert all(cat.loc[n, "size_mb"] <= 50 for n in picker.points_trace.customdata)
    picker.max_size.value = 10**picker.max_size.max
    picker.offline_only.value = True
    shown = set(picker.points_trace.customdata)
    assert "efficientnet_lite0" in shown
    assert shown == {n for n in cat.index if cat.loc[n, "weights"] in ("cached", "packaged", "checkpoint")}


def test_table_sorting(picker: ModelPicker) -> None:
    picker.family.value = "ResNet"
    picker.sort_by.value = "size_mb"
    table = picker.table.value
    assert table.index(">resnet18<") < table.index(">resnet152<")
    picker.sort_by.value = "top1"
    table = picker.table.value
    assert table.index(">resnet152<") < table.index(">resnet18<")


def test_no_internet_keeps_previous_model(
    picker: ModelPicker, session: Session, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TLWIDGETS_WEIGHTS_BASE_URL", f"http://127.0.0.1:{port}/weights")
    assert picker.select(SMALL)
    model = session.model
    picker.pretrained.value = True
    assert picker.select("resnet18") is False
    assert f"http://127.0.0.1:{port}/weights/resnet18-" in picker.last_error
    assert str(tmp_path / "torch") in picker.last_error
    assert picker.error_area.layout.display != "none"
    assert session.model is model
    assert session.spec.name == SMALL
    assert list(picker.highlight_trace.customdata) == [SMALL]


def test_load_in_code_moves_highlight(picker: ModelPicker, session: Session) -> None:
    session.load_model(SMALL, pretrained=False)
    assert list(picker.highlight_trace.customdata) == [SMALL]
    session.load_model("squeezenet1_1", pretrained=False)
    assert list(picker.highlight_trace.customdata) == ["squeezenet1_1"]
    assert picker.model_dropdown.value == "squeezenet1_1"
    assert "font-weight:bold" in picker.table.value.split(">squeezenet1_1<")[0].rsplit("<tr", 1)[1]


def test_loading_disabled_while_training(picker: ModelPicker, session: Session) -> None:
    session.status = "training"
    assert picker.load_button.disabled and picker.measure_button.disabled
    assert "Training is running" in picker.load_button.tooltip
    session.status = "idle"
    assert not picker.load_button.disabled and not picker.measure_button.disabled


def test_measure_switches_axis_to_time(picker: ModelPicker, session: Session) -> None:
    picker.family.value = "SqueezeNet"
    picker.batch_size.value = 1  # keep the timing short on a busy machine
    names = sorted(picker.shown["name"])
    results = picker.measure()
    assert sorted(results) == names
    assert picker.x_mode == "time"
    assert picker.fig.layout.xaxis.title.text.startswith("Prediction time on cpu")
    xs = dict(zip(picker.points_trace.customdata, picker.points_trace.x))
    for name in names:
        assert xs[name] == pytest.approx(results[name])
        assert speed.cached_speed(name, "cpu") == pytest.approx(results[name])
    assert picker.progress.value == len(names)
    # Partly measured -> GFLOPs again; the measured time still shows in the hover.
    picker.family.value = "All"
    assert picker.x_mode == "gflops"
    hover = dict(zip(picker.points_trace.customdata, picker.points_trace.hovertext))
    assert f"{results[names[0]]:.2f} ms/image" in hover[names[0]]


def test_measure_in_background_stops_between_models(
    picker: ModelPicker, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed: list[str] = []

    def fake(name: str, device: object = None, batch_size: int = 8, **_: object) -> dict:
        timed.append(name)
        picker.stop_button.click()  # the user presses Stop while the first model is timed
        return {"name": name, "ms_per_image": 1.5, "device": str(device), "batch_size": batch_size}

    monkeypatch.setattr(speed, "measure_speed", fake)
    picker.family.value = "ResNet"
    assert picker.stop_button.disabled
    picker.measure_button.click()
    thread = picker.measure_thread
    assert thread is not None
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(timed) == 1
    assert picker.progress_label.value.startswith("Stopped after 1 of")
    assert picker.stop_button.disabled and not picker.measure_button.disabled
    assert picker.speed_of(timed[0]) == 1.5
