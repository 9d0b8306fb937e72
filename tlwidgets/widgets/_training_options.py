"""The training panel's options form, bound both ways to ``session.config``.

Each change of a box goes to ``session.configure`` (a value it refuses is shown in plain
words and the box goes back to the valid one); each change of ``session.config`` shows in
the boxes. The Auto epochs checkbox chooses ``epochs="auto"``; the Epochs box then keeps
the last number chosen, for when Auto is unticked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from ..core.errors import ConfigError
from ..core.session import Session
from ..core.training import OPTIMIZERS, SCHEDULES

DESC = {"description_width": "110px"}


class TrainingOptions:
    """Auto epochs, epochs, batch size, optimizer, learning rate, schedule, weight decay, label smoothing.

    Args:
        session: the shared session.
        on_error: shows an exception (the owning panel's error area).
        on_clear_error: hides it again.

    Attributes:
        auto_epochs: Checkbox (``tlw-opt-auto-epochs``).
        epochs, batch_size, optimizer, lr, schedule, weight_decay, label_smoothing: the option
            widgets (``tlw-opt-epochs``, ``tlw-opt-batch-size``, ...).
        options: those widgets by option name, in that order.
    """

    def __init__(self, session: Session, on_error: Callable[[BaseException], Any],
                 on_clear_error: Callable[[], Any]) -> None:
        self.session = session
        self._on_error = on_error
        self._on_clear_error = on_clear_error
        self._syncing = False
        self.auto_epochs = widgets.Checkbox(
            value=True, description="Auto epochs: until the validation loss stops improving, keep the best",
            indent=False, layout=widgets.Layout(width="auto"))
        self.auto_epochs.add_class("tlw-opt-auto-epochs")
        self.auto_epochs.observe(self._on_auto_epochs, names="value")
        # Plain boxes, not bounded ones: a value out of range gets a message in plain words from
        # the session's own check, instead of being silently clamped.
        self._epochs_number = 20
        self.epochs = widgets.IntText(value=20, description="Epochs", style=DESC)
        self.batch_size = widgets.BoundedIntText(description="Batch size", min=1, max=4096, style=DESC)
        self.optimizer = widgets.Dropdown(description="Optimizer", options=list(OPTIMIZERS), style=DESC)
        self.lr = widgets.Text(description="Learning rate", placeholder="e.g. 3e-3", continuous_update=False,
                               style=DESC)
        self.schedule = widgets.Dropdown(description="LR schedule", options=list(SCHEDULES), style=DESC)
        self.weight_decay = widgets.BoundedFloatText(
            description="Weight decay", min=0.0, max=1.0, step=1e-4, style=DESC
        )
        self.label_smoothing = widgets.BoundedFloatText(
            description="Label smoothing", min=0.0, max=0.99, step=0.05, style=DESC
        )
        self.options = {
            "epochs": self.epochs, "batch_size": self.batch_size, "optimizer": self.optimizer, "lr": self.lr,
            "schedule": self.schedule, "weight_decay": self.weight_decay, "label_smoothing": self.label_smoothing,
        }
        for name, widget in self.options.items():
            widget.add_class(f"tlw-opt-{name.replace('_', '-')}")
            widget.observe(self._on_option_change, names="value")

    def rows(self) -> tuple[widgets.Widget, widgets.Widget]:
        """The Auto epochs line, then the options in two columns."""
        names = list(self.options)
        return (self.auto_epochs,
                widgets.HBox([widgets.VBox([self.options[n] for n in names[:4]]),
                              widgets.VBox([self.options[n] for n in names[4:]])]))

    def set_running(self, running: bool) -> None:
        """Options cannot change while a run lasts."""
        for widget in self.options.values():
            widget.disabled = running

    def show(self) -> None:
        """Show ``session.config`` in the boxes."""
        config = self.session.config
        self._syncing = True
        try:
            for name, widget in self.options.items():
                value = getattr(config, name)
                if name == "epochs":
                    self.auto_epochs.value = value == "auto"
                    widget.disabled = value == "auto"
                    if value == "auto":  # the box keeps the last number chosen, for when Auto is unticked
                        widget.value = self._epochs_number
                        continue
                    self._epochs_number = value
                widget.value = f"{value:g}" if name == "lr" else value
        finally:
            self._syncing = False

    def _on_auto_epochs(self, change: dict) -> None:
        if self._syncing:
            return
        self.session.configure(epochs="auto" if change["new"] else int(self.epochs.value))

    def _on_option_change(self, change: dict) -> None:
        try:
            self._configure(change)
        except Exception as exc:  # noqa: BLE001 - a handler must never raise into the front end
            self._on_error(exc)

    def _configure(self, change: dict) -> None:
        if self._syncing:
            return
        name = next(n for n, w in self.options.items() if w is change["owner"])
        try:
            self.session.configure(**{name: number(change["new"], "learning rate") if name == "lr" else change["new"]})
        except Exception:
            self.show()  # back to the valid value
            raise
        self._on_clear_error()


def number(text: Any, what: str) -> float:
    """A number typed into a text box; ConfigError in plain words when it is not one."""
    try:
        return float(str(text).strip())
    except ValueError:
        raise ConfigError(f"The {what} {str(text).strip()!r} is not a number: type one such as 3e-3 or 0.001.") from None
