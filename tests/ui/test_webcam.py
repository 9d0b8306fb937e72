"""The webcam in a real browser: Chromium's fake camera, a DataCollector in JupyterLab.

Chromium runs with ``--use-fake-device-for-media-stream`` (a synthetic test pattern as the
camera) and ``--use-fake-ui-for-media-stream`` (the permission prompt is accepted), so
``getUserMedia`` works headless. A click on Capture must put a picture file into the
selected class folder on disk, and its thumbnail into the panel; holding Capture down
must save a burst of frames at the webcam's rate, with the counter showing how many.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from _browser import put_notebook, save_screenshot, shut_down_kernel

pytestmark = [pytest.mark.ui, pytest.mark.slow]

NOTEBOOK = "webcam_capture.ipynb"
PICTURES = "webcam-pictures"
CODE = f"""\
import tlwidgets
collector = tlwidgets.DataCollector(tlwidgets.Session(device="cpu"), folder={PICTURES!r})
collector.create_class("me")
collector
"""


def _files(server: Any, folder: str) -> list[str]:
    try:
        listing = server.get_json(f"/api/contents/{folder}")
    except OSError:
        return []
    return sorted(item["name"] for item in listing.get("content") or [] if item["type"] == "file")


def _open_and_run(page: Any, server: Any, name: str) -> Any:
    """Open notebook ``name`` once its kernel is idle, run all cells, return its notebook panel."""
    page.goto(f"{server.url}/lab/tree/{name}?reset", wait_until="domcontentloaded")
    panel = page.locator(".jp-NotebookPanel:visible")
    panel.locator(".jp-Cell").first.wait_for(timeout=120_000)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    return panel


def test_capture_with_a_fake_camera_saves_into_the_class_folder(
    camera_browser: Any, lab_server: Any, screenshot_dir: Path
) -> None:
    put_notebook(lab_server, NOTEBOOK, CODE)
    context = camera_browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["camera"])
    page = context.new_page()
    try:
        panel = _open_and_run(page, lab_server, NOTEBOOK)
        collector = panel.locator(".tlw-data-collector")
        collector.wait_for(timeout=120_000)
        assert collector.locator(".tlw-class-choice button", has_text="me").count() == 1
        assert _files(lab_server, f"{PICTURES}/me") == []

        cam = collector.locator(".tlw-webcam")
        cam.locator(".tlw-webcam-start").click()
        collector.locator(".tlw-webcam.tlw-webcam-on").wait_for(timeout=30_000)
        page.wait_for_function(
            "el => el.videoWidth > 0", arg=cam.locator("video").element_handle(), timeout=30_000
        )
        cam.locator(".tlw-webcam-capture").click()

        deadline = time.monotonic() + 60
        while not _files(lab_server, f"{PICTURES}/me") and time.monotonic() < deadline:
            time.sleep(0.5)
        files = _files(lab_server, f"{PICTURES}/me")
        assert len(files) == 1 and files[0].startswith("webcam_") and files[0].endswith(".jpg"), files
        collector.locator(".tlw-image-tile").first.wait_for(timeout=30_000)
        assert collector.locator(".tlw-image-tile").count() == 1
        assert "1 picture" in collector.locator(".tlw-class-section").first.inner_text()

        cam.locator(".tlw-webcam-capture").click()  # a second picture never replaces the first
        deadline = time.monotonic() + 60
        while len(_files(lab_server, f"{PICTURES}/me")) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(_files(lab_server, f"{PICTURES}/me")) == 2
        save_screenshot(page.screenshot(full_page=True), "webcam-capture.png", screenshot_dir)

        cam.locator(".tlw-webcam-start").click()  # Stop camera
        collector.locator(".tlw-webcam:not(.tlw-webcam-on)").wait_for(timeout=10_000)
        assert page.evaluate("() => [...document.querySelectorAll('video')].every(v => !v.srcObject)")
    except Exception:
        save_screenshot(page.screenshot(full_page=True), "webcam-capture-failed.png", screenshot_dir)
        raise
    finally:
        context.close()
        shut_down_kernel(lab_server, NOTEBOOK)


BURST_CODE = f"""\
import tlwidgets
collector = tlwidgets.DataCollector(tlwidgets.Session(device="cpu"), folder={PICTURES + "-burst"!r})
collector.create_class("me")
collector
"""


def test_holding_capture_records_a_burst_with_a_counter(
    camera_browser: Any, lab_server: Any, screenshot_dir: Path
) -> None:
    """Capture held down for 1.5 s with the mouse: a frame at once, then one every 1/BURST_RATE s."""
    from tlwidgets.widgets.webcam import BURST_RATE

    folder = f"{PICTURES}-burst/me"
    put_notebook(lab_server, "webcam_burst.ipynb", BURST_CODE)
    context = camera_browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["camera"])
    page = context.new_page()
    try:
        panel = _open_and_run(page, lab_server, "webcam_burst.ipynb")
        collector = panel.locator(".tlw-data-collector")
        collector.wait_for(timeout=120_000)
        cam = collector.locator(".tlw-webcam")
        cam.locator(".tlw-webcam-start").click()
        collector.locator(".tlw-webcam.tlw-webcam-on").wait_for(timeout=30_000)
        page.wait_for_function("el => el.videoWidth > 0", arg=cam.locator("video").element_handle(), timeout=30_000)
        button = cam.locator(".tlw-webcam-capture")
        button.scroll_into_view_if_needed()
        box = button.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        pressed = time.perf_counter()
        time.sleep(1.5)
        page.mouse.up()
        held = time.perf_counter() - pressed

        status = collector.locator(".tlw-collector-status")
        page.wait_for_function(
            "el => /Saved \\d+ frames in 'me'\\.$/.test(el.textContent.trim())", arg=status.element_handle(),
            timeout=60_000,
        )  # fmt: skip
        files = _files(lab_server, folder)
        most = 1 + int(held * BURST_RATE) + 1  # the first frame at once, then one per tick (one tick of slack)
        assert 3 <= len(files) <= most, (len(files), held)
        assert len(set(files)) == len(files) and all(f.startswith("webcam_") and f.endswith(".jpg") for f in files)
        assert status.inner_text().strip() == f"Saved {len(files)} frames in 'me'."
        assert collector.locator(".tlw-burst-counter").inner_text().strip() == f"{len(files)} frames"
        assert f"{len(files)} pictures" in collector.locator(".tlw-class-section").first.inner_text()
        time.sleep(1.0)
        assert len(_files(lab_server, folder)) == len(files)  # released: no more frames
        save_screenshot(page.screenshot(full_page=True), "webcam-burst.png", screenshot_dir)
    except Exception:
        save_screenshot(page.screenshot(full_page=True), "webcam-burst-failed.png", screenshot_dir)
        raise
    finally:
        context.close()
        shut_down_kernel(lab_server, "webcam_burst.ipynb")


def test_a_refused_camera_explains_itself(browser: Any, lab_server: Any) -> None:
    """Without the fake camera and with no permission, the widget says what to do."""
    put_notebook(lab_server, "webcam_refused.ipynb", CODE.replace(PICTURES, PICTURES + "-refused"))
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        panel = _open_and_run(page, lab_server, "webcam_refused.ipynb")
        cam = panel.locator(".tlw-data-collector .tlw-webcam")
        cam.wait_for(timeout=120_000)
        cam.locator(".tlw-webcam-start").click()
        error = cam.locator(".tlw-webcam-status.tlw-webcam-error")
        error.wait_for(timeout=30_000)
        assert "camera" in error.inner_text().lower()
        assert _files(lab_server, f"{PICTURES}-refused/me") == []
    finally:
        context.close()
        shut_down_kernel(lab_server, "webcam_refused.ipynb")


LIVE_CODE = f"""\
import numpy as np
from PIL import Image
import io
import tlwidgets

