"""The training panel's progress line and bar, and the account of one recipe run.

:class:`RunProgress` is a training callback: it writes epoch/batch, images per second,
elapsed time and ETA, throttled, and at the end of the recipe what it did and changed. It
also keeps the run's account across the recipe's phases (the phase now running, what each
phase changed, epochs and time so far, whether the run failed), which the recipe's
``on_phase`` hook (:meth:`RunProgress.on_phase`) fills in.
"""

from __future__ import annotations

import html
import math
import threading
import time
from typing import Any

import ipywidgets as widgets

from ..core import presets
from ..core.training import Callback

IDLE_TEXT = "<span style='color:#777'>Not trained yet.</span>"


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunProgress(Callback):
    """Writes epoch/batch, images per second, elapsed time and ETA into ``line`` and ``bar``, throttled.

    Args:
        stop_requested: set when Stop was pressed; a fit that starts afterwards stops at once.
        min_interval: seconds between two redraws of the line during an epoch.

    Attributes:
        line: the progress line (``tlw-progress``). bar: the IntProgress (``tlw-progress-bar``).
        preset_name, phase, changes, preset_epochs, preset_start: the recipe run's account.
        failed: the run raised (reset when a retry with a smaller batch starts).
        started: a fit of the run has started.
    """

    def __init__(self, stop_requested: threading.Event, min_interval: float) -> None:
        self.line = widgets.HTML(IDLE_TEXT)
        self.line.add_class("tlw-progress")
        self.bar = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="320px"))
        self.bar.add_class("tlw-progress-bar")
        self.stop_requested = stop_requested
        self.min_interval = min_interval
        # the recipe run
        self.failed = False
        self.phase: tuple[int, int, presets.Phase] | None = None  # index, count, phase of the run
        self.changes: list[str] = []
        self.preset_name = "Quick"
        self.preset_epochs = 0
        self.preset_start = time.perf_counter()
        # the current fit
        self._start = time.perf_counter()
        self._last = -math.inf
        self.epochs = self.per_epoch = 1
        self.auto = False
        self.epoch = self.batch = self.done = 0
        self.images_per_s = math.nan
        self.mode = ""
        self.started = False

    # ------------------------------------------------------------------ the recipe run
    def begin(self, preset_name: str) -> None:
        """A new run of ``preset_name`` starts: forget the last one's account."""
        self.failed = False
        self.started = False
        self.phase, self.changes, self.preset_epochs = None, [], 0
        self.preset_name, self.preset_start = preset_name, time.perf_counter()

    def phase_label(self) -> str:
        return "" if self.phase is None else presets.phase_label(self.preset_name, *self.phase)

    def summary(self) -> str:
        return "" if self.phase is None else presets.summary(self.preset_name, *self.phase[:2], self.changes)

    def on_phase(self, index: int, count: int, phase: presets.Phase) -> bool:
        """The recipe's ``on_phase`` hook: note the phase, or end the recipe after a Stop."""
        if self.stop_requested.is_set():  # Stop between two phases: the next one does not start
            self.line.value = html.escape(f"Stopped before phase {index} of {count}. {self.summary()}")
            self.bar.bar_style = "warning"
            return False
        self.phase = (index, count, phase)
        self.changes.append(phase.change)
        self.line.value = html.escape(f"{self.phase_label()}…")
        return True

    def clear(self) -> None:
        """Back to "Not trained yet" (the session's history was reset)."""
        self.line.value = IDLE_TEXT
        self.bar.value = 0
        self.bar.bar_style = ""

    # ------------------------------------------------------------------ callback hooks
    def on_fit_start(self, trainer: Any) -> None:
        self.started = True
        self.failed = False  # a run retried with a smaller batch after running out of memory
        if self.stop_requested.is_set():  # Stop pressed before the trainer existed
            trainer.request_stop()
        self._start = time.perf_counter()
        self._last = -math.inf
        self.epochs = int(getattr(trainer, "max_epochs", 0) or trainer.config.epochs)
        self.auto = trainer.config.epochs == "auto"
        self.per_epoch = max(int(getattr(trainer, "steps_per_epoch", 0) or 0), 1)
        self.epoch = 1
        self.batch = self.done = 0
        self.images_per_s = math.nan
        self.mode = str(getattr(trainer, "mode", "") or "")  # cached features or full passes
        self.bar.max = self.epochs * self.per_epoch
        self.bar.value = 0
        self.bar.bar_style = "info"
        self._draw()

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.epoch = epoch
        self.batch = 0

    def on_batch_end(self, trainer: Any, batch: int, logs: dict) -> None:
        self.batch = batch
        self.done += 1
        self.images_per_s = float(logs.get("images_per_s", math.nan))
        if time.perf_counter() - self._last >= self.min_interval:
            self._draw()

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict) -> None:
        self._draw()

    def on_fit_end(self, trainer: Any, history: Any) -> None:
        elapsed = clock(time.perf_counter() - self._start)
        n = len(history.epochs)
        self.preset_epochs += n
        phase = self.phase
        if phase is not None and phase[0] < phase[1] and not (self.failed or history.stopped):
            self.line.value = html.escape(f"{self.phase_label()}: done after {n} epochs ({elapsed}).")
            return  # the next phase follows
        if self.failed:
            text, style = f"Failed after {n} epochs and {self.done} batches ({elapsed}).", "danger"
        elif history.stopped:
            text, style = f"Stopped after {n} complete epochs, {self.done} batches ({elapsed}).", "warning"
        else:
            total = clock(time.perf_counter() - self.preset_start)
            text = f"Done: {self.preset_epochs} epochs in {total}" + (f"; {self.mode}." if self.mode else ".")
            style = "success"
        notes = " ".join(getattr(trainer, "notes", ()))  # e.g. retried with a smaller batch
        if notes:
            text = f"{notes} {text}"
        text = f"{text} {self.summary()}".strip()
        self.bar.value = self.done
        self.bar.bar_style = style
        self.line.value = html.escape(text)

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        self.failed = True

    def _draw(self) -> None:
        self._last = now = time.perf_counter()
        elapsed = now - self._start
        total = self.epochs * self.per_epoch
        eta = elapsed / self.done * (total - self.done) if self.done else math.nan
        ips = f"{self.images_per_s:,.0f} images/s" if math.isfinite(self.images_per_s) else "– images/s"
        label = self.phase_label()
        self.line.value = (
            (f"{html.escape(label)} · " if label else "")
            + f"Epoch {self.epoch}/{f'at most {self.epochs}' if self.auto else self.epochs} · batch {self.batch}/{self.per_epoch} · {ips} · "
            f"elapsed {clock(elapsed)} · ETA {clock(eta)}"
            + (f" · {html.escape(self.mode)}" if self.mode else "")
        )
        self.bar.value = min(self.done, self.bar.max)
