"""The exported web app in a real browser: an upload and the webcam classified by ONNX Runtime Web.

ONNX Runtime Web is installed from npm (pinned to the version the page loads by default) into
a cache folder and copied into the exported folder (``runtime=<its dist folder>``), so the
page needs no internet. The folder is served by Python's ``http.server`` on 127.0.0.1 under a
sub-path, as a static host would, and every request outside that server is refused and
recorded. Chromium runs with a fake camera that is always allowed.

Without npm the test skips, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _browser import TIMINGS, save_screenshot
from PIL import Image

from tests.conftest import make_image_folder
from tests.helpers import trained_lite0_session
from tlwidgets import Session
from tlwidgets.core import webapp

pytestmark = [pytest.mark.ui, pytest.mark.slow]

#: A class whose name would run script if the page ever parsed class names as HTML.
HOSTILE = "red <img src=x onerror=window.__pwned=1>"
NPM_CACHE = Path(os.environ.get("TLWIDGETS_NPM_CACHE", Path(tempfile.gettempdir()) / "tlwidgets-npm"))


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: this test must run in CI)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def ort_web_dist() -> Path:
    """onnxruntime-web's dist folder, installed once with npm into a cache shared by test runs."""
    version = webapp.ORT_WEB_VERSION
    target = NPM_CACHE / f"onnxruntime-web-{version}"
    dist = target / "node_modules" / "onnxruntime-web" / "dist"
    if all((dist / name).is_file() for name in webapp.RUNTIME_FILES):
        return dist
    npm = shutil.which("npm")
    if npm is None:
        _missing("the web app's browser test needs npm to install onnxruntime-web (apt-get install npm)")
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=NPM_CACHE))
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(staging), "--no-save", "--no-package-lock", "--no-audit", "--no-fund",
             "--ignore-scripts", "--loglevel=error", f"onnxruntime-web@{version}"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            _missing(f"npm install onnxruntime-web@{version} failed: {(done.stderr or done.stdout)[-1500:]}")
        try:
            os.replace(staging, target)  # atomic: a concurrent run may have finished first
        except OSError:
            if not dist.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    assert all((dist / name).is_file() for name in webapp.RUNTIME_FILES), sorted(p.name for p in dist.iterdir())
    return dist


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """``python -m http.server``'s handler, without a log line per request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _CdnHandler(_QuietHandler):
    """Files for any origin, as jsDelivr serves npm packages (``Access-Control-Allow-Origin: *``)."""

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()


@contextlib.contextmanager
def static_server(root: Path, handler: type[_QuietHandler] = _QuietHandler) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 from a thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int]) -> Path:
    rng = np.random.default_rng(7)
    arr = np.clip(np.array(colour, np.float32) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """A trained session on three colour classes, the red one named to inject HTML."""
    images = make_image_folder(tmp_path_factory.mktemp("webapp-data") / "images", classes=3, per_class=8, size=32)
    (images / "class_0").rename(images / HOSTILE)  # red
    (images / "class_1").rename(images / "green")
    (images / "class_2").rename(images / "blue")
    start = time.perf_counter()
    session = trained_lite0_session(images)
    TIMINGS["web app: train the session"] = time.perf_counter() - start
    session.configure(precision="fp32")  # predict as the page computes: in fp32, on every kind of CPU
    assert HOSTILE in session.classes
    return session


def _rows(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#predictions .row')).map((r) => ({
             name: r.querySelector('.name').textContent, rank: Number(r.dataset.rank),
             probability: Number(r.dataset.probability), shown: r.querySelector('.value').textContent}))"""
    )


