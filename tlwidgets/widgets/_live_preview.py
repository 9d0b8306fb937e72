"""Live predictions: a worker thread that handles only the newest item, throttled, and top-k bars.

A camera can send frames faster than a CPU classifies them. Queueing them would let the
preview fall further and further behind; :class:`LatestOnly` keeps one slot that each
new frame overwrites, and handles what is in it at most once per ``interval`` seconds.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

_BAR_COLOURS = ("#2a7ae2", "#7aa7e8", "#b6cdf0")


class LatestOnly:
    """Call ``handle(item)`` in a daemon thread for the newest submitted item, at most every ``interval`` s.

    Args:
        handle: does the work (runs in the worker thread).
        interval: seconds between two calls, at least.
        on_error: receives what ``handle`` raised; the worker goes on.
        name: the thread's name.
    """

    def __init__(
        self,
        handle: Callable[[Any], Any],
        interval: float,
        on_error: Callable[[BaseException], Any],
        name: str = "tlw-latest-only",
    ) -> None:
        self.handle = handle
        self.interval = float(interval)
        self.on_error = on_error
        self.name = name
        self.thread: threading.Thread | None = None
        self._item: Any = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()

    def submit(self, item: Any) -> None:
        """Replace whatever waits with ``item`` (the waiting one is dropped)."""
        with self._lock:
            self._item = item
        self._wake.set()

    def start(self) -> None:
        """Start the worker (a running one goes on)."""
        self._stop.clear()
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self.thread.start()

    def stop(self) -> None:
        """Ask the worker to end; it does within about ``interval`` seconds."""
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        last = 0.0
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            if self._stop.is_set():
                break
            wait = self.interval - (time.monotonic() - last)
            if wait > 0:
                time.sleep(wait)  # items arriving meanwhile replace each other
            with self._lock:
                item, self._item = self._item, None
                self._wake.clear()
            if item is None:
                continue
            last = time.monotonic()
            try:
                self.handle(item)
            except Exception as exc:  # noqa: BLE001 - one failed item must not end the worker
                self.on_error(exc)


def top_k_html(frame: pd.DataFrame, note: str = "") -> str:
    """Horizontal probability bars (HTML, rows ``tlw-live-row``) for one image of ``Session.predict``."""
    rows = []
    for i, (name, prob) in enumerate(zip(frame["class"], frame["probability"])):
        pct = max(0.0, min(100.0, 100.0 * float(prob)))
        colour = _BAR_COLOURS[min(i, len(_BAR_COLOURS) - 1)]
        weight = "bold" if i == 0 else "normal"
        rows.append(
            f"<div class='tlw-live-row' data-class='{html.escape(str(name), quote=True)}' "
            "style='display:flex;align-items:center;gap:6px;margin:2px 0'>"
            f"<span style='width:110px;overflow:hidden;text-overflow:ellipsis;font-weight:{weight}'>"
            f"{html.escape(str(name))}</span>"
            "<span style='flex:0 0 180px;background:#eee;height:14px;border-radius:3px'>"
            f"<span style='display:block;width:{pct:.1f}%;height:14px;background:{colour};border-radius:3px'></span>"
            f"</span><span style='width:48px;text-align:right'>{pct:.0f}%</span></div>"
        )
    extra = f"<div style='color:#777;font-size:11px'>{html.escape(note)}</div>" if note else ""
    return f"<div class='tlw-live-bars'>{''.join(rows)}{extra}</div>"
