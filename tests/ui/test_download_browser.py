"""Take it home: the bundle's Download button in JupyterLab puts a real download in the browser.

A small notebook trains a session on the demo digits and shows the training panel; a click
on *Bundle (.zip)* must make Chromium download ``my_model.zip``, which ``Session.load``
opens here and which predicts what the kernel's session predicted on the same image.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from _browser import (
    TIMINGS,
    new_page,
    open_and_run_notebook,
    put_notebook,
    shut_down_kernel,
    visible_errors,
)

from tlwidgets import Session

pytestmark = [pytest.mark.ui, pytest.mark.slow]

NOTEBOOK = "download_bundle.ipynb"
EXPECTED = "download_expected.json"
CODE = f"""\
import json
import tlwidgets
s = tlwidgets.Session(device="cpu", image_size=64)
s.load_model("efficientnet_lite0")
s.load_data("demo")
s.replace_head()
s.freeze_backbone()
s.fit(epochs=1)
image = str(s.data.val[0].path)
top = s.predict(image, k=3)
expected = {{"image": image, "classes": list(top["class"]), "probabilities": [float(p) for p in top["probability"]]}}
with open({EXPECTED!r}, "w") as f:
    json.dump(expected, f)
tlwidgets.TrainingPanel(s)
"""


def test_the_bundle_download_reaches_the_browser_and_opens(browser: Any, lab_server: Any, tmp_path: Path) -> None:
    put_notebook(lab_server, NOTEBOOK, CODE)
    try:
        with new_page(browser) as page:
            open_and_run_notebook(page, lab_server.url, NOTEBOOK, shows=".tlw-training-panel .tlw-download-bundle")
            button = page.locator(".tlw-training-panel .tlw-download-bundle")
            assert button.is_enabled()
            start = time.perf_counter()
            with page.expect_download(timeout=120_000) as info:
                button.click()
            download = info.value
            TIMINGS["download_click_to_file_s"] = time.perf_counter() - start
            assert download.suggested_filename == "my_model.zip"
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            result = page.locator(".tlw-training-panel .tlw-export-result")
            assert "my_model.zip" in result.inner_text() and "browser" in result.inner_text()
            assert visible_errors(page) == []
    finally:
        shut_down_kernel(lab_server, NOTEBOOK)

    expected = json.loads(lab_server.get_json(f"/api/contents/{EXPECTED}?content=1")["content"])
    loaded = Session.load(saved, device="cpu", data=False)
    top = loaded.predict(expected["image"], k=3)
    assert list(top["class"]) == expected["classes"]
    assert list(top["probability"]) == pytest.approx(expected["probabilities"], abs=1e-4)
