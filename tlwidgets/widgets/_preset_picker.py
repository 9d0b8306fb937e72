"""The training panel's recipe picker: Quick / Better / Best / Custom, and a line on the chosen one.

The line says what the recipe does and how long it should take on this machine (from
:func:`tlwidgets.core.presets.estimate_preset_seconds`), or what is missing to tell.
Freezing set by hand (Layers tab, code) turns the picker to Custom, so Train uses it.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as widgets

from ..core import presets
from ..core.session import Session
from ..core.status import Status
from ._training_options import DESC


def about(seconds: float) -> str:
    """A rounded duration in words: ``"about 40 s"``, ``"about 3 min"``, ``"about 1 h 20 min"``."""
    if seconds < 10:
        return f"about {max(round(seconds), 1)} s"
    if seconds < 60:
        return f"about {5 * round(seconds / 5)} s"
    minutes = round(seconds / 60)
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60} min"


class PresetPicker:
    """The recipe toggle and its information line, over a session.

    Args:
        session: the shared session.
        running: tells whether a run lasts (the line is then left as it is until the run ends).

    Attributes:
        preset: the recipe, Quick / Better / Best (``tlw-preset``).
        preset_info: what the recipe does and how long it should take on this machine, or
            what is missing to tell (``tlw-preset-info``).
    """

    def __init__(self, session: Session, running: Callable[[], bool]) -> None:
        self.session = session
        self._running = running
        self.preset = widgets.ToggleButtons(
            options=list(presets.PRESETS), value="Quick", description="Recipe", style=DESC,
            tooltips=list(presets.PRESETS.values()))
        self.preset.add_class("tlw-preset")
        self.preset.observe(self._on_preset_change, names="value")
        self.preset_info = widgets.HTML("")
        self.preset_info.add_class("tlw-preset-info")

    def show_info(self) -> None:
        """Redraw the line on the chosen recipe (not while a run lasts)."""
        if self._running():  # the run changes freezing and options: redraw once it ends
            return
        s, name = self.session, self.preset.value
        missing = [what for what, gone in (("a model", s.model is None), ("images", s.data is None)) if gone]
        if missing:
            estimate = f"Load {' and '.join(missing)} to see how long it takes."
        else:
            try:
                estimate = f"Time on this machine: {about(presets.estimate_preset_seconds(s, name))}."
            except Exception as exc:  # noqa: BLE001 - the estimate must never block training
                estimate = f"No time estimate ({exc})."
        self.preset_info.value = (f"<b>{html.escape(name)}</b>: {html.escape(presets.PRESETS[name])} "
                                  f"<span style='color:#555'>{html.escape(estimate)}</span>")

    def _on_preset_change(self, change: dict) -> None:
        self.show_info()

    def on_inputs_change(self, change: dict) -> None:
        """The model, data, image size or options changed: the estimate too."""
        self.show_info()

    def on_freezing_change(self, change: dict) -> None:
        """Freezing set by hand (Layers tab, code) makes Train use it: the recipe becomes Custom."""
        s = self.session
        if self._running() or s.status != Status.IDLE or s.model is None or s.head is None:
            return
        head = s.head.path
        beyond_head = any(p.requires_grad and not (n == head or n.startswith(head + "."))
                          for n, p in s.model.named_parameters())
        if beyond_head or s.lr_factors:
            self.preset.value = "Custom"
