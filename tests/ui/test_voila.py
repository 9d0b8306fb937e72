"""examples/app.ipynb served by Voila: the App alone, no code, and it trains from a click."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _browser import (
    TIMINGS,
    new_page,
    plot_traces,
    screenshot,
    select_tab,
    set_number,
    text,
    visible_errors,
    wait_for_points,
    wait_for_text,
)

pytestmark = [pytest.mark.ui, pytest.mark.slow]

TRAIN = ".tlw-training-panel"


@pytest.fixture(scope="module")
def page(browser: Any, voila_server: Any) -> Iterator[Any]:
    with new_page(browser) as pg:
        start = time.perf_counter()
        pg.goto(voila_server.url + "/", timeout=240_000)  # Voila runs the notebook before it answers
        pg.wait_for_selector(".tlw-app", timeout=240_000)
        TIMINGS["voila_app_shown_s"] = time.perf_counter() - start
        yield pg


def test_voila_shows_only_the_app(page: Any, screenshot_dir: Path) -> None:
    status = wait_for_text(page, ".tlw-app .tlw-status", r"efficientnet_lite0[\s\S]*10 classes")
    assert "status: idle" in status
    assert page.locator(".tlw-app").count() == 1
    body = page.locator("body").inner_text()
    assert "import tlwidgets" not in body and "load_defaults" not in body, "no code on the page"
    assert wait_for_points(page, ".tlw-model-plot", 50) > 50
    assert visible_errors(page) == []
    screenshot(page, ".tlw-app", "voila_app.png", screenshot_dir)


def test_the_app_trains_in_voila(page: Any) -> None:
    select_tab(page, "5. Train")
    page.locator(f"{TRAIN} .tlw-opt-auto-epochs input").uncheck()
    set_number(page, f"{TRAIN} .tlw-opt-epochs", 1)
    start = time.perf_counter()
    page.locator(f"{TRAIN} .tlw-train").click()
    wait_for_text(page, f"{TRAIN} .tlw-progress", r"^Done: 1 epoch", timeout=180)
    accuracy = wait_for_text(page, f"{TRAIN} .tlw-accuracy", r"Accuracy \d+\.\d%", timeout=60)
    TIMINGS["voila_train_1_epoch_s"] = time.perf_counter() - start
    assert "120 images" in accuracy
    assert float(re.search(r"Accuracy (\d+\.\d)%", accuracy).group(1)) > 10.0  # better than chance
    assert visible_errors(page) == []
    assert "status: idle" in text(page, ".tlw-app .tlw-status")


@pytest.mark.xfail(
    strict=False,
    reason="in Voila some Plotly updates sent while the model trains reach the page but are not "
    "drawn (intermittent; the same App in JupyterLab draws every one)",
)
def test_the_plots_follow_the_training_in_voila(page: Any) -> None:
    assert wait_for_points(page, ".tlw-curves", 15, timeout=10) == 15, "one training point per batch"
    assert wait_for_points(page, ".tlw-curves", 1, trace=1, timeout=10) == 1, "one validation point"
    wait_for_points(page, ".tlw-confusion", 10, timeout=10)
    confusion = plot_traces(page, ".tlw-confusion")[0]
    assert sum(map(sum, confusion["z"])) == 120


def test_the_trained_bundle_downloads_from_voila(page: Any, tmp_path: Path) -> None:
    """Voila has no file route: the Download button still hands the bundle to the browser."""
    from tlwidgets import Session

    with page.expect_download(timeout=120_000) as info:
        page.locator(f"{TRAIN} .tlw-download-bundle").click()
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    assert saved.name == "my_model.zip"
    loaded = Session.load(saved, device="cpu", data=False)
    assert list(loaded.classes) == [str(d) for d in range(10)]
    assert len(loaded.history.epochs) == 1, "the session trained in the page"
    assert visible_errors(page) == []
