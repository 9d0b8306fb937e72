"""A student works through quickstart.ipynb in JupyterLab, in a real Chromium.

The tests run in file order on one page and one kernel, as a person would: run all
cells, pick a model on the scatter, load the demo data, freeze the backbone, replace
the head, train, stop a longer run, then upload an image to classify. Each step
asserts on what the page shows (text, and the data of the Plotly graphs), and saves
a screenshot of the panel it used.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import (
    TIMINGS,
    click_point,
    new_page,
    open_and_run_notebook,
    plot_traces,
    point_count,
    screenshot,
    select_tab,
    set_number,
    text,
    visible_errors,
    wait_for_points,
    wait_for_text,
    wait_until,
)

pytestmark = [pytest.mark.ui, pytest.mark.slow]

APP = ".tlw-app"
STATUS = ".tlw-app .tlw-status"
PICKER = ".tlw-model-picker"
DATA = ".tlw-dataset-browser"
LAYERS = ".tlw-layer-table"
HEAD = ".tlw-head-editor"
TRAIN = ".tlw-training-panel"
PROGRESS = f"{TRAIN} .tlw-progress"
CURVES = ".tlw-curves"
BATCHES_PER_EPOCH = 15  # 480 demo training images in batches of 32
LONG_RUN_EPOCHS = 5000


@pytest.fixture(scope="module")
def page(browser: Any, lab_server: Any) -> Iterator[Any]:
    """quickstart.ipynb open in JupyterLab with all its cells run."""
    with new_page(browser) as pg:
        console_errors: list[str] = []
        pg.on("pageerror", lambda exc: console_errors.append(str(exc)))
        try:
            TIMINGS["open_and_run_all_s"] = open_and_run_notebook(pg, lab_server.url, "quickstart.ipynb")
            pg.keyboard.press("Control+b")  # hide the file browser: more room for the App
            yield pg
        finally:
            if console_errors:
                print("page errors:", *console_errors, sep="\n  ")


def _status(page: Any) -> str:
    return text(page, STATUS)


def test_running_all_cells_shows_the_app_on_the_offline_defaults(page: Any, screenshot_dir: Path) -> None:
    status = wait_for_text(page, STATUS, r"efficientnet_lite0[\s\S]*10 classes")
    assert "status: idle" in status
    tabs = page.locator(f"{APP} .lm-TabBar-tab").all_inner_texts()
    steps = ["1. Model", "2. Data", "3. Head", "4. Layers", "5. Train & assess"]
    assert [t.strip() for t in tabs][: len(steps)] == steps, tabs
    wait_for_points(page, ".tlw-model-plot", 50)
    models = plot_traces(page, ".tlw-model-plot")
    assert len(models[0]["customdata"]) > 50 and "efficientnet_lite0" in models[0]["customdata"]
    assert models[1]["customdata"] == ["efficientnet_lite0"], "the loaded model is ringed"
    assert visible_errors(page) == []
    screenshot(page, APP, "model_picker.png", screenshot_dir)


def test_clicking_a_point_on_the_scatter_loads_that_model(page: Any) -> None:
    # Random weights first (no download needed offline) ...
    page.locator(f"{PICKER} .tlw-pretrained input").uncheck()
    start = time.perf_counter()
    click_point(page, ".tlw-model-plot", "mobilenet_v3_small")
    wait_for_text(page, f"{PICKER} .tlw-picker-status", r"Loaded mobilenet_v3_small \(random weights\)")
    TIMINGS["click_point_to_model_loaded_s"] = time.perf_counter() - start
    assert "mobilenet_v3_small" in _status(page)
    wait_until(lambda: plot_traces(page, ".tlw-model-plot")[1]["customdata"] == ["mobilenet_v3_small"], 10)
    # ... then back to the pretrained offline model, by clicking its diamond.
    page.locator(f"{PICKER} .tlw-pretrained input").check()
    click_point(page, ".tlw-model-plot", "efficientnet_lite0")
    loaded = wait_for_text(page, f"{PICKER} .tlw-picker-status", r"Loaded efficientnet_lite0")
    assert "random" not in loaded
    wait_for_text(page, STATUS, r"model: efficientnet_lite0")
    wait_until(lambda: plot_traces(page, ".tlw-model-plot")[1]["customdata"] == ["efficientnet_lite0"], 10)
    assert visible_errors(page) == []


def test_the_demo_data_loads_from_the_data_tab(page: Any, screenshot_dir: Path) -> None:
    select_tab(page, "2. Data")
    page.locator(f"{DATA} .tlw-source button", has_text="Demo").click()
    page.locator(f"{DATA} .tlw-demo").click()
    summary = wait_for_text(page, f"{DATA} .tlw-data-summary", r"600 images in 10 classes")
    assert "480 for training, 120 for validation" in summary
    bars = plot_traces(page, f"{DATA} .js-plotly-plot")
    assert [b["name"] for b in bars] == ["train", "val"]
    assert sum(bars[0]["y"]) == 480 and sum(bars[1]["y"]) == 120
    assert bars[0]["x"] == [str(d) for d in range(10)]
    assert page.locator(f"{DATA} .tlw-samples img").count() >= 10, "sample thumbnails of every class"
    screenshot(page, APP, "dataset_browser.png", screenshot_dir)


def test_freezing_the_backbone_in_the_layer_table(page: Any, screenshot_dir: Path) -> None:
    select_tab(page, "4. Layers")
    summary = f"{LAYERS} .tlw-summary"
    assert "(100%)" in text(page, summary), "a freshly loaded model trains every layer"
    page.locator(f"{LAYERS} .tlw-freeze-backbone").click()
    wait_for_text(page, summary, r"trainable parameters: 1,281,000 of")  # the ImageNet head only
    checks = page.locator(f"{LAYERS} .tlw-group-check input")
    states = [checks.nth(i).is_checked() for i in range(checks.count())]
    assert states[-1] and not any(states[:-1]), states
    # open the first stage: its rows show as frozen (unchecked)
    first = page.locator(f"{LAYERS} .tlw-layer-group").first
    first.locator("button").first.click()
    rows = first.locator(".tlw-layer-row input")
    rows.first.wait_for()
    assert rows.count() >= 1 and not rows.first.is_checked()
    screenshot(page, APP, "layer_table.png", screenshot_dir)


def test_replacing_the_head_for_the_data_classes(page: Any, screenshot_dir: Path) -> None:
    select_tab(page, "3. Head")
    current = f"{HEAD} .tlw-head-current"
    # The tab's content is drawn after the click: wait for it rather than read it at once.
    wait_for_text(page, current, r"Linear\(1280 → 1000\)", timeout=30)
    classes = page.locator(f"{HEAD} .tlw-num-classes input")
    wait_until(lambda: classes.input_value() == "10", timeout=30)
    page.locator(f"{HEAD} .tlw-replace-head").click()
    shown = wait_for_text(page, current, r"Linear\(1280 → 10\)")
    assert "predicts: 0, 1, 2" in shown
    wait_for_text(page, STATUS, r"trainable: 12,810 of")
    screenshot(page, APP, "head_editor.png", screenshot_dir)


def test_train_with_no_option_touched_reaches_the_accuracy_the_features_allow(page: Any) -> None:
    select_tab(page, "5. Train")
    train = page.locator(f"{TRAIN} .tlw-train")
    assert train.is_enabled()
    assert page.locator(f"{TRAIN} .tlw-opt-auto-epochs input").is_checked(), "Auto is the default"
    start = time.perf_counter()
    train.click()
    done = wait_for_text(page, PROGRESS, r"Done: \d+ epochs", timeout=300)
    accuracy = wait_for_text(page, f"{TRAIN} .tlw-accuracy", r"Accuracy \d+\.\d%", timeout=60)
    TIMINGS["train_default_s"] = time.perf_counter() - start
    value = float(re.search(r"Accuracy (\d+\.\d)%", accuracy).group(1))
    assert value >= 90.0, (accuracy, done)
    assert "Restored epoch" in done or "Stopped at epoch" in done, done  # the decisions, in words
    assert visible_errors(page) == []


def test_training_two_epochs_draws_curves_and_the_assessment(page: Any, screenshot_dir: Path) -> None:
    select_tab(page, "3. Head")
    page.locator(f"{HEAD} .tlw-replace-head").click()  # a new head starts a new history
    select_tab(page, "5. Train")
    train = page.locator(f"{TRAIN} .tlw-train")
    wait_for_text(page, STATUS, r"status: idle")
    page.locator(f"{TRAIN} .tlw-opt-auto-epochs input").uncheck()
    set_number(page, f"{TRAIN} .tlw-opt-epochs", 2)
    start = time.perf_counter()
    train.click()
    wait_for_text(page, PROGRESS, r"^Done: 2 epochs", timeout=180)
    accuracy = wait_for_text(page, f"{TRAIN} .tlw-accuracy", r"Accuracy \d+\.\d%", timeout=60)
    TIMINGS["train_2_epochs_s"] = time.perf_counter() - start

    wait_for_points(page, CURVES, 2 * BATCHES_PER_EPOCH, timeout=10)
    curves = plot_traces(page, CURVES)
    assert [c["name"] for c in curves][:2] == ["train", "validation"]
    assert len(curves[0]["x"]) == 2 * BATCHES_PER_EPOCH, "one training point per batch"
    assert len(curves[1]["x"]) == 2, "one validation point per epoch"
    assert all(isinstance(v, (int, float)) for v in curves[0]["y"])
    value = float(re.search(r"Accuracy (\d+\.\d)%", accuracy).group(1))
    assert value >= 50.0, accuracy  # pretrained features separate the digits well
    assert "120 images" in accuracy

    wait_for_points(page, ".tlw-confusion", 10, timeout=10)
    confusion = plot_traces(page, ".tlw-confusion")[0]
    assert len(confusion["z"]) == 10 and all(len(row) == 10 for row in confusion["z"])
    assert sum(map(sum, confusion["z"])) == 120
    correct = sum(confusion["z"][i][i] for i in range(10))
    assert abs(100.0 * correct / 120 - value) < 0.1, "the matrix agrees with the accuracy shown"
    assert page.locator(f"{TRAIN} .tlw-per-class tbody tr").count() == 10
    assert train.is_enabled() and page.locator(f"{TRAIN} .tlw-stop").is_disabled()
    assert visible_errors(page) == []
    screenshot(page, APP, "training_panel.png", screenshot_dir)


def test_stop_responds_at_once_while_the_page_stays_live(page: Any) -> None:
    # Long enough to still run when Stop is pressed (features of a frozen backbone are computed
    # once, so an epoch of the head alone takes a fraction of a second).
    set_number(page, f"{TRAIN} .tlw-opt-epochs", LONG_RUN_EPOCHS)
    time.sleep(0.5)
    before = point_count(page, CURVES)
    page.locator(f"{TRAIN} .tlw-train").click()
    wait_for_text(page, STATUS, r"status: training", timeout=30)
    wait_until(lambda: point_count(page, CURVES) >= before + 5, 60)

    # the curve keeps growing while training runs
    first = point_count(page, CURVES)
    wait_until(lambda: point_count(page, CURVES) > first, 5)
    grown = point_count(page, CURVES)
    TIMINGS["curve_points_growth"] = grown - first

    assert "status: training" in _status(page)
    # the page answers: another tab opens at once, and the kernel redraws that panel
    start = time.perf_counter()
    select_tab(page, "4. Layers")
    TIMINGS["tab_switch_mid_training_s"] = time.perf_counter() - start
    assert TIMINGS["tab_switch_mid_training_s"] < 2.0
    assert page.locator(LAYERS).is_visible() and not page.locator(TRAIN).is_visible()
    wait_for_text(page, f"{LAYERS} .tlw-summary", r"trainable parameters")
    assert page.locator(f"{LAYERS} .tlw-freeze-backbone").is_disabled(), "freezing is locked while training"
    select_tab(page, "5. Train")
    assert point_count(page, CURVES) >= grown
    assert "status: training" in _status(page), "the run is still going"

    start = time.perf_counter()
    page.locator(f"{TRAIN} .tlw-stop").click()
    wait_for_text(page, PROGRESS, r"^Stopped after", timeout=30)
    TIMINGS["stop_click_to_stopped_text_s"] = time.perf_counter() - start
    wait_for_text(page, STATUS, r"status: idle", timeout=30)
    TIMINGS["stop_click_to_idle_s"] = time.perf_counter() - start
    assert TIMINGS["stop_click_to_idle_s"] < 2.0, TIMINGS
    # the stopped run still ends with an assessment, and can be started again
    wait_for_text(page, f"{TRAIN} .tlw-accuracy", r"Accuracy \d+\.\d%", timeout=60)
    wait_until(lambda: page.locator(f"{TRAIN} .tlw-train").is_enabled(), 30)
    assert page.locator(f"{TRAIN} .tlw-stop").is_disabled()
    assert visible_errors(page) == []


def test_an_uploaded_image_gets_a_prediction(page: Any, lab_server: Any, screenshot_dir: Path) -> None:
    images = sorted((lab_server.cache_dir / "demo").rglob("*.png"))
    assert images, f"the demo data was written under {lab_server.cache_dir}"
    photo = next(p for p in images if p.parent.name == "3")
    # ipywidgets' FileUpload keeps its <input type=file> out of the page and clicks it from
    # the button, so choose the file in the chooser that the click opens.
    with page.expect_file_chooser() as chooser:
        page.locator(f"{TRAIN} .tlw-upload").click()
    chooser.value.set_files(str(photo))
    shown = wait_for_text(page, f"{TRAIN} .tlw-predictions", re.escape(photo.name), timeout=30)
    probabilities = [float(p) for p in re.findall(r"(\d+\.\d)%", shown)]
    assert len(probabilities) == 3, shown
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 100.05
    screenshot(page, f"{TRAIN} .tlw-assessment", "assessment.png", screenshot_dir)


def test_no_error_appeared_anywhere(page: Any) -> None:
    assert visible_errors(page) == []
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    assert not [o for o in outputs if "Traceback" in o], outputs
