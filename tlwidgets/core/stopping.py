"""When to stop training, and which weights to keep: the automatic recipe of ``fit()``.

With the frozen layers' features cached, an epoch of the head costs milliseconds, so a
fixed small number of epochs leaves the head under-trained for no saving. ``epochs="auto"``
(the default of :meth:`~tlwidgets.core.session.Session.fit`) trains instead until the
validation loss stops improving:

- a budget of optimizer *steps*, not epochs, so 60 and 60,000 images both train
  properly: at least :data:`MIN_STEPS`, at most :data:`MAX_STEPS` (fewer when every epoch
  is a full pass through the network, which costs seconds, not milliseconds);
- :class:`EarlyStopping` after ``patience`` epochs without a better validation loss
  (half as many, at least 3, for full passes);
- :class:`KeepBest` puts back the weights of the epoch with the lowest validation loss
  (Keras' ``restore_best_weights``, Hugging Face's ``load_best_model_at_end``);
- the learning rate is divided by 5 when the validation loss stalls for ``patience // 2``
  epochs (torch's ``ReduceLROnPlateau``), so the last epochs settle instead of bouncing.

Without validation images there is nothing to stop on: the recipe trains for a fixed
budget that is safe for the data size (:func:`budget`) and says so.

The learning rate itself is a fixed default (Adam at 3e-3, label smoothing 0.1) rather
than a range test: on cached features a range test is cheap, but its suggestion moves
with the noise of the loss curve, while these defaults with early stopping came within
two points of the best setting of a 20-point grid on every data set measured
(``benchmarks/bench_defaults.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .callbacks import Callback, History, put_back, snapshot

if TYPE_CHECKING:
    from .training import Trainer

#: Fewest optimizer steps an automatic run takes before early stopping may end it.
MIN_STEPS = 100
#: Most optimizer steps of an automatic run on cached features.
MAX_STEPS = 4000
#: Most epochs of an automatic run that makes full passes (every epoch runs the network).
MAX_FULL_PASS_EPOCHS = 30
#: Steps of an automatic run with no validation images (no early stopping possible).
NO_VAL_STEPS = 600


@dataclass(frozen=True)
class Budget:
    """The epochs an automatic run may take: at least ``min_epochs``, at most ``max_epochs``."""

    min_epochs: int
    max_epochs: int
    early_stopping: bool
    note: str = ""


def budget(steps_per_epoch: int, cached: bool, has_val: bool) -> Budget:
    """Epoch limits of ``epochs="auto"`` for ``steps_per_epoch`` optimizer steps per epoch.

    Args:
        cached: epochs train on cached features (cheap) rather than full passes.
        has_val: there are validation images to stop on.
    """
    steps = max(int(steps_per_epoch), 1)
    full_cap = MAX_FULL_PASS_EPOCHS if not cached else 10**6
    if not has_val:
        epochs = min(max(math.ceil(NO_VAL_STEPS / steps), 3), 100, full_cap if cached else 10)
        return Budget(epochs, epochs, False,
                      f"No validation images, so no early stopping: trained a fixed {epochs} epochs "
                      f"({epochs * steps} steps), a budget safe for this data size.")
    most = min(max(math.ceil(MAX_STEPS / steps), 10), 500, full_cap)
    least = min(max(math.ceil(MIN_STEPS / steps), 3), most)
    return Budget(least, most, True)


def _better(value: float, best: float, min_delta: float) -> bool:
    return math.isfinite(value) and (not math.isfinite(best) or value < best - min_delta * abs(best))


class EarlyStopping(Callback):
    """Stops the fit after ``patience`` epochs without a lower ``monitor`` (Keras-style).

    Args:
        monitor: the epoch log to watch (lower is better): ``"val_loss"`` or ``"loss"``.
        patience: epochs without improvement before stopping.
        min_epochs: never stop before this epoch.
        min_delta: relative improvement that counts (1e-3 = 0.1%).

    Attributes:
        stopped_epoch: the epoch it stopped the fit at (0 when it did not).
        best_epoch: the epoch with the lowest value.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_epochs: int = 1,
                 min_delta: float = 1e-3) -> None:
        self.monitor, self.patience, self.min_epochs, self.min_delta = monitor, int(patience), int(min_epochs), min_delta
        self.best, self.best_epoch, self.wait, self.stopped_epoch = math.inf, 0, 0, 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.best, self.best_epoch, self.wait, self.stopped_epoch = math.inf, 0, 0, 0

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        value = float(logs.get(self.monitor, math.nan))
        if _better(value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return
        self.wait += 1
        if self.wait >= self.patience and epoch >= self.min_epochs:
            self.stopped_epoch = epoch
            trainer.stop_training = True
            trainer.notes.append(f"Stopped at epoch {epoch}: {self.monitor.replace('_', ' ')} had not "
                                 f"improved for {self.wait} epochs.")


class KeepBest(Callback):
    """At the end of a fit, puts back the weights of the epoch with the lowest ``monitor``.

    Runs at ``on_fit_end``, so a run stopped with Stop also keeps its best epoch. The
    weights are copied (trainable parameters and buffers) only when an epoch improves.

    Attributes:
        best_epoch: the epoch whose weights were kept (0 before any epoch ended).
        restored: whether the final weights were replaced by the best epoch's.
    """

    def __init__(self, monitor: str = "val_loss") -> None:
        self.monitor = monitor
        self.best, self.best_epoch, self.restored = math.inf, 0, False
        self._saved: dict[str, torch.Tensor] = {}
        self._last_epoch = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.best, self.best_epoch, self.restored, self._saved, self._last_epoch = math.inf, 0, False, {}, 0

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        self._last_epoch = epoch
        value = float(logs.get(self.monitor, math.nan))
        if _better(value, self.best, 0.0):
            self.best, self.best_epoch = value, epoch
            self._saved = snapshot(trainer.model)

    def on_fit_end(self, trainer: Trainer, history: History) -> None:
        if self._saved and self.best_epoch != self._last_epoch:
            put_back(trainer.model, self._saved)
            self.restored = True
            history.best_epoch = self.best_epoch
            trainer.notes.append(f"Restored epoch {self.best_epoch} (lowest {self.monitor.replace('_', ' ')}).")
        elif self.best_epoch:
            history.best_epoch = self.best_epoch
        self._saved = {}


class PlateauLR(Callback):
    """Divides every group's learning rate by ``1 / factor`` when ``monitor`` stalls (torch's ReduceLROnPlateau)."""

    def __init__(self, monitor: str = "val_loss", patience: int = 2, factor: float = 0.2) -> None:
        self.monitor, self.patience, self.factor = monitor, patience, factor
        self._scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        self._scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            trainer.optimizer, mode="min", factor=self.factor, patience=self.patience, threshold=1e-3)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        value = float(logs.get(self.monitor, math.nan))
        if self._scheduler is not None and math.isfinite(value):
            self._scheduler.step(value)
