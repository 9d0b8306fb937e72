"""Training events and records: the Callback hooks, the History of a fit, and the BufferGuard.

The loop (:mod:`tlwidgets.core.training`) calls the hooks; live views and recorders
subscribe through them. ``Callback`` and ``History`` are also importable from
``tlwidgets.core.training``. Every trainer holds a :class:`BufferGuard` first among its
callbacks, so a failed step never leaves half-updated BatchNorm statistics behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

if TYPE_CHECKING:
    from tlwidgets.core.training import Trainer

BATCH_COLUMNS = ("epoch", "batch", "step", "loss", "acc", "lr", "images_per_s")
EPOCH_COLUMNS = ("epoch", "loss", "acc", "val_loss", "val_acc", "lr", "time_s",
                 "data_images_per_s", "feature_images_per_s", "compute_images_per_s")


class Callback:
    """Base class of training observers; every hook is a no-op."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once before the first epoch."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Called before the first batch of ``epoch`` (1-based)."""

    def on_batch_end(self, trainer: Trainer, batch: int, logs: dict) -> None:
        """Called after each optimizer step; ``logs`` holds loss, acc, lr, epoch, batch, step, images_per_s."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        """Called after validation; ``logs`` holds loss, acc, val_loss, val_acc, lr, epoch, time_s, and
        data_images_per_s, feature_images_per_s, compute_images_per_s (None when nothing ran)."""

    def on_fit_end(self, trainer: Trainer, history: History) -> None:
        """Called once at the end, also after a stop or an error."""

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None:
        """Called when training raises, before the exception propagates."""


_HOOKS = ("on_fit_start", "on_epoch_start", "on_batch_end", "on_epoch_end", "on_fit_end", "on_exception")


class LambdaCallback(Callback):
    """A callback made of functions: ``LambdaCallback(on_batch_end=lambda trainer, batch, logs: ...)``."""

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        unknown = sorted(set(hooks) - set(_HOOKS))
        if unknown:
            raise ValueError(f"Unknown callback hook(s) {', '.join(unknown)}; use {', '.join(_HOOKS)}.")
        for name, fn in hooks.items():
            setattr(self, name, fn)


@dataclass
class History:
    """What one or more fits recorded: per-batch and per-epoch log dicts."""

    batches: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    stopped: bool = False
    config: dict = field(default_factory=dict)

    def batch_frame(self) -> pd.DataFrame:
        """Per-batch logs as a DataFrame (columns even when empty)."""
        return pd.DataFrame.from_records(self.batches, columns=list(BATCH_COLUMNS))

    def epoch_frame(self) -> pd.DataFrame:
        """Per-epoch logs as a DataFrame (columns even when empty)."""
        return pd.DataFrame.from_records(self.epochs, columns=list(EPOCH_COLUMNS))

    def extend(self, other: History) -> History:
        """A new History: this one followed by ``other`` with epochs and steps renumbered."""
        epoch0 = self.epochs[-1]["epoch"] if self.epochs else 0
        step0 = self.batches[-1]["step"] if self.batches else 0
        batches = [dict(b, epoch=b["epoch"] + epoch0, step=b["step"] + step0) for b in other.batches]
        epochs = [dict(e, epoch=e["epoch"] + epoch0) for e in other.epochs]
        return History(
            batches=[dict(b) for b in self.batches] + batches,
            epochs=[dict(e) for e in self.epochs] + epochs,
            stopped=other.stopped,
            config=dict(other.config),
        )


class BufferGuard(Callback):
    """Puts back the buffers (BatchNorm statistics) of the last completed step when a fit fails.

    Only modules in training mode change their buffers, so only theirs are copied; a
    frozen backbone whose BatchNorm layers run in eval mode costs nothing.
    """

    def __init__(self) -> None:
        self._live: list[torch.Tensor] = []
        self._saved: list[torch.Tensor] = []

    def _watch(self, model: nn.Module) -> None:
        self._live = [b for m in model.modules() if m.training for b in m.buffers(recurse=False)]
        self._saved = [b.detach().clone() for b in self._live]

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self._watch(trainer.model)

    def on_batch_end(self, trainer: Trainer, batch: int, logs: dict) -> None:
        with torch.no_grad():
            for saved, live in zip(self._saved, self._live):
                saved.copy_(live)

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None:
        with torch.no_grad():
            for saved, live in zip(self._saved, self._live):
                live.copy_(saved)

    def on_fit_end(self, trainer: Trainer, history: History) -> None:
        self._live, self._saved = [], []
