"""Runs overlay, compare on my data, confusion drill-down and Grad-CAM in the panels."""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path

import numpy as np
import plotly.callbacks
import pytest
from PIL import Image

from tlwidgets.core import compare as compare_mod
from tlwidgets.core.session import Session
from tlwidgets.widgets.app import App
from tlwidgets.widgets.assessment import Assessment
from tlwidgets.widgets.model_picker import ModelPicker
from tlwidgets.widgets.runs_view import RunsView

SMALL = ("squeezenet1_1", "shufflenet_v2_x0_5", "mobilenet_v3_small")
FAST = {"max_batches_per_epoch": 2, "batch_size": 8}
has_gradcam = importlib.util.find_spec("pytorch_grad_cam") is not None


@pytest.fixture(autouse=True)
def _quick_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = compare_mod.speed.measure_speed
    monkeypatch.setattr(compare_mod.speed, "measure_speed",
                        lambda name, device=None, batch_size=8, **kw: real(name, device, batch_size=2, repeats=1))


def _session(image_folder: Path, name: str = "mobilenet_v3_small", pretrained: bool = False) -> Session:
    s = Session(device="cpu", image_size=64)
    s.load_model(name, pretrained=pretrained)
    s.load_data(image_folder, val_fraction=0.25)
    return s


def _click(trace, index, x, y) -> None:
    points = plotly.callbacks.Points(point_inds=[index], xs=[x], ys=[y], trace_name=trace.name or "", trace_index=0)
    trace._dispatch_on_click(points, plotly.callbacks.InputDeviceState())


# ---------------------------------------------------------------------------- compare on my data
def test_compare_three_models_fills_the_scatter_and_the_runs(image_folder: Path) -> None:
    s = _session(image_folder)
    picker = ModelPicker(s)
    view = picker.compare
    assert any(picker.fig in box.children and view.fig in box.children  # next to the ImageNet map
               for box in picker.children if hasattr(box, "children"))
    assert set(view.models.value) == {"squeezenet1_1", "shufflenet_v2_x1_0", "mobilenet_v2", "resnet18",
                                      "googlenet"}
    view.models.value = SMALL
    view.pretrained.value = False
    view.epochs.value = 1
    view.fit_options = dict(FAST)
    # Before any result the axes show 0.1-1000 ms and 0-100 %, not Plotly's empty default.
    assert tuple(view.fig.layout.xaxis.range) == (-1, 3) and tuple(view.fig.layout.yaxis.range) == (0, 100)
    view.compare_button.click()
    assert view.compare_button.disabled  # running
    assert view.wait(120) and view.last_error == ""
    frame = view.results
    assert list(frame["name"]) == list(SMALL) and frame["val_acc"].between(0, 1).all()
    assert (frame["ms_per_image"] > 0).all()
    trace = view.points_trace
    assert len(trace.x) == len(trace.y) == 3 and sorted(trace.customdata) == sorted(SMALL)
    assert np.allclose(np.sort(trace.y), np.sort(frame["val_acc"].to_numpy() * 100))
    assert len(trace.marker.size) == 3 and "squeezenet1_1" in view.table.value
    assert view.fig.layout.xaxis.autorange is True  # the x axis now fits the measured times
    assert not view.compare_button.disabled and view.stop_button.disabled
    assert [r.tag for r in s.runs] == ["compare"] * 3
    assert s.spec.name == "mobilenet_v3_small" and s.head.num_classes == 1000  # the user's model stays
    # a click on a point of the comparison loads that model (weights as the picker's box says)
    picker.pretrained.value = False
    i = list(trace.customdata).index("shufflenet_v2_x0_5")
    _click(trace, i, trace.x[i], trace.y[i])
    assert s.spec.name == "shufflenet_v2_x0_5"
    picker.close()


def test_compare_stop_and_disabled_without_data(image_folder: Path) -> None:
    empty = Session(device="cpu")
    picker = ModelPicker(empty)
    assert picker.compare.compare_button.disabled and "Load images" in picker.compare.compare_button.tooltip
    picker.close()
    s = _session(image_folder)
    picker = ModelPicker(s)
    view = picker.compare
    view.models.value = SMALL
    view.pretrained.value = False
    view.epochs.value = 50
    view.fit_options = {"batch_size": 4}
    view.start()
    view.stop_button.click()
    assert view.wait(60)
    assert len(view.results) <= 1 and len(s.runs) <= 1
    assert not view.compare_button.disabled and not view.models.disabled
    picker.close()


