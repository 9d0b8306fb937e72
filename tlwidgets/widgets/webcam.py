"""Webcam: the browser's camera as a widget that sends pictures to Python.

Why a small anywidget and not a webcam widget library: ``ipywebrtc`` (last release
0.6.0, March 2021) and ``ipywebcam`` (0.1.16, June 2023) ship front-end extensions
built for JupyterLab 1-3 and ipywidgets 7 and are no longer maintained, so they do not
render in JupyterLab 4 / ipywidgets 8. ``anywidget`` is already a dependency (Plotly's
``FigureWidget`` needs it), works in JupyterLab 4, Notebook 7, VS Code, Colab and
Voila, and needs no extension of its own: the front end is one ES module
(``static/webcam.js``) that calls ``navigator.mediaDevices.getUserMedia``.

Pictures travel as custom widget messages whose binary buffer is the encoded frame
(JPEG by default), so no picture is kept in a synced trait and nothing is re-sent when
a notebook is reopened. ``streaming=True`` sends a frame every ``interval_ms``
milliseconds (a new one only after the previous one went out) for live predictions.

Holding *Capture* down records a burst: a picture at once, then :data:`BURST_RATE` per
second until the button is released or the pointer leaves it. Each frame of a burst is a
capture that carries the burst's number (:attr:`Frame.burst`); a burst ends after
``burst_max`` frames (:data:`BURST_MAX_FRAMES` by default) in the browser, and Python
drops any frame of a burst beyond that and tells the browser to stop, so a stuck button
cannot fill the disk.

Browsers give pages the camera only over https or on ``localhost``, after the user
allows it; a refusal shows in the widget and in :attr:`Webcam.error`.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anywidget
import traitlets
from PIL import Image

from ..core.images import load_image

_STATIC = Path(__file__).with_name("static")
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}

#: Frames per second recorded while Capture is held down.
BURST_RATE = 4.0
#: The most frames one burst records (50 seconds of holding at :data:`BURST_RATE`).
BURST_MAX_FRAMES = 200


@dataclass(frozen=True)
class Frame:
    """One picture from the camera.

    Attributes:
        data: the encoded picture (JPEG, PNG or WebP bytes).
        mime: its type, e.g. ``"image/jpeg"``.
        width: width in pixels.
        height: height in pixels.
        kind: ``"capture"`` (the user pressed Capture, or :meth:`Webcam.capture`) or
            ``"stream"`` (a frame of the live stream).
        time: when it arrived (``time.time()``).
        burst: for a capture made by pressing Capture, the number of that press (1, 2, ...):
            every frame recorded while the button is held has the same number; 0 otherwise.
    """

    data: bytes
    mime: str = "image/jpeg"
    width: int = 0
    height: int = 0
    kind: str = "capture"
    time: float = field(default_factory=time.time)
    burst: int = 0

    @property
    def extension(self) -> str:
        """File extension matching :attr:`mime` (``".jpg"``, ``".png"``, ...)."""
        return _EXTENSIONS.get(self.mime, ".jpg")

    def image(self) -> Image.Image:
        """The picture as an RGB PIL image."""
        with Image.open(io.BytesIO(self.data)) as im:
            im.load()
            return load_image(im)


class Webcam(anywidget.AnyWidget):
    """Live camera view with a Capture button; pictures arrive in Python as :class:`Frame`.

    Example:
        >>> cam = Webcam()
        >>> cam.on_capture(lambda frame: frame.image().save("me.jpg"))  # doctest: +SKIP
        >>> cam  # shows the camera; press "Start camera", then "Capture"  # doctest: +SKIP

    Args:
        **kwargs: initial trait values (``streaming``, ``interval_ms``, ``max_size``, ...).
    """

    _esm = _STATIC / "webcam.js"
    _css = _STATIC / "webcam.css"

    streaming = traitlets.Bool(False, help="send a frame every interval_ms while the camera runs").tag(sync=True)
    interval_ms = traitlets.Int(500, help="milliseconds between streamed frames (at least 50)").tag(sync=True)
    max_size = traitlets.Int(640, help="longest side of sent pictures, in pixels").tag(sync=True)
    format = traitlets.Enum(("image/jpeg", "image/png", "image/webp"), "image/jpeg").tag(sync=True)
    quality = traitlets.Float(0.9, help="JPEG/WebP quality, 0 to 1").tag(sync=True)
    width = traitlets.Int(320, help="displayed width of the video, in pixels").tag(sync=True)
    mirror = traitlets.Bool(True, help="show the video mirrored, like a mirror (pictures are not)").tag(sync=True)
    autostart = traitlets.Bool(False, help="ask for the camera as soon as the widget shows").tag(sync=True)
    capture_label = traitlets.Unicode("Capture").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)
    burst_rate = traitlets.Float(BURST_RATE, help="frames per second while Capture is held (0: one per press)").tag(
        sync=True
    )
    burst_max = traitlets.Int(BURST_MAX_FRAMES, help="the most frames one held press records").tag(sync=True)
    active = traitlets.Bool(False, help="the camera runs (set by the browser)").tag(sync=True)
    error = traitlets.Unicode("", help="why the camera could not start (set by the browser)").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("tlw-webcam-widget")
        self.last_frame: Frame | None = None
        self.frames_received = 0
        self.burst = 0  # number of the latest burst, and how many of its frames were passed on
        self.burst_frames = 0
        self._callbacks: dict[str, list[Callable[..., Any]]] = {"capture": [], "stream": [], "burst_end": []}
        self.on_msg(self._on_front_end_msg)

    @traitlets.validate("interval_ms")
    def _valid_interval(self, proposal: dict) -> int:
        value = int(proposal["value"])
        if value < 50:
            raise traitlets.TraitError(f"interval_ms={value} is too short: use 50 milliseconds or more.")
        return value

    @traitlets.validate("quality")
    def _valid_quality(self, proposal: dict) -> float:
        value = float(proposal["value"])
        if not 0.0 < value <= 1.0:
            raise traitlets.TraitError(f"quality={value} must be above 0 and at most 1.")
        return value

    @traitlets.validate("burst_rate")
    def _valid_burst_rate(self, proposal: dict) -> float:
        value = float(proposal["value"])
        if not 0.0 <= value <= 10.0:
            raise traitlets.TraitError(f"burst_rate={value} must be from 0 (one picture per press) to 10 per second.")
        return value

    @traitlets.validate("burst_max")
    def _valid_burst_max(self, proposal: dict) -> int:
        value = int(proposal["value"])
        if not 1 <= value <= 1000:
            raise traitlets.TraitError(f"burst_max={value} must be a whole number from 1 to 1,000.")
        return value

    # ------------------------------------------------------------------ subscriptions
    def on_capture(self, callback: Callable[[Frame], Any], remove: bool = False) -> None:
        """Call ``callback(frame)`` for every captured picture (Capture button or :meth:`capture`)."""
        self._subscribe("capture", callback, remove)

    def on_frame(self, callback: Callable[[Frame], Any], remove: bool = False) -> None:
        """Call ``callback(frame)`` for every streamed frame (while ``streaming`` is on)."""
        self._subscribe("stream", callback, remove)

    def on_burst_end(self, callback: Callable[[int], Any], remove: bool = False) -> None:
        """Call ``callback(burst)`` when Capture is released after burst number ``burst``."""
        self._subscribe("burst_end", callback, remove)

    def _subscribe(self, kind: str, callback: Callable[..., Any], remove: bool) -> None:
        callbacks = self._callbacks[kind]
        if remove:
            if callback in callbacks:
                callbacks.remove(callback)
        elif callback not in callbacks:
            callbacks.append(callback)

    # ------------------------------------------------------------------ commands
    def capture(self) -> None:
        """Ask the browser for a picture (it starts the camera first if needed)."""
        self.send({"type": "capture"})

    def start(self) -> None:
        """Ask the browser to start the camera (the user may have to allow it)."""
        self.send({"type": "start"})

    def stop(self) -> None:
        """Stop the camera in the browser (its light goes off)."""
        self.send({"type": "stop"})

    def stop_burst(self) -> None:
        """End the burst being recorded in the browser, as if Capture had been released."""
        self.send({"type": "stop-burst"})

    # ------------------------------------------------------------------ messages
    def _on_front_end_msg(self, _widget: Any, content: dict, buffers: list[Any]) -> None:
        if not isinstance(content, dict):
            return
        if content.get("type") == "burst-end":
            burst = _whole(content.get("burst"))
            if burst:
                for callback in list(self._callbacks["burst_end"]):
                    callback(burst)
            return
        if content.get("type") != "frame" or not buffers:
            return
        kind = "stream" if content.get("kind") == "stream" else "capture"
        frame = Frame(
            data=bytes(buffers[0]),
            mime=str(content.get("mime") or "image/jpeg"),
            width=_whole(content.get("width")),
            height=_whole(content.get("height")),
            kind=kind,
            burst=_whole(content.get("burst")) if kind == "capture" else 0,
        )
        self.receive(frame)

    def receive(self, frame: Frame) -> None:
        """Hand ``frame`` to the subscribers, as if the browser had sent it.

        A frame of a burst that already passed on ``burst_max`` frames is dropped, and the
        browser is told to stop that burst.
        """
        if frame.burst:
            if frame.burst != self.burst:
                self.burst, self.burst_frames = frame.burst, 0
            if self.burst_frames >= self.burst_max:
                if self.burst_frames == self.burst_max:
                    self.burst_frames += 1  # tell the browser once
                    self.stop_burst()
                return
            self.burst_frames += 1
        self.last_frame = frame
        self.frames_received += 1
        for callback in list(self._callbacks[frame.kind]):
            callback(frame)


def _whole(value: Any) -> int:
    """A count or size from the front end: a whole number of at least 0, else 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return max(0, min(int(value), 2**31))
