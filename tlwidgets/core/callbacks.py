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

import math

import pandas as pd
import torch
from torch import nn

from .errors import ConfigError, TrainingError

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
            raise ConfigError(f"Unknown callback hook(s) {', '.join(unknown)}; use {', '.join(_HOOKS)}.")
        for name, fn in hooks.items():
            setattr(self, name, fn)


@dataclass
class History:
    """What one or more fits recorded: per-batch and per-epoch log dicts."""

    batches: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    stopped: bool = False
    config: dict = field(default_factory=dict)
    #: the epoch whose weights the model holds when a fit kept its best epoch, else None
    best_epoch: int | None = None
    #: decisions the fit took, in words (early stop, restored epoch, class weights, budget)
    notes: list[str] = field(default_factory=list)

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
            best_epoch=None if other.best_epoch is None else other.best_epoch + epoch0,
            notes=[*self.notes, *other.notes],
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


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of what training can change: trainable parameters and every buffer."""
    out = {f"p:{n}": p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    out.update({f"b:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return out


def put_back(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Copy a :func:`snapshot` back into ``model`` in place (the optimizer keeps its tensors).

    Tensors that did not change are not written, so frozen layers keep their in-place
    version and the feature cache keyed on it stays valid.
    """
    live = {f"p:{n}": p for n, p in model.named_parameters()}
    live.update({f"b:{n}": b for n, b in model.named_buffers()})
    with torch.no_grad():
        for key, value in saved.items():
            if key in live and not torch.equal(live[key], value):
                live[key].copy_(value)


def _all_finite(model: nn.Module) -> bool:
    tensors = [p for p in model.parameters() if p.requires_grad]
    tensors += [b for b in model.buffers() if b.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class FiniteGuard(Callback):
    """Keeps the weights of the last epoch that ended finite, and puts them back on divergence.

    A learning rate far too high can grow the weights to 1e18 while the loss stays
    finite for a while, or drive a BatchNorm statistic to infinity; predictions of such
    a model are NaN. An epoch *diverged* when its loss or validation loss is not finite
    or exceeds ``100 * ln(classes)`` (a hundred times a uniform guess's loss, which no
    sane run reaches), or when a weight or buffer is not finite. The fit then stops with a
    :class:`~tlwidgets.core.errors.TrainingError` that says which weights were put back.
    """

    def __init__(self) -> None:
        self._saved: dict[str, torch.Tensor] = {}
        self._label = ""

    def on_fit_start(self, trainer: Trainer) -> None:
        self._saved, self._label = snapshot(trainer.model), "the start of this fit"

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        classes = getattr(trainer, "num_classes", None) or 2
        limit = 100 * max(math.log(classes), 1.0)
        losses = [logs.get("loss"), logs.get("val_loss")]
        bad = [v for v in losses if v is not None and not math.isnan(v) and not v <= limit]
        if logs.get("loss") is not None and math.isnan(logs["loss"]):
            bad.append(logs["loss"])
        if bad or not _all_finite(trainer.model):
            shown = f"reached {bad[0]:.3g}" if bad else "left weights that are not finite numbers"
            raise TrainingError(f"the training diverged in epoch {epoch}: its loss {shown}; "
                                f"{trainer.divergence_advice()}")
        self._saved, self._label = snapshot(trainer.model), f"epoch {epoch}"

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None:
        # A NaN loss from bad input leaves the weights of the last good step, which are
        # fine; weights that are not finite, or grew a hundredfold since the snapshot
        # (a learning rate far too high), go back to the snapshot.
        if not self._saved or (_all_finite(trainer.model) and not self._grew(trainer.model)):
            return
        put_back(trainer.model, self._saved)
        if isinstance(exc, TrainingError) and exc.args:
            exc.args = (f"{exc.args[0]} The weights were put back to those of {self._label}.", *exc.args[1:])

    def _grew(self, model: nn.Module) -> bool:
        saved = [t for k, t in self._saved.items() if k.startswith("p:")]
        live = [p for p in model.parameters() if p.requires_grad]
        before = max((float(t.abs().max()) for t in saved if t.numel()), default=0.0)
        now = max((float(p.detach().abs().max()) for p in live if p.numel()), default=0.0)
        return now > 100 * max(before, 1.0)

    def on_fit_end(self, trainer: Trainer, history: History) -> None:
        self._saved = {}
