"""The DataCollector's live preview: webcam frames (or the last upload) classified as they come.

Once the session's model predicts exactly the collector's classes, *Live preview* turns
the webcam's streaming on and classifies its frames at most every ``preview_interval``
seconds, in a background thread (``_live_preview.LatestOnly``) that always takes the
newest frame and drops the rest. Without a fitting model it says what is missing.
"""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING, Any

import pandas as pd
from PIL import Image

from ..core.status import Status
from ._live_preview import top_k_html
from .webcam import Frame

if TYPE_CHECKING:
    from ..core.session import Session
    from ._live_preview import LatestOnly
    from .webcam import Webcam


def _hint(text: str, colour: str = "#666") -> str:
    return f"<span style='color:{colour}'>{html.escape(text)}</span>"


class LivePreviewMixin:
    """The DataCollector's live-preview methods (its widgets and worker are made by the panel)."""

    session: Session
    webcam: Webcam | None
    live_preview: Any  # ToggleButton
    predictions: Any  # HTML
    preview_worker: LatestOnly
    preview_interval: float
    classes: list[str]

    if TYPE_CHECKING:  # the panel's own

        def preview_blocker(self) -> str | None: ...
        def model_matches(self) -> bool: ...
        def _update_controls(self) -> None: ...

    def classify(self, image: Image.Image | str | os.PathLike[str], k: int = 3) -> pd.DataFrame | None:
        """Top-``k`` classes of ``image`` drawn as bars in ``predictions``; ``None`` when no model fits."""
        blocker = self.preview_blocker()
        if blocker is not None:
            self.predictions.value = _hint(
                f"The model does not predict these classes ({', '.join(self.classes) or 'none yet'}): {blocker}",
                "#a60",
            )
            return None
        if self.session.status != Status.IDLE:
            self.predictions.value = _hint("Paused while training runs.", "#a60")
            return None
        frame = self.session.predict(image, k=k)
        note = "" if self.session.history is not None else "(the new head is not trained yet)"
        self.predictions.value = top_k_html(frame, note)
        return frame

    def submit_preview(self, image: Image.Image | Frame) -> None:
        """Queue a picture (or a webcam frame) for the live preview; only the newest waiting one is classified."""
        self.preview_worker.submit(image)

    def _classify_item(self, item: Image.Image | Frame) -> None:
        self.classify(item.image() if isinstance(item, Frame) else item)

    def _on_stream_frame(self, frame: Frame) -> None:
        if self.live_preview.value:
            self.submit_preview(frame)  # decoded by the preview thread, and only if it is still the newest

    def _on_live_preview(self, change: dict) -> None:
        if change["new"]:
            self.preview_worker.interval = self.preview_interval
            self.preview_worker.start()
            if self.webcam is not None:
                self.webcam.streaming = True
                self.webcam.interval_ms = max(50, int(self.preview_interval * 1000))
            if not self.model_matches():
                self.classify(Image.new("RGB", (8, 8)))  # shows why nothing will be classified
            elif self.webcam is None or not self.webcam.active:
                self.predictions.value = _hint("Start the camera, or upload a picture.")
        else:
            self.preview_worker.stop()
            if self.webcam is not None:
                self.webcam.streaming = False
            self._update_controls()
