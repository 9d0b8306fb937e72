"""ModelPicker with the timm catalog: default view, show all, search, licence, paging, WebGL, accuracies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from plotly.callbacks import InputDeviceState, Points

from tests.hub_server import hub_server
from tlwidgets.core.catalog import list_models
from tlwidgets.core.session import Session
from tlwidgets.widgets._picker_controls import PAGE_SIZE
from tlwidgets.widgets.model_picker import ModelPicker


@pytest.fixture
def picker() -> ModelPicker:
    panel = ModelPicker(Session(device="cpu", image_size=64))
    panel.pretrained.value = False
    yield panel
    panel.close()


def _names(panel: ModelPicker) -> set[str]:
    return {str(n) for n in panel.points_trace.customdata}


def test_default_view_is_the_classic_models_and_a_few_small_fast_timm_ones(picker: ModelPicker) -> None:
    cat = list_models()
    assert picker.points_trace.type == "scattergl"
    shown = _names(picker)
    classic = set(cat.loc[cat["source"] != "timm", "name"])
    assert classic <= shown
    small = shown - classic
    assert 0 < len(small) <= 24 and all(n.startswith("timm:") for n in small)
    rows = cat.set_index("name").loc[sorted(small)]
    assert (rows["params_m"] <= 6).all() and (rows["gflops"] <= 0.6).all()
    colours = dict(zip(picker.points_trace.customdata, picker.points_trace.marker.line.color))
    assert {colours[n] for n in small} == {"gold"} and colours["resnet18"] == "white"

    picker.controls.show_all.value = True
    assert _names(picker) == set(cat["name"]) and len(cat) > 1000
    assert "of the shown models have no ImageNet accuracy yet" in picker.controls.note.value


def test_search_and_licence_filter_the_map_and_the_table(picker: ModelPicker) -> None:
    picker.controls.show_all.value = True
    picker.controls.search.value = "convnext"
    shown = _names(picker)
    assert shown and all("convnext" in n.lower() or "convnext" in f.lower()
                         for n, f in zip(picker.shown["name"], picker.shown["family"]))
    assert "timm:convnext_tiny.fb_in1k" in shown and "convnext_tiny" in shown
    assert "timm:convnext_tiny.fb_in1k" in picker.table.value or "page 1 of" in picker.controls.page_label.value
    picker.controls.search.value = "convnext tiny"
    assert all("tiny" in n for n in _names(picker))
    picker.controls.search.value = ""
    picker.controls.license.value = "cc-by-nc-4.0"
    assert set(picker.shown["license"]) == {"cc-by-nc-4.0"}
    picker.controls.license.value = "bsd-3-clause"
    assert "resnet18" in _names(picker)


def test_table_pages_through_the_sorted_models(picker: ModelPicker) -> None:
    picker.controls.show_all.value = True
    total = len(picker.shown)
    pages = -(-total // PAGE_SIZE)
    assert picker.controls.page_label.value == f"page 1 of {pages} ({total} models)"
    assert picker.controls.prev_button.disabled and not picker.controls.next_button.disabled
    picker.sort_by.value = "name"
    first = re.findall(r"<tr><td[^>]*>([^<]+)</td>", picker.table.value)
    assert len(first) == PAGE_SIZE and first == sorted(first)
    picker.controls.next_button.click()
    second = re.findall(r"<tr><td[^>]*>([^<]+)</td>", picker.table.value)
    assert len(second) == PAGE_SIZE and second[0] > first[-1]
    assert picker.controls.page_label.value.startswith("page 2 of")
    picker.controls.search.value = "resnet"  # a new filter starts again at the first page
    assert picker.controls.page_label.value.startswith("page 1 of")


def test_clicking_a_timm_point_loads_it(picker: ModelPicker) -> None:
    name = sorted(_names(picker) - set(list_models().query("source != 'timm'")["name"]))[0]
    trace = picker.points_trace
    k = list(trace.customdata).index(name)
    points = Points(point_inds=[k], xs=[trace.x[k]], ys=[trace.y[k]], trace_name=trace.name, trace_index=0)
    trace._dispatch_on_click(points, InputDeviceState(button=0, buttons=1))
    assert picker.session.spec.name == name and picker.last_error == ""


def test_fetch_accuracies_places_timm_models_on_the_map(
    picker: ModelPicker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tlwidgets.core import timm_accuracy

    monkeypatch.setenv("TLWIDGETS_CACHE_DIR", str(tmp_path / "cache"))  # the table stays in this test
    size = picker.catalog.set_index("name").loc["timm:resnet10t.c3_in1k", "input_size"]
    csv = f"model,img_size,top1,top5,param_count\nresnet10t.c3_in1k,{size},66.5,87.0,5.4\n"
    with hub_server() as server:
        server.raw["/results/results-imagenet.csv"] = csv.encode()
        url = f"{server.url}/results/results-imagenet.csv"
        monkeypatch.setattr(timm_accuracy, "DEFAULT_URL", url)
        monkeypatch.setattr(timm_accuracy.update_accuracy, "__defaults__", (url,))
        picker.controls.fetch_button.click()
    assert picker.last_error == "", picker.last_error
    row = picker.catalog.set_index("name").loc["timm:resnet10t.c3_in1k"]
    assert row["top1"] == pytest.approx(66.5)
    assert "ImageNet top-1 of" in picker.status_line.value
    monkeypatch.setattr(timm_accuracy.update_accuracy, "__defaults__", ("http://127.0.0.1:9/results-imagenet.csv",))
    picker.controls.fetch_button.click()
    assert "127.0.0.1:9/results-imagenet.csv" in picker.last_error and "update_accuracy(path=" in picker.last_error
