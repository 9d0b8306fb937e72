"""Page helpers for the real-browser tests: JupyterLab and Voila pages showing a tlwidgets App."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat

ROOT = Path(__file__).resolve().parents[2]

#: Seconds measured by the browser tests, printed at the end of the run.
TIMINGS: dict[str, float] = {}

# A panel's FigureWidget is the element with both classes (``.tlw-curves.js-plotly-plot``);
# older front ends wrap it, so look below the tagged element too.
_PLOT_JS = """(css) => {
  const el = document.querySelector(css);
  if (!el) return null;
  return el.classList.contains('js-plotly-plot') ? el : el.querySelector('.js-plotly-plot');
}"""


@contextlib.contextmanager
def new_page(browser: Any, width: int = 1280, height: int = 1000, timeout_ms: float = 30_000) -> Iterator[Any]:
    """A page in a browser context of its own, ``width`` x ``height``; the context closes after the block."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    try:
        yield page
    finally:
        context.close()


def plot_traces(page: Any, css: str) -> list[dict[str, Any]]:
    """The traces of the Plotly graph tagged ``css`` as the page holds them (``gd.data``)."""
    return page.evaluate(
        f"""(css) => {{
          const gd = ({_PLOT_JS})(css);
          if (!gd || !gd.data) return [];
          const arr = (v) => v == null ? [] : Array.from(v, (e) => (e && e.length !== undefined && typeof e !== 'string') ? Array.from(e) : e);
          return gd.data.map((t) => ({{name: t.name || '', x: arr(t.x), y: arr(t.y), z: arr(t.z),
                                       customdata: arr(t.customdata)}}));
        }}""",
        css,
    )


def point_count(page: Any, css: str, trace: int = 0) -> int:
    """Number of x values of one trace of the graph tagged ``css`` (0 when not drawn yet)."""
    return int(
        page.evaluate(
            f"""([css, i]) => {{
              const gd = ({_PLOT_JS})(css);
              return gd && gd.data && gd.data[i] && gd.data[i].x ? gd.data[i].x.length : 0;
            }}""",
            [css, trace],
        )
    )


def wait_for_points(page: Any, css: str, at_least: int, trace: int = 0, timeout: float = 60.0) -> int:
    """Wait until a trace of the graph tagged ``css`` holds ``at_least`` points; return the count."""
    wait_until(lambda: point_count(page, css, trace) >= at_least, timeout)
    return point_count(page, css, trace)


def point_position(page: Any, css: str, name: str, trace: int = 0) -> tuple[float, float]:
    """Page coordinates of the marker whose ``customdata`` is ``name``, scrolled into view.

    SVG markers (``scatter``) are found by their element; WebGL markers (``scattergl``) have
    none, so their place is computed from the axes, as Plotly draws them.
    """
    pos = page.evaluate(
        f"""([css, name, t]) => {{
          const gd = ({_PLOT_JS})(css);
          const i = Array.from(gd.data[t].customdata).indexOf(name);
          if (i < 0) return null;
          const layer = gd.querySelectorAll('.scatterlayer .trace')[t];
          const el = layer && Array.from(layer.querySelectorAll('path.point')).find(
            (p) => p.__data__ && p.__data__.i === i);
          if (el) {{
            el.scrollIntoView({{block: 'center'}});
            const r = el.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2];
          }}
          gd.scrollIntoView({{block: 'center'}});
          const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
          const x = gd.data[t].x[i], y = gd.data[t].y[i];
          const box = gd.getBoundingClientRect();
          return [box.left + xa._offset + xa.d2p(x), box.top + ya._offset + ya.d2p(y)];
        }}""",
        [css, name, trace],
    )
    assert pos is not None, f"no point for {name!r} in the graph {css}"
    return float(pos[0]), float(pos[1])


def click_point(page: Any, css: str, name: str) -> None:
    """Hover, then click, the marker of ``name`` like a mouse would (Plotly picks the closest point)."""
    x, y = point_position(page, css, name)
    page.mouse.move(x - 8, y - 8)
    page.mouse.move(x, y, steps=4)
    time.sleep(0.2)  # plotly computes the hovered point on mouse move, then the click uses it
    page.mouse.click(x, y)


def text(page: Any, css: str) -> str:
    return str(page.locator(css).first.inner_text())


def wait_for_text(page: Any, css: str, pattern: str, timeout: float = 60.0) -> str:
    """Wait until the element ``css`` shows text matching the regex ``pattern``; return the text."""
    page.wait_for_function(
        "([css, pattern]) => { const el = document.querySelector(css);"
        " return !!el && new RegExp(pattern).test(el.textContent); }",
        arg=[css, pattern],
        timeout=timeout * 1000,
        polling=50,
    )
    return text(page, css)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> float:
    """Poll ``predicate`` until true; return the seconds it took (AssertionError on timeout)."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.perf_counter() - start


def select_tab(page: Any, label: str) -> None:
    """Click the App's tab whose title starts with ``label`` and wait until its panel shows."""
    page.locator(".tlw-app .lm-TabBar-tab", has_text=label).first.click()
    page.wait_for_function(
        "(label) => { const t = Array.from(document.querySelectorAll('.tlw-app .lm-TabBar-tab'))"
        ".find((e) => e.textContent.trim().startsWith(label));"
        " return !!t && t.classList.contains('lm-mod-current'); }",
        arg=label,
        timeout=5000,
    )


