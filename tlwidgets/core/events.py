"""Training events a session passes on to its subscribers (panels, scripts, notebooks).

A :class:`Session` owns one :class:`Events`. Every fit adds an :class:`EventsCallback` to the
trainer, which forwards the trainer's hooks to the session's subscribers: ``on_epoch_end``
and friends on the session are the public way to subscribe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from . import training

from .errors import ConfigError

NAMES = ("fit_start", "epoch_start", "batch_end", "epoch_end", "fit_end", "exception")


class Events:
    """Subscriber lists, one per event name in :data:`NAMES`; each callback is held once."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[..., Any]]] = {name: [] for name in NAMES}

    def subscribe(self, event: str, callback: Callable[..., Any], remove: bool = False) -> None:
        """Add ``callback`` to ``event`` (or take it off with ``remove=True``)."""
        if event not in self._subscribers:
            raise ConfigError(f"Unknown event {event!r}: use one of {', '.join(NAMES)}.")
        subs = self._subscribers[event]
        if remove:
            with contextlib.suppress(ValueError):
                subs.remove(callback)
        elif callback not in subs:
            subs.append(callback)

    def clear(self, event: str) -> None:
        """Remove every subscriber of ``event``."""
        self._subscribers[event].clear()

    def emit(self, event: str, *args: Any) -> None:
        """Call every subscriber of ``event`` with ``args``, in subscription order."""
        for callback in list(self._subscribers[event]):
            callback(*args)


class EventsCallback(training.Callback):
    """Forwards a trainer's hooks to an :class:`Events`."""

    def __init__(self, events: Events) -> None:
        self._events = events

    def on_fit_start(self, trainer: training.Trainer) -> None:
        self._events.emit("fit_start", trainer)

    def on_epoch_start(self, trainer: training.Trainer, epoch: int) -> None:
        self._events.emit("epoch_start", epoch)

    def on_batch_end(self, trainer: training.Trainer, batch: int, logs: dict) -> None:
        self._events.emit("batch_end", logs)

    def on_epoch_end(self, trainer: training.Trainer, epoch: int, logs: dict) -> None:
        self._events.emit("epoch_end", logs)

    def on_fit_end(self, trainer: training.Trainer, history: training.History) -> None:
        self._events.emit("fit_end", history)

    def on_exception(self, trainer: training.Trainer, exc: BaseException) -> None:
        self._events.emit("exception", exc)
