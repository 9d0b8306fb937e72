"""Training recipes on a Session: the learning-rate range test and two-phase fine-tuning.

:func:`lr_find` raises the learning rate exponentially batch by batch and records the
loss (Smith, "Cyclical Learning Rates", 2017; fastai's ``lr_find``), then puts every
weight back exactly. :func:`fine_tune` follows fastai's ``fine_tune``: train the new
head on a frozen backbone, then unfreeze and train everything with learning rates that
grow from the first stage to the head.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from tlwidgets.core import training
from tlwidgets.core.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    from tlwidgets.core.session import Session


@dataclasses.dataclass
class LRFinderResult:
    """What :func:`lr_find` measured; unpacks as ``frame, suggestion``.

    Attributes:
        frame: one row per batch: ``lr``, ``loss`` (smoothed) and ``raw_loss``.
        suggestion: a learning rate inside the longest stretch where the loss falls.
    """

    frame: pd.DataFrame
    suggestion: float

    def __iter__(self) -> Iterator[Any]:
        return iter((self.frame, self.suggestion))


class _Sweep(training.Callback):
    """Sets an exponentially growing LR before every step; stops when the loss diverges."""

    def __init__(self, start_lr: float, end_lr: float, num_it: int, stop_div: bool) -> None:
        self.start_lr, self.end_lr, self.num_it, self.stop_div = start_lr, end_lr, num_it, stop_div
        self.rows: list[dict] = []
        self._avg, self._best = 0.0, math.inf

    def lr_at(self, i: int) -> float:
        return self.start_lr * (self.end_lr / self.start_lr) ** (i / max(self.num_it - 1, 1))

    def _set_lr(self, trainer: training.Trainer, lr: float) -> None:
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_factor", 1.0)

    def on_fit_start(self, trainer: training.Trainer) -> None:
        self._set_lr(trainer, self.lr_at(0))

    def on_batch_end(self, trainer: training.Trainer, batch: int, logs: dict) -> None:
        i = len(self.rows)
        self._avg = 0.98 * self._avg + 0.02 * logs["loss"]
        smooth = self._avg / (1 - 0.98 ** (i + 1))
        self.rows.append({"lr": self.lr_at(i), "loss": smooth, "raw_loss": logs["loss"]})
        self._best = min(self._best, smooth)
        diverged = not math.isfinite(smooth) or smooth > 4 * self._best
        if i + 1 >= self.num_it or (self.stop_div and i > 10 and diverged):
            trainer.request_stop()
        else:
            self._set_lr(trainer, self.lr_at(i + 1))


def valley(lrs: list[float], losses: list[float]) -> float:
    """The LR two thirds down the longest decreasing run of the loss curve (fastai's "valley")."""
    n = len(losses)
    if n == 0:
        raise TrainingError("The learning-rate sweep recorded no loss.")
    runs = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and runs[i] < runs[j] + 1:
                runs[i] = runs[j] + 1
        if runs[i] > runs[end]:
            end = i
            start = end - runs[end] + 1
    third = (end - start) / 3
    return float(lrs[min(start + int(third) + int(third / 2), n - 1)])


def _snapshot(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    tensors = list(model.parameters()) + list(model.buffers())
    return [(t, t.detach().clone()) for t in tensors]


def _restore(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    # Copy back only what changed: untouched frozen weights keep their version, so the
    # feature cache stays valid.
    with torch.no_grad():
        for tensor, copy in saved:
            if not torch.equal(tensor, copy):
                tensor.copy_(copy)


def lr_find(session: Session, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
            stop_div: bool = True, **options: Any) -> LRFinderResult:
    """Learning-rate range test on the session's model and training data.

    Trains for up to ``num_it`` batches with the LR growing exponentially from
    ``start_lr`` to ``end_lr`` (LR factors of layers apply), records the smoothed
    loss, stops early once it exceeds 4x its minimum, then restores every parameter and
    buffer bit for bit. The history, the run records and ``session.config`` are left as
    they were. Uses the feature cache like :meth:`Session.fit`.

    Args:
        session: a session ready to train (model, data, matching head).
        start_lr, end_lr: range of the sweep.
        num_it: number of batches.
        stop_div: stop when the loss diverges.
        **options: TrainConfig fields for the sweep only (e.g. ``batch_size``).

    Raises:
        ValueError: a bad range or count. BusyError: training runs.
    """
    if not (0 < start_lr < end_lr) or not all(math.isfinite(v) for v in (start_lr, end_lr)):
        raise ConfigError(f"lr_find needs 0 < start_lr < end_lr; got start_lr={start_lr}, end_lr={end_lr}.")
    if isinstance(num_it, bool) or not isinstance(num_it, int) or num_it < 2:
        raise ConfigError(f"num_it={num_it!r} must be an integer >= 2.")
    sweep = _Sweep(float(start_lr), float(end_lr), num_it, stop_div)
    session.require_idle("run the learning-rate finder")
    model, _bundle = session._check_ready_to_train()
    train_ds, _val = session._datasets()
    steps = math.ceil(len(train_ds) / int(options.get("batch_size", session.config.batch_size)))
    config = session.config.replaced(**options, schedule="constant", lr=float(start_lr),
                                     epochs=math.ceil(num_it / steps), max_batches_per_epoch=None)
    trainer = training.Trainer(model, train_ds, None, config, device=session.device,
                               lr_factors=dict(session.lr_factors), callbacks=[sweep],
                               feature_cache=session.feature_cache,
                               head_path=session.head.path if session.head is not None else None)
    saved = _snapshot(model)
    with session.running(trainer):
        try:
            trainer.fit()
        except TrainingError:
            pass  # a NaN loss ends the sweep like a divergence does
        finally:
            _restore(saved)
    frame = pd.DataFrame.from_records(sweep.rows, columns=["lr", "loss", "raw_loss"])
    suggestion = valley(frame["lr"].tolist(), frame["loss"].tolist())
    session.install_state(message=f"LR finder: {len(frame)} batches; suggested learning rate {suggestion:.1e}.")
    return LRFinderResult(frame, suggestion)


def stage_factors(session: Session, lr_mult: float) -> dict[str, float]:
    """LR factors growing geometrically from ``1 / lr_mult`` (first stage) to 1 (the head)."""
    table = session.layers()
    stages = list(dict.fromkeys(table.loc[~table["is_head"] & (table["params"] > 0), "group"]))
    if not stages:
        return {}
    if len(stages) == 1:
        return {stages[0]: 1.0 / lr_mult}
    return {name: (1.0 / lr_mult) ** (1 - i / len(stages)) for i, name in enumerate(stages)}


def fine_tune(session: Session, epochs_head: int = 1, epochs_all: int = 3, base_lr: float = 2e-3,
              lr_mult: float = 100.0, **options: Any) -> training.History:
    """fastai-style fine-tuning: frozen backbone first, then everything with discriminative LRs.

    1. Freeze everything but the head; train ``epochs_head`` epochs at ``base_lr``
       (one-cycle). The frozen backbone's features are cached.
    2. Unfreeze everything; set LR factors per stage from ``1 / lr_mult`` for the first
       stage up to 1 for the head; train ``epochs_all`` epochs at ``base_lr / 2``.

    Both phases continue one history. ``session.config`` keeps the last phase's options
    and ``session.lr_factors`` the stage factors.

    Args:
        session: a session ready to train.
        epochs_head: epochs with the backbone frozen (0 skips the phase).
        epochs_all: epochs with everything trainable (0 skips the phase).
        base_lr: learning rate of the head.
        lr_mult: ratio of the head's LR to the first stage's.
        **options: other TrainConfig fields for both phases.

    Returns:
        The session's history after both phases.
    """
    if epochs_head < 0 or epochs_all < 0 or epochs_head + epochs_all == 0:
        raise ConfigError(f"epochs_head={epochs_head} and epochs_all={epochs_all} must be >= 0, not both 0.")
    if not (base_lr > 0 and math.isfinite(base_lr)) or not lr_mult >= 1:
        raise ConfigError(f"base_lr={base_lr} must be > 0 and lr_mult={lr_mult} >= 1.")
    options.setdefault("schedule", "onecycle")
    if epochs_head:
        session.freeze_backbone()
        history = session.fit(epochs=epochs_head, lr=float(base_lr), **options)
        if history.stopped:
            return history
    if epochs_all:
        session.unfreeze_all()
        for name, factor in stage_factors(session, float(lr_mult)).items():
            session.set_lr_factor(name, factor)
        session.fit(epochs=epochs_all, lr=float(base_lr) / 2, **options)
    return session.history
