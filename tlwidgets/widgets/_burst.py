"""Burst capture for the DataCollector: the frames of a held Capture, saved into one class.

The webcam records :data:`~tlwidgets.widgets.webcam.BURST_RATE` frames per second while
*Capture* is held down, each frame carrying the number of its press
(:attr:`~tlwidgets.widgets.webcam.Frame.burst`). :class:`BurstRecorder` saves them like
single captures, through the collector's own saving path (file names made here, never
overwriting), into the class that was selected when the burst began, so switching class
mid-burst does not split it. A live counter shows how many frames were saved.

The first frame that cannot be saved (the class folder was removed, renamed or replaced
by a link; the bytes are no picture) ends the burst: the panel shows why, the browser is
told to stop, and that burst's later frames are dropped unread. The webcam itself drops
any frame beyond ``burst_max`` (:data:`~tlwidgets.widgets.webcam.BURST_MAX_FRAMES`).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from .webcam import Frame, Webcam


def capture_file_name(frame: Frame) -> str:
    """The file name a webcam picture is saved under (a taken name gets ``_1``, ``_2``... when written)."""
    return f"webcam_{time.strftime('%Y%m%d-%H%M%S')}{frame.extension}"


def frames(n: int) -> str:
    return f"{n} frame" if n == 1 else f"{n} frames"


class BurstRecorder:
    """Saves the frames of one held Capture after another, and counts them.

    Args:
        webcam: the camera whose bursts are recorded (its ``burst_max`` bounds a burst).
        save: ``save(files, class_name)`` stores ``[(file name, bytes)]`` in ``class_name``
            (``None``: the selected class) and returns the saved paths, or ``None`` when it
            refused them (and showed why): :meth:`DataCollector.add_images`.
        say: reports a step that worked in the panel's status line.
    """

    def __init__(
        self,
        webcam: Webcam,
        save: Callable[[Iterable[tuple[str, bytes]], str | None], list[Path] | None],
        say: Callable[[str], Any],
    ) -> None:
        self.webcam = webcam
        self.save = save
        self.say = say
        self.counter = widgets.HTML()
        self.counter.add_class("tlw-burst-counter")
        self.burst = 0  # number of the burst being recorded (0: none yet)
        self.target: str | None = None  # its class, fixed by its first saved frame
        self.saved = 0
        self.stopped = False  # a frame was refused: the rest of this burst is dropped
        webcam.on_burst_end(self.end)

    def record(self, frame: Frame) -> Path | None:
        """Save one frame of a burst; returns its path, or ``None`` when it was not saved."""
        if frame.burst != self.burst:
            self.burst, self.target, self.saved, self.stopped = frame.burst, None, 0, False
        if self.stopped:
            return None
        saved = self.save([(capture_file_name(frame), frame.data)], self.target)
        if not saved:
            self.stopped = True
            self.webcam.stop_burst()
            self._show(f"Stopped: {frames(self.saved)} saved", "#a00")
            return None
        self.target = saved[0].parent.name
        self.saved += 1
        self._show(f"\u25cf {frames(self.saved)}", "#c00")
        self.say(f"Saved {frames(self.saved)} in {self.target!r} (Capture held down).")
        return saved[0]

    def end(self, burst: int) -> None:
        """Capture was released after burst ``burst``: show what it saved."""
        if burst != self.burst or self.stopped or not self.saved:
            return
        capped = self.saved >= self.webcam.burst_max
        note = ", the most one burst records" if capped else ""
        self._show(frames(self.saved), "#333")
        self.say(f"Saved {frames(self.saved)} in {self.target!r}{note}.")

    def _show(self, text: str, colour: str) -> None:
        self.counter.value = f"<b style='color:{colour}'>{html.escape(text)}</b>"
