"""The model picker with the whole catalog (torchvision and over a thousand timm models) in JupyterLab.

A notebook imports tlwidgets and its picker and gives the timm models accuracies from a
results table it writes itself (the numbers are made up: what is measured is drawing, not
accuracy), then a second cell builds
the picker with *Show all timm models* on. The kernel writes when that cell started and when it ran;
the scatter must hold every shown model, drawn on its WebGL canvas, within 3 s of the
cell having run on an idle machine (the test allows twice that on a busy one and prints the
time, and the cell's Python time, with the browser timings). Then
a click on a timm point loads that model (random weights: nothing to download offline).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from _browser import (
    TIMINGS,
    click_point,
    new_page,
    open_and_run_notebook,
    plot_traces,
    put_notebook,
    shut_down_kernel,
    visible_errors,
    wait_for_text,
    wait_until,
)

pytestmark = [pytest.mark.ui, pytest.mark.slow]

NOTEBOOK = "picker_scale.ipynb"
STARTED = "picker_started.json"
PICKER = ".tlw-model-picker"
PLOT = ".tlw-model-plot"
TARGET = "timm:resnet10t.c3_in1k"
TARGET_S = 3.0  # seconds from the cell having run to every model drawn
TABLE = """\
import csv, os, tempfile
os.environ["TLWIDGETS_CACHE_DIR"] = tempfile.mkdtemp(prefix="tlw-picker-")  # this notebook's own cache
import tlwidgets
from tlwidgets import ModelPicker  # a notebook's imports come first: the picker cell is what is timed
from tlwidgets.core import catalog, timm_accuracy
rows = catalog.list_models()
timm_rows = rows[rows["source"] == "timm"]
table = os.path.join(os.environ["TLWIDGETS_CACHE_DIR"], "results.csv")
with open(table, "w", newline="") as f:
    out = csv.writer(f)
    out.writerow(["model", "img_size", "top1", "top5", "param_count"])
    for k, (name, size) in enumerate(zip(timm_rows["name"], timm_rows["input_size"])):
        out.writerow([name.split(":", 1)[1], int(size), round(55 + (k * 37 % 300) / 10, 2), 90.0, 1.0])
timm_accuracy.update_accuracy(path=table)
"""
PICKER_CELL = f"""\
import json, time
started = time.time()
s = tlwidgets.Session(device="cpu")
picker = ModelPicker(s)
picker.controls.show_all.value = True
with open({STARTED!r}, "w") as f:
    json.dump({{"started": started, "ran": time.time()}}, f)
picker
"""
# Installed in the page before it loads: notes when the picker's scatter holds every model on its canvas.
WATCH = """
window.__drawnAt = null;
setInterval(() => {
  if (window.__drawnAt) return;
  const el = document.querySelector('.tlw-model-picker .tlw-model-plot');
  const gd = el && (el.classList.contains('js-plotly-plot') ? el : el.querySelector('.js-plotly-plot'));
  const n = gd && gd.data && gd.data[0] && gd.data[0].x ? gd.data[0].x.length : 0;
  const canvas = gd && gd.querySelector('canvas');
  if (n >= 1000 && canvas && canvas.width > 0) window.__drawnAt = Date.now() / 1000;
}, 20);
"""


def test_the_whole_catalog_draws_in_seconds_and_a_timm_point_loads(browser: Any, lab_server: Any) -> None:
    put_notebook(lab_server, NOTEBOOK, TABLE, PICKER_CELL)
    try:
        with new_page(browser) as page:
            page.add_init_script(WATCH)
            open_and_run_notebook(page, lab_server.url, NOTEBOOK, shows=f"{PICKER} {PLOT}")
            wait_until(lambda: page.evaluate("() => window.__drawnAt") is not None, 60)
            drawn = float(page.evaluate("() => window.__drawnAt"))
            times = json.loads(lab_server.get_json(f"/api/contents/{STARTED}?content=1")["content"])
            after = drawn - times["ran"]
            TIMINGS["picker_full_catalog_python_s"] = times["ran"] - times["started"]
            TIMINGS["picker_full_catalog_cell_ran_to_drawn_s"] = after
            names = plot_traces(page, f"{PICKER} {PLOT}")[0]["customdata"]
            assert len(names) >= 1000 and TARGET in names
            assert sum(str(n).startswith("timm:") for n in names) >= 1000
            # The target is 3 s (2.7 s measured on an idle 2-core EPYC, printed with the browser
            # timings); the bound is twice that, so a busy CI machine does not fail it.
            assert after < 2 * TARGET_S, f"{len(names)} models drawn {after:.2f} s after the cell ran"

            page.locator(f"{PICKER} .tlw-pretrained input").uncheck()
            start = time.perf_counter()
            click_point(page, f"{PICKER} {PLOT}", TARGET)
            wait_for_text(page, f"{PICKER} .tlw-picker-status", r"Loaded timm:resnet10t\.c3_in1k \(random weights\)")
            TIMINGS["picker_click_timm_point_to_loaded_s"] = time.perf_counter() - start
            wait_until(lambda: plot_traces(page, f"{PICKER} {PLOT}")[1]["customdata"] == [TARGET], 10)
            assert visible_errors(page) == []
    finally:
        shut_down_kernel(lab_server, NOTEBOOK)
