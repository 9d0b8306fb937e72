"""examples/quickstart.ipynb in Notebook 7 (``jupyter notebook``): the App shows and trains from a click."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from _browser import (
    TIMINGS,
    new_page,
    open_and_run_notebook,
    plot_traces,
    select_tab,
    set_number,
    visible_errors,
    wait_for_points,
    wait_for_text,
)

pytestmark = [pytest.mark.ui, pytest.mark.slow]

TRAIN = ".tlw-training-panel"
BATCHES_PER_EPOCH = 15  # 480 demo training images in batches of 32


def test_the_quickstart_app_trains_in_notebook_7(browser: Any, notebook_server: Any) -> None:
    with new_page(browser) as page:
        TIMINGS["notebook7_open_and_run_all_s"] = open_and_run_notebook(
            page, notebook_server.url, "quickstart.ipynb", front_end="notebook"
        )
        assert page.locator("#main-panel .jp-NotebookPanel").count() == 1, "Notebook 7's page, not JupyterLab's"
        status = wait_for_text(page, ".tlw-app .tlw-status", r"efficientnet_lite0[\s\S]*10 classes")
        assert "status: idle" in status
        assert wait_for_points(page, ".tlw-model-plot", 50) > 50

        select_tab(page, "5. Train")
        page.locator(f"{TRAIN} .tlw-opt-auto-epochs input").uncheck()
        set_number(page, f"{TRAIN} .tlw-opt-epochs", 1)
        start = time.perf_counter()
        page.locator(f"{TRAIN} .tlw-train").click()
        wait_for_text(page, f"{TRAIN} .tlw-progress", r"^Done: 1 epoch", timeout=180)
        accuracy = wait_for_text(page, f"{TRAIN} .tlw-accuracy", r"Accuracy \d+\.\d%", timeout=60)
        TIMINGS["notebook7_train_1_epoch_s"] = time.perf_counter() - start
        assert "120 images" in accuracy
        assert float(re.search(r"Accuracy (\d+\.\d)%", accuracy).group(1)) > 10.0, "better than chance"
        wait_for_points(page, ".tlw-curves", BATCHES_PER_EPOCH, timeout=10)
        curves = plot_traces(page, ".tlw-curves")
        assert len(curves[0]["x"]) == BATCHES_PER_EPOCH and len(curves[1]["x"]) == 1
        assert visible_errors(page) == []
