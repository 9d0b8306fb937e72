"""Real-browser fixtures: headless JupyterLab, Notebook 7 and Voila servers, and Chromium.

The servers run on 127.0.0.1 on free ports, from a temporary root folder that holds a
copy of the example notebook (with a small input size so training takes seconds), and
with their own tlwidgets cache and JupyterLab settings. Chromium is Debian's
``/usr/bin/chromium`` driven by Playwright; nothing is downloaded.

Without that browser the tests skip, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from _browser import save_screenshot

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "FAKE_CAMERA", "Server", "free_port", "save_screenshot", "server_env", "small_notebook"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CHROMIUM = Path(os.environ.get("TLWIDGETS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
#: Input size of the notebook copies the browser tests run: 2 epochs take seconds on 2 cores.
IMAGE_SIZE = 96
SERVER_START_TIMEOUT = 120.0
_DEFAULT_SESSION = "tlwidgets.Session()"

UI_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if UI_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.ui)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from _browser import TIMINGS

    if TIMINGS:
        terminalreporter.write_sep("-", "browser timings (seconds)")
        for name, value in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {value:.2f}")


def _missing_requirements() -> list[str]:
    missing = [f"Chromium at {CHROMIUM} (apt-get install chromium)"] if not CHROMIUM.exists() else []
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab"), ("voila", "voila")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the Python package {package} (pip install -e '.[test]')")
    return missing


@pytest.fixture(scope="session")
def ui_requirements() -> None:
    """Skip (or, under CI, fail) when the browser or the servers are not installed."""
    missing = _missing_requirements()
    if not missing:
        return
    reason = "real-browser tests need " + " and ".join(missing)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: these tests must run in CI)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- notebooks
def small_notebook(source: Path, dest: Path, image_size: int = IMAGE_SIZE) -> Path:
    """Copy ``source`` to ``dest`` with ``tlwidgets.Session(image_size=...)`` in its code.

    Fails when the notebook no longer creates its session as ``tlwidgets.Session()``, so
    the browser tests never silently fall back to full-size training.
    """
    nb = nbformat.read(source, as_version=4)
    replaced = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and _DEFAULT_SESSION in cell.source:
            cell.source = cell.source.replace(_DEFAULT_SESSION, f"tlwidgets.Session(image_size={image_size})")
            replaced += 1
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    assert replaced, f"{source} no longer creates its session as {_DEFAULT_SESSION}; update {__file__}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return dest


# ---------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(base: Path) -> dict[str, str]:
    """Environment of a server and of the kernels it starts: own caches and settings."""
    settings = base / "lab-settings"
    notify = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notify.parent.mkdir(parents=True, exist_ok=True)
    # No "get notified about Jupyter news?" toast over the page.
    notify.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8")
    env = dict(os.environ)
    env.update(
        OMP_WAIT_POLICY="PASSIVE",
        TLWIDGETS_CACHE_DIR=str(base / "tlwidgets-cache"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "lab-workspaces"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("JUPYTER_TOKEN", None)
    return env


class Server:
    """A server process we started, its URL and its log file."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path, env: dict[str, str]) -> None:
        self.url = url
        self.process = process
        self.log = log
        self.env = env

    @property
    def cache_dir(self) -> Path:
        return Path(self.env["TLWIDGETS_CACHE_DIR"])

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)


def _wait_until_up(server: Server, probe: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.url + probe, timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers: up (Voila sends its API paths to a 403 page)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not up after {SERVER_START_TIMEOUT:.0f} s:\n{server.log_tail()}")


def _stop(server: Server) -> None:
    proc = server.process
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the servers shut their kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def run_server(cmd: list[str], url: str, probe: str, env: dict[str, str], log: Path, cwd: Path) -> Iterator[Server]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    server = Server(url, proc, log, env)
    try:
        _wait_until_up(server, probe)
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def lab_server(ui_requirements: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """JupyterLab on 127.0.0.1 (no token) serving a folder with ``quickstart.ipynb``."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    small_notebook(EXAMPLES / "quickstart.ipynb", root / "quickstart.ipynb")
    port = free_port()
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
        "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={root}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with run_server(cmd, url, "/api/status", server_env(base), base / "lab.log", root) as server:
        yield server


@pytest.fixture(scope="session")
def voila_server(ui_requirements: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Voila on 127.0.0.1 rendering ``app.ipynb`` at ``/``."""
    base = tmp_path_factory.mktemp("voila")
    root = base / "root"
    notebook = small_notebook(EXAMPLES / "app.ipynb", root / "app.ipynb")
    port = free_port()
    cmd = [
        sys.executable, "-m", "voila", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
        "--Voila.port_retries=0", str(notebook),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with run_server(cmd, url, "/voila/static/", server_env(base), base / "voila.log", root) as server:
        yield server



@pytest.fixture(scope="session")
def notebook_server(ui_requirements: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Notebook 7 (``jupyter notebook``) on 127.0.0.1 (no token) serving ``quickstart.ipynb``.

    Skips (under CI, fails) when the ``notebook`` package 7 or newer is not installed.
    """
    import importlib.metadata

    try:
        major = int(importlib.metadata.version("notebook").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        major = 0
    if major < 7:
        reason = "the Notebook 7 test needs the Python package notebook>=7 (pip install -e '.[test]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: these tests must run in CI)", pytrace=False)
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("notebook7")
    root = base / "root"
    small_notebook(EXAMPLES / "quickstart.ipynb", root / "quickstart.ipynb")
    port = free_port()
    cmd = [
        sys.executable, "-m", "notebook", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
        "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={root}",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with run_server(cmd, url, "/api/status", server_env(base), base / "notebook.log", root) as server:
        yield server

# ---------------------------------------------------------------- browser
@pytest.fixture(scope="session")
def browser(ui_requirements: None) -> Iterator[Any]:
    """Headless Chromium (Debian's) under Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


#: Chromium's fake camera (a generated test pattern), always allowed.
FAKE_CAMERA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture(scope="session")
def camera_browser(browser: Any) -> Iterator[Any]:
    """A second Chromium from the same Playwright, with a fake camera that is always allowed."""
    chromium = browser.browser_type.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *FAKE_CAMERA])
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save their screenshots (also copied to $TLWIDGETS_SCREENSHOT_DIR when set)."""
    return tmp_path_factory.mktemp("screenshots")