def set_number(page: Any, css: str, value: float) -> None:
    """Type a number into the text box of the widget tagged ``css`` and commit it (Enter)."""
    box = page.locator(f"{css} input").first
    box.fill(str(value))
    box.press("Enter")


def visible_errors(page: Any) -> list[str]:
    """Texts of visible panel error areas and of stderr outputs that hold a traceback."""
    return list(
        page.evaluate(
            """() => {
              const shown = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
              const panel = Array.from(document.querySelectorAll('.tlw-error'))
                .filter((e) => shown(e) && e.textContent.trim()).map((e) => 'panel: ' + e.textContent.trim());
              const stderr = Array.from(document.querySelectorAll(
                  '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
                .filter((e) => /Traceback|Error/.test(e.textContent)).map((e) => 'stderr: ' + e.textContent.trim());
              return panel.concat(stderr);
            }"""
        )
    )


# ---------------------------------------------------------------- JupyterLab
def open_and_run_notebook(
    page: Any, url: str, name: str, timeout: float = 240.0, *, front_end: str = "lab", shows: str = ".tlw-app"
) -> float:
    """Open ``name`` in JupyterLab (or Notebook 7), run all cells from the Run menu, wait for ``shows``.

    ``front_end="notebook"`` opens it at Notebook 7's ``/notebooks/<name>``; the menus, cells
    and prompts are JupyterLab's there too. Returns the seconds from opening the page until
    every code cell has run.
    """
    start = time.perf_counter()
    page.goto(f"{url}/lab/tree/{name}?reset" if front_end == "lab" else f"{url}/notebooks/{name}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=60_000)
    # JupyterLab's status bar says "Python 3 (ipykernel) | Idle" once the kernel is ready;
    # Notebook 7 has no status bar, its toolbar's kernel indicator says idle.
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))"
        ".some((e) => /\\|\\s*Idle/.test(e.textContent))"
        " || !!document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"idle\"]')",
        timeout=90_000,
    )
    started = ("() => Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'))"
               ".some((e) => /\\[(\\*|\\d+)\\]/.test(e.textContent))")
    for attempt in range(3):  # a click that lands before the notebook is wired up runs nothing: click again
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            page.wait_for_function(started, timeout=20_000)
            break
        except Exception:
            if attempt == 2:
                raise
    try:
        page.wait_for_selector(shows, timeout=timeout * 1000)
    except Exception as exc:  # say what the notebook printed: a traceback explains most timeouts
        outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
        raise AssertionError(f"{shows} did not appear in {name}; the cells printed:\n"
                             + "\n".join(outputs)[-3000:]) from exc
    # every code cell has a number in its prompt: "[1]:", not "[ ]:" or "[*]:"
    page.wait_for_function(
        "() => { const p = Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'));"
        " return p.length > 0 && p.every((e) => /\\[\\d+\\]/.test(e.textContent)); }",
        timeout=timeout * 1000,
    )
    return time.perf_counter() - start


def put_notebook(server: Any, name: str, *sources: str) -> None:
    """Create notebook ``name`` with one code cell per source in the server's root (contents API)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    body = json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()
    request = urllib.request.Request(server.url + f"/api/contents/{name}", data=body, method="PUT",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


def shut_down_kernel(server: Any, name: str) -> None:
    """Stop the kernel of notebook ``name`` (a shared server keeps running for other tests)."""
    for session in server.get_json("/api/sessions"):
        if session.get("path", "").endswith(name):
            request = urllib.request.Request(server.url + f"/api/sessions/{session['id']}", method="DELETE")
            with urllib.request.urlopen(request, timeout=30):
                pass


# ---------------------------------------------------------------- screenshots
def screenshot(page: Any, css: str, name: str, folder: Path, height: int = 2600) -> Path:
    """Screenshot the element ``css`` whole (the viewport grows for it), saved small.

    JupyterLab scrolls the notebook inside a panel, so an element taller than the
    window would be cut; a tall viewport shows it entirely.
    """
    old = page.viewport_size
    page.set_viewport_size({"width": old["width"], "height": height})
    try:
        element = page.locator(css).first
        element.scroll_into_view_if_needed()
        page.mouse.move(0, 0)  # no hover label or plotly mode bar in the picture
        time.sleep(0.5)  # let plotly redraw at the new size
        png = element.screenshot(animations="disabled")
    finally:
        page.set_viewport_size(old)
    return save_screenshot(png, name, folder)


def save_screenshot(png: bytes, name: str, folder: Path) -> Path:
    """Write ``png`` as ``folder/name`` with a 256-colour palette (a fraction of the size).

    Also copies it into ``$TLWIDGETS_SCREENSHOT_DIR`` when that is set
    (``TLWIDGETS_SCREENSHOT_DIR=docs`` refreshes the README's pictures).
    """
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path = folder / name
    small.save(path, optimize=True)
    extra = os.environ.get("TLWIDGETS_SCREENSHOT_DIR")
    if extra:
        target = Path(extra)
        target = target if target.is_absolute() else ROOT / target
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)
    return path