# ---------------------------------------------------------------------------- runs overlay
def test_runs_overlay_holds_one_curve_per_chosen_run(image_folder: Path) -> None:
    s = _session(image_folder, "efficientnet_lite0", pretrained=True)
    view = RunsView(s)
    assert "No runs yet" in view.table.value and view.fig.data == ()
    s.replace_head()
    s.freeze_backbone()
    s.fit(epochs=2, **FAST)
    s.load_model("efficientnet_lite0", pretrained=False)  # the same network from scratch
    s.replace_head()
    s.fit(epochs=2, **FAST)
    first, second = s.runs
    assert (first.pretrained, first.trained, second.pretrained, second.trained) == (
        True, "head only", False, "all layers")
    # new runs are chosen as they arrive: both curves overlaid, one per run in each plot
    assert set(view.choice.value) == {1, 2}
    assert [t.name for t in view.acc_traces] == [first.label, second.label]
    assert len(view.loss_traces) == 2
    for trace, run in zip(view.acc_traces, (first, second), strict=True):
        assert list(trace.x) == [1.0, 2.0]
        assert np.allclose(trace.y, [e["val_acc"] for e in run.epochs])
    view.choose([2])
    assert [t.name for t in view.acc_traces] == [second.label] and len(view.loss_traces) == 1
    view.last_two_button.click()
    assert len(view.acc_traces) == 2
    assert view.table.value.index("#2") < view.table.value.index("#1")  # newest first
    view.choose([1])
    view.forget_button.click()
    assert [r.id for r in s.runs] == [2] and view.choice.value == () and view.fig.data == ()
    view.close()


def test_app_has_the_runs_tab(image_folder: Path) -> None:
    app = App(Session(device="cpu", image_size=64))
    assert isinstance(app.runs_view, RunsView) and app.panels[-1] is app.runs_view
    assert app.tabs.get_title(5) == "6. Compare & runs"
    app.close()


@pytest.mark.slow
def test_transfer_vs_scratch_on_flowers(flowers_dir: Path) -> None:
    """Pretrained Lite0 with a frozen backbone beats the same network trained from scratch."""
    s = Session(device="cpu", image_size=160)
    view = RunsView(s)
    s.load_data(flowers_dir, val_fraction=0.2, seed=0)
    for pretrained in (True, False):
        s.load_model("efficientnet_lite0", pretrained=pretrained)
        s.replace_head()
        if pretrained:
            s.freeze_backbone()  # transfer: train the head only; scratch: train everything
        s.fit(epochs=3, batch_size=32, lr=3e-3 if pretrained else 1e-3, seed=0)
    transfer, scratch = s.runs
    assert view.choice.value == (1, 2) and len(view.acc_traces) == 2 and len(view.loss_traces) == 2
    assert [len(t.x) for t in view.acc_traces] == [3, 3]
    assert transfer.final("val_acc") > scratch.final("val_acc") + 0.2, s.runs_frame()
    view.close()


# ---------------------------------------------------------------------------- confusion drill-down
def _paths_in(html_text: str) -> list[str]:
    return re.findall(r"data-path='([^']*)'", html_text)


def test_clicking_a_confusion_cell_lists_exactly_its_images(image_folder: Path) -> None:
    s = _session(image_folder)
    s.replace_head()
    s.fit(epochs=1, **FAST)
    view = Assessment(s)
    result = s.evaluate()
    preds = result.predictions
    fig = view.confusion_fig
    assert "Click a cell" in view.drilldown.value
    classes = list(result.confusion.columns)
    for i, true in enumerate(classes):
        for j, pred in enumerate(classes):
            _click(fig.data[0], [i, j], pred, true)
            expected = preds[(preds["true"] == true) & (preds["pred"] == pred)].sort_values("loss", ascending=False)
            assert _paths_in(view.drilldown.value) == list(expected["path"]), (true, pred)
            if len(expected) == 0:
                assert "No images in this cell" in view.drilldown.value
    # the public method, by index, returns the rows it shows
    rows = view.drill_down(0, 0)
    assert list(rows["path"]) == _paths_in(view.drilldown.value)
    assert list(rows["loss"]) == sorted(rows["loss"], reverse=True)
    view.close()


def test_drill_down_errors_reach_the_error_callback(image_folder: Path) -> None:
    s = _session(image_folder)
    errors = []
    view = Assessment(s, on_error=errors.append)
    _click(view.confusion_fig.data[0], [0, 0], "class_0", "class_0")
    assert errors and "Nothing evaluated yet" in str(errors[-1])
    view.close()


# ---------------------------------------------------------------------------- Grad-CAM in Predict
def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 80), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.skipif(not has_gradcam, reason="grad-cam (extra 'insight') is not installed")
def test_predict_shows_a_gradcam_overlay_per_image(image_folder: Path) -> None:
    s = _session(image_folder, "resnet18")
    s.replace_head()
    view = Assessment(s)
    frame = view.predict_files([("red.png", _png((220, 40, 40))), ("green.png", _png((40, 200, 40)))])
    assert set(frame["image"]) == {"red.png", "green.png"}
    cam = view.gradcam_view.value
    assert cam.count("tlw-gradcam-item") == 2 and cam.count("data:image/png;base64,") == 2
    top = frame[frame["rank"] == 1].set_index("image")["class"]
    assert f"red.png: {top['red.png']}" in cam and "layer4" in cam
    view.close()


def test_predict_still_works_when_gradcam_cannot_explain(image_folder: Path) -> None:
    s = Session(device="cpu")
    s.load_model("vit_b_16", pretrained=False)
    view = Assessment(s)
    frame = view.predict_files([("red.png", _png((220, 40, 40)))])
    assert len(frame) == 3 and "red.png" in view.predictions.value
    assert "Grad-CAM" in view.gradcam_view.value
    assert ("transformer" in view.gradcam_view.value) or ("tlwidgets[insight]" in view.gradcam_view.value)
    view.close()