def test_the_page_classifies_an_upload_as_predict_does_and_the_webcam(
    trained: Session, ort_web_dist: Path, camera_browser: Any, screenshot_dir: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    start = time.perf_counter()
    result = trained.export_webapp(site / "classifier", runtime=ort_web_dist, title="Colours")
    TIMINGS["web app: export"] = time.perf_counter() - start
    assert result.local_runtime and result.runtime == "ort/ort.wasm.min.js"
    picture = _png(tmp_path / "a red picture.png", (220, 40, 40), (150, 101))
    want = trained.predict(str(picture), k=3)
    assert want["class"].iloc[0] == HOSTILE

    outside: list[str] = []
    errors: list[str] = []
    with static_server(site) as base:
        context = camera_browser.new_context(viewport={"width": 1000, "height": 800})
        context.grant_permissions(["camera"], origin=base)

        def only_local(route: Any) -> None:
            if route.request.url.startswith(base + "/"):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", only_local)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: (errors.append("dialog: " + dialog.message), dialog.dismiss()))
        try:
            start = time.perf_counter()
            page.goto(base + "/classifier/")  # a sub-path, as on GitHub Pages
            page.wait_for_selector("body[data-state=ready]", timeout=90_000)
            TIMINGS["web app: page ready (runtime + model loaded)"] = time.perf_counter() - start
            assert page.title() == "Colours" and page.locator("#title").text_content() == "Colours"
            assert page.locator("#camera-start").is_visible() and not page.locator("#camera-stop").is_visible()

            # An uploaded picture: the same top classes and probabilities as Session.predict.
            start = time.perf_counter()
            page.set_input_files("#file", str(picture))
            page.wait_for_selector("#predictions[data-source=picture] .row")
            TIMINGS["web app: classify an upload"] = time.perf_counter() - start
            rows = _rows(page)
            assert [r["name"] for r in rows] == list(want["class"])
            assert np.allclose([r["probability"] for r in rows], want["probability"].to_numpy(), atol=1e-4)
            assert rows[0]["shown"] == f"{100 * want['probability'].iloc[0]:.0f}%"
            # The class name that is HTML stayed text: no element was made from it, no script ran.
            assert page.evaluate("() => document.querySelectorAll('#predictions img').length") == 0
            assert page.evaluate("() => window.__pwned === undefined")
            assert "a red picture.png" in page.locator("#predictions .note").text_content()
            save_screenshot(page.locator("main").screenshot(animations="disabled"), "webapp.png", screenshot_dir)

            # The webcam (Chromium's generated pattern): top-3 bars that are probabilities.
            start = time.perf_counter()
            page.click("#camera-start")
            page.wait_for_selector("#predictions[data-source=camera] .row")
            TIMINGS["web app: first webcam prediction"] = time.perf_counter() - start
            rows = _rows(page)
            assert [r["rank"] for r in rows] == [1, 2, 3]
            assert {r["name"] for r in rows} <= set(trained.classes)
            probs = [r["probability"] for r in rows]
            assert all(0.0 <= p <= 1.0 for p in probs) and probs == sorted(probs, reverse=True)
            assert sum(probs) <= 1.0 + 1e-6
            assert page.locator("#video").is_visible() and not page.locator("#picture").is_visible()
            assert page.locator("#camera-stop").is_visible() and not page.locator("#camera-start").is_visible()
            page.click("#camera-stop")
            page.locator("#camera-start").wait_for(state="visible")
            assert not page.locator("#video").is_visible() and not page.locator("#camera-stop").is_visible()
            assert page.locator("#status").get_attribute("data-kind") != "error", page.locator("#status").text_content()
        finally:
            context.close()
    assert outside == []  # runtime, model and page all came from the folder
    assert errors == []


def test_the_page_loads_the_runtime_from_another_origin_as_from_the_cdn(
    trained: Session, ort_web_dist: Path, browser: Any, tmp_path: Path
) -> None:
    """The default page loads ONNX Runtime Web from jsDelivr: the same, from a second local origin."""
    cdn_root = tmp_path / "cdn"
    package = cdn_root / "npm" / f"onnxruntime-web@{webapp.ORT_WEB_VERSION}"
    shutil.copytree(ort_web_dist, package / "dist", ignore=lambda d, names: [
        n for n in names if n not in webapp.RUNTIME_FILES])  # fmt: skip
    picture = _png(tmp_path / "green.png", (40, 200, 40), (90, 120))
    want = trained.predict(str(picture), k=3)
    errors: list[str] = []
    with static_server(cdn_root, _CdnHandler) as cdn, static_server(tmp_path / "site") as base:
        runtime = f"{cdn}/npm/onnxruntime-web@{webapp.ORT_WEB_VERSION}/dist/"  # the shape of the CDN's URL
        result = trained.export_webapp(tmp_path / "site", runtime=runtime)
        assert result.runtime == runtime + "ort.wasm.min.js" and not (tmp_path / "site" / "ort").exists()
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(base + "/")
            page.wait_for_selector("body[data-state=ready]", timeout=90_000)
            page.set_input_files("#file", str(picture))
            page.wait_for_selector("#predictions[data-source=picture] .row")
            rows = _rows(page)
        finally:
            context.close()
    assert [r["name"] for r in rows] == list(want["class"])
    assert np.allclose([r["probability"] for r in rows], want["probability"].to_numpy(), atol=1e-4)
    assert errors == []
