"""The training loop: the Trainer (TrainConfig lives in :mod:`tlwidgets.core.config`, Callback
and History in :mod:`tlwidgets.core.callbacks`; all are importable from here).

The loop knows nothing of widgets; live views subscribe through :class:`Callback`.
:meth:`Trainer.request_stop` may be called from any thread (a Stop button): the flag is
checked after every batch, so a run ends within one batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from tlwidgets.core import balance, features, rng, stopping
from tlwidgets.core.balance import labels_of
from tlwidgets.core.callbacks import (BATCH_COLUMNS, EPOCH_COLUMNS, BufferGuard, Callback, FiniteGuard, History,
                                     LambdaCallback)
from tlwidgets.core.config import CLASS_WEIGHTS, OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig
from tlwidgets.core.device import autocast_dtype, best_device
from tlwidgets.core.errors import DataError, TrainingError
from tlwidgets.core.evaluation import logits_of
from tlwidgets.core.feeds import Feed
from tlwidgets.core.layers import param_groups, set_bn_eval

__all__ = ["BATCH_COLUMNS", "CLASS_WEIGHTS", "EPOCH_COLUMNS", "OPTIMIZERS", "PRECISIONS", "SCHEDULES", "Callback",
           "History", "LambdaCallback", "TrainConfig", "Trainer"]


class Trainer:
    """Fits a classifier with cross-entropy, honouring frozen layers and LR factors.

    When the frozen layers form a prefix of the model, later epochs train on cached
    outputs of that prefix (see :mod:`tlwidgets.core.features`); :attr:`mode` says how
    this fit feeds its batches, e.g. ``"cached features (head input)"`` or
    ``"full passes: all layers trainable"``.

    Args:
        model: the model (moved to ``device``; left in eval mode after :meth:`fit`).
        train_ds: any Dataset of ``(image tensor, int label)`` pairs.
        val_ds: the validation Dataset, or ``None`` (``val_loss``/``val_acc`` are then NaN).
        config: hyper-parameters.
        device: where to train; ``None`` picks :func:`~tlwidgets.core.device.best_device`.
        lr_factors: ``{layer name prefix: factor}`` (see :func:`tlwidgets.core.layers.param_groups`);
            ``None`` trains every unfrozen layer at ``config.lr``.
        callbacks: observers, called in order (after a :class:`~tlwidgets.core.callbacks.BufferGuard`
            that puts back the BatchNorm statistics of the last completed step when a step fails).
        feature_cache: keeps cached features between fits (default: a new one per trainer).
        head_path: qualified name of the classifier head; ``None`` looks it up.
    """

    def __init__(
        self,
        model: nn.Module,
        train_ds: Dataset,
        val_ds: Dataset | None,
        config: TrainConfig,
        device: torch.device | str | None = None,
        lr_factors: Mapping[str, float] | None = None,
        callbacks: Sequence[Callback] = (),
        feature_cache: features.FeatureCache | None = None,
        head_path: str | None = None,
    ) -> None:
        self.model = model
        self.train_ds = train_ds
        self.val_ds = val_ds
        self.config = config
        self.device = torch.device(device) if device is not None else best_device()
        self.lr_factors = None if lr_factors is None else dict(lr_factors)
        # The guard comes first: its snapshot of the BatchNorm statistics is taken before any
        # other callback can fail after a step, and put back first when one does.
        # Then the FiniteGuard: a diverged run gets its last finite weights back before anyone
        # else hears of the failure.
        self.callbacks = [BufferGuard(), FiniteGuard(), *callbacks]
        self.num_classes: int | None = None
        self.notes: list[str] = []  # decisions in words (budget, early stop, class weights)
        self.stop_training = False  # set by a callback (EarlyStopping) to end after this epoch
        self.max_epochs = 0
        self.feature_cache = feature_cache if feature_cache is not None else features.FeatureCache()
        self.head_path = head_path
        self.history = History(config=asdict(config))
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.mode = ""
        self.epoch = self.batch = self.step = 0
        self._stop = threading.Event()
        self._resume: Mapping[str, Any] | None = None

    # -- control ---------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the running fit to end after the current batch (thread-safe)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`request_stop` was called and the fit has not ended yet."""
        return self._stop.is_set()

    def restore(self, state: Mapping[str, Any]) -> None:
        """Make the next :meth:`fit` continue a checkpointed one after ``state["epoch"]``.

        ``state`` is what :meth:`state_dict` returned at an
        epoch end: optimizer, scheduler, random generators, step count and history are
        put back once :meth:`fit` has built them. The caller loads the model's weights.
        """
        self._resume = state

    def state_dict(self) -> dict[str, Any]:
        """What a later :meth:`restore` needs to go on after the epoch that just ended: the
        epoch and step, options, history, optimizer, scheduler, gradient scaler and every
        random generator (plain data and tensors; a checkpoint writes it to a file)."""
        return {
            "epoch": int(self.epoch),
            "max_epochs": int(self.max_epochs),
            "step": int(self.step),
            "config": asdict(self.config),
            "history": {"batches": list(self.history.batches), "epochs": list(self.history.epochs)},
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self._scaler.state_dict() if getattr(self, "_scaler", None) is not None else None,
            "rng": rng.rng_state(getattr(self, "_generator", None)),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> int:
        """Put back what :meth:`state_dict` returned into this set-up trainer; returns the
        first epoch still to run."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if getattr(self, "_scaler", None) is not None and state.get("scaler"):
            self._scaler.load_state_dict(state["scaler"])
        rng.set_rng_state(state["rng"], getattr(self, "_generator", None))
        self.history.batches = [dict(b) for b in state["history"]["batches"]]
        self.history.epochs = [dict(e) for e in state["history"]["epochs"]]
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        return int(state["epoch"]) + 1

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    # -- setup -----------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.config
        if len(self.train_ds) == 0:
            raise DataError("The training set is empty; add images or lower the validation fraction.")
        self.model.to(self.device)
        use_cl = cfg.channels_last
        if use_cl is None:  # oneDNN and tensor cores prefer NHWC convolutions
            use_cl = self.device.type in ("cpu", "cuda") and any(isinstance(m, nn.Conv2d) for m in self.model.modules())
        self._channels_last = bool(use_cl)
        if self._channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._amp_dtype = autocast_dtype(self.device, cfg.precision)
        groups = param_groups(self.model, cfg.lr, self.lr_factors)
        if not groups:
            raise TrainingError("Nothing to train: every layer is frozen. Unfreeze the head or some layers first.")
        torch.manual_seed(cfg.seed)
        self._generator = torch.Generator().manual_seed(cfg.seed)
        self.steps_per_epoch = math.ceil(len(self.train_ds) / cfg.batch_size)
        if cfg.max_batches_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_batches_per_epoch)
        val_ds = self.val_ds if self.val_ds is not None and len(self.val_ds) > 0 else None
        head_path = self.head_path
        if head_path is None:
            with contextlib.suppress(Exception):
                from tlwidgets.core.heads import find_head

                head_path = find_head(self.model)[0]
        peek = torch.Generator()
        peek.set_state(self._generator.get_state())  # epoch 1's batches, drawn without using up the generator
        first = self._epoch_batches(peek)[0]
        plan = features.plan(self.model, self.train_ds, val_ds, cfg, self.device, self._amp_dtype,
                             self._channels_last, self.feature_cache, head_path, first_batch=first)
        self.mode = plan.mode
        self.feed = Feed(self.model, plan, self.train_ds, val_ds, self.device, self._channels_last,
                         cfg.batch_size, self._loader_options(), self.feature_cache)
        self.max_epochs = cfg.epochs if isinstance(cfg.epochs, int) else self._auto_epochs(plan, val_ds)
        self.optimizer = self._make_optimizer(groups)
        self.scheduler = self._make_scheduler()
        self.class_weight = self._class_weight()
        self.criterion = nn.CrossEntropyLoss(weight=self.class_weight, label_smoothing=cfg.label_smoothing)
        self._scaler = None
        if self.device.type == "cuda" and self._amp_dtype == torch.float16:
            self._scaler = torch.amp.GradScaler("cuda")

    def _auto_epochs(self, plan: features.Plan, val_ds: Dataset | None) -> int:
        """``epochs="auto"``: the epoch budget, and the stopping callbacks after the guards."""
        limits = stopping.budget(self.steps_per_epoch, plan.entry is not None, val_ds is not None)
        if limits.note:
            self.notes.append(limits.note)
        if limits.early_stopping:  # full-pass epochs cost seconds each: wait half as long for them
            patience = self.config.patience if plan.entry is not None else max(self.config.patience // 2, 3)
            auto = [stopping.PlateauLR(patience=max(patience // 2, 1)),
                    stopping.EarlyStopping(patience=patience, min_epochs=limits.min_epochs),
                    stopping.KeepBest()]
            self.callbacks[2:2] = [c for c in auto if not any(type(o) is type(c) for o in self.callbacks)]
        return limits.max_epochs

    def _class_weight(self) -> torch.Tensor | None:
        """Loss weights per class, or None (see ``TrainConfig.class_weights``)."""
        weight, note = balance.class_weights(labels_of(self.train_ds), self.config.class_weights)
        if note:
            self.notes.append(note)
        return None if weight is None else weight.to(self.device)

    def _loader_options(self) -> dict[str, Any]:
        workers = self.config.num_workers
        if workers is None:  # a GPU waits for decoding; on a CPU the workers would steal the model's cores
            workers = min(4, max((os.cpu_count() or 2) - 1, 1)) if self.device.type == "cuda" else 0
        return {"num_workers": workers, "pin_memory": self.device.type == "cuda"}

    def _make_optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _make_scheduler(self) -> Any:
        cfg, opt = self.config, self.optimizer
        total = self.max_epochs * self.steps_per_epoch
        schedule = cfg.schedule
        if schedule == "auto":  # a plateau schedule (stopping.PlateauLR) when the length is not known
            schedule = "onecycle" if isinstance(cfg.epochs, int) else "constant"
        if schedule == "onecycle":
            kw: dict[str, Any] = {}
            if cfg.optimizer == "sgd":
                # cycling momentum needs momentum; keep the user's value as the maximum
                kw = {"cycle_momentum": cfg.momentum > 0, "max_momentum": cfg.momentum,
                      "base_momentum": min(0.85, cfg.momentum)}
            return torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=max(total, 1), **kw
            )
        if schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
        if schedule == "step":
            return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
        return None

    # -- the loop --------------------------------------------------------------------
    def fit(self) -> History:
        """Train for ``config.epochs`` epochs (or until :meth:`request_stop`).

        Setup errors (bad config, empty data, nothing trainable) raise before any hook
        runs. Once ``on_fit_start`` has run, ``on_fit_end`` always runs, and errors go to
        ``on_exception`` before they propagate.

        Returns:
            The History of this fit; a partial epoch cut by a stop is left out of
            ``epochs`` (its batches stay in ``batches``) and ``stopped`` is True.

        Raises:
            TrainingError: the loss became NaN or infinite.
        """
        self.config.validate()
        self._setup()
        self.history = history = History(config=asdict(self.config))
        self.epoch = self.batch = self.step = 0
        first = 1
        if self._resume is not None:
            first, self._resume = self.load_state_dict(self._resume), None
        try:
            self._call("on_fit_start")
            for epoch in range(first, self.max_epochs + 1):
                if self._stop.is_set() or not self._run_epoch(epoch):
                    history.stopped = True
                    break
                if self.stop_training:
                    break
        except BaseException as exc:
            self._call("on_exception", exc)
            raise
        finally:
            self.model.eval()
            self._stop.clear()
            self._call("on_fit_end", history)
            history.notes = list(self.notes)
        return history

    def _epoch_batches(self, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """This epoch's shuffled index batches (seeded), capped by ``max_batches_per_epoch``."""
        order = torch.randperm(len(self.train_ds), generator=generator or self._generator)
        return list(order.split(self.config.batch_size))[: self.steps_per_epoch]

    def _current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def _run_epoch(self, epoch: int) -> bool:
        """Train one epoch then validate; False when a stop request cut the epoch."""
        self.epoch = epoch
        self.model.train()
        set_bn_eval(self.model)
        self.feed.prepare_train_mode()
        self.feed.reset_timing()
        self._call("on_epoch_start", epoch)
        start = tick = time.perf_counter()
        loss_sum, correct_sum, seen, step_s = 0.0, 0, 0, 0.0
        lr = self._current_lr()
        for batch, (x, y) in enumerate(self.feed.train_batches(epoch, self._epoch_batches()), 1):
            self.batch = batch
            lr = self._current_lr()
            begin = time.perf_counter()
            loss, correct, n = self._train_step(x, y)
            step_s += time.perf_counter() - begin
            self.step += 1
            loss_sum, correct_sum, seen = loss_sum + loss * n, correct_sum + correct, seen + n
            now = time.perf_counter()
            logs = {"epoch": epoch, "batch": batch, "step": self.step, "loss": loss, "acc": correct / n,
                    "lr": lr, "images_per_s": n / max(now - tick, 1e-9)}
            self.history.batches.append(logs)
            self._call("on_batch_end", batch, dict(logs))
            tick = time.perf_counter()
            if self._stop.is_set():
                return False
        val = self._validate()
        if val is None:
            return False
        if self.config.schedule == "step":
            self.scheduler.step()
        logs = {"epoch": epoch, "loss": loss_sum / max(seen, 1), "acc": correct_sum / max(seen, 1),
                "val_loss": val[0], "val_acc": val[1], "lr": lr, "time_s": time.perf_counter() - start,
                **self.feed.rates(), "compute_images_per_s": seen / step_s if step_s > 0 else None}
        self.history.epochs.append(logs)
        self._call("on_epoch_end", epoch, dict(logs))
        return True

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
        """One optimizer step on a batch already on the device; returns (mean loss, correct, size).

        The loss is checked before the backward pass, so a NaN/inf loss leaves the
        weights exactly as they were.
        """
        y = y.to(self.device, non_blocking=True)
        with self._autocast():
            out = self.feed.forward(x)
        logits = logits_of(out).float()
        self.num_classes = int(logits.shape[-1])
        loss = self.criterion(logits, y)
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(f"loss became {value} at epoch {self.epoch} batch {self.batch}; "
                                f"{self.divergence_advice()}")
        self.optimizer.zero_grad(set_to_none=True)
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None and self.config.schedule != "step":
            self.scheduler.step()
        correct = int((logits.detach().argmax(1) == y).sum().item())
        return value, correct, int(y.shape[0])

    def divergence_advice(self) -> str:
        """What to change after a diverged step, naming the option most likely at fault."""
        cfg = self.config
        culprits = []
        if cfg.weight_decay >= 0.1:
            culprits.append(f"weight_decay (now {cfg.weight_decay:g}; typical values are 1e-4 to 0.05)")
        if cfg.lr > 0.01 or not culprits:
            culprits.append(f"the learning rate (now {cfg.lr:g}; 1e-3 suits most heads)")
        return f"lower {' and '.join(culprits)}, or check the images for invalid values."

    def _validate(self) -> tuple[float, float] | None:
        """Mean loss and accuracy on the validation set; None when a stop interrupted it."""
        if self.feed.val_ds is None:
            return math.nan, math.nan
        self.model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        smoothing = self.config.label_smoothing
        forward = self.feed.forward_eval
        forward.eval()
        with torch.no_grad():
            for x, y in self.feed.val_batches():
                if self._stop.is_set():
                    return None
                y = y.to(self.device, non_blocking=True)
                with self._autocast():
                    out = forward(x)
                logits = logits_of(out).float()
                loss = nn.functional.cross_entropy(logits, y, label_smoothing=smoothing, reduction="sum")
                loss_sum += loss.item()
                correct += int((logits.argmax(1) == y).sum().item())
                seen += int(y.shape[0])
        return loss_sum / seen, correct / seen