def picture(colour, seed):
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour) + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()

session = tlwidgets.Session(device="cpu", image_size=32)
collector = tlwidgets.DataCollector(session, folder={PICTURES + "-live"!r}, preview_interval=0.3)
for name, colour in (("green", (30, 200, 30)), ("red", (210, 30, 30))):
    collector.create_class(name)
    collector.add_images([(f"{{name}}{{i}}.png", picture(colour, i)) for i in range(6)])
collector.use_data()
session.load_model("mobilenet_v3_small", pretrained=False)
session.replace_head()
session.fit(epochs=1, batch_size=4)
collector
"""


def test_live_preview_classifies_streamed_frames(camera_browser: Any, lab_server: Any, screenshot_dir: Path) -> None:
    """Live preview turns streaming on; frames from the fake camera come back as top-k bars."""
    put_notebook(lab_server, "webcam_live.ipynb", LIVE_CODE)
    context = camera_browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["camera"])
    page = context.new_page()
    try:
        panel = _open_and_run(page, lab_server, "webcam_live.ipynb")
        collector = panel.locator(".tlw-data-collector")
        collector.wait_for(timeout=180_000)
        assert collector.locator(".tlw-image-tile").count() == 12
        collector.locator(".tlw-webcam-start").click()
        collector.locator(".tlw-webcam.tlw-webcam-on").wait_for(timeout=30_000)
        collector.locator(".tlw-live-preview").click()
        bars = collector.locator(".tlw-live-predictions .tlw-live-row")
        bars.first.wait_for(timeout=60_000)
        assert bars.count() == 2  # top-3 of two classes
        assert {bars.nth(i).get_attribute("data-class") for i in range(2)} == {"green", "red"}
        save_screenshot(page.screenshot(full_page=True), "webcam-live-preview.png", screenshot_dir)
        assert _files(lab_server, f"{PICTURES}-live/green") == [f"green{i}.png" for i in range(6)]  # nothing saved
    finally:
        context.close()
        shut_down_kernel(lab_server, "webcam_live.ipynb")
