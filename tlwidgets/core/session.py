"""The one shared state of a transfer-learning workflow.

A :class:`Session` holds the model, the data, the frozen set, the head, the
training options and the history. Panels observe its traits and call its
methods; scripts use the same methods with no front end at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from . import catalog, heads, recovery, training
from . import checkpoint as checkpoints
from . import data as data_mod
from .device import describe
from .errors import BusyError, DataError, ModelError
from .events import EventsCallback
from .session_layers import SessionLayers
from .session_outputs import SessionOutputs
from .status import Status


class Session(SessionLayers, SessionOutputs):
    """Model, data, freezing, head, training and results of one workflow.

    Args:
        device: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None`` for the best one available.
        image_size: input size override (smaller is faster; ``None`` uses the model's own).

    Traits are reassigned (never mutated in place) so that observers fire; the
    ``*_version`` counters change whenever the model or data change in place.
    """

    def __init__(self, device: str | torch.device | None = None, image_size: int | None = None) -> None:
        super().__init__(device=device, image_size=image_size)

    # ------------------------------------------------------------------ model
    def load_model(
        self, name: str, pretrained: bool = True, progress: Callable[[int, int], None] | None = None
    ) -> nn.Module:
        """Load a catalog model (see :func:`tlwidgets.list_models`) onto the session's device.

        The previous model stays in place if loading fails (unknown name, no weights).
        """
        with self._change("load a model"):
            spec = catalog.get_spec(name)
            model = catalog.build_model(name, pretrained=pretrained, progress=progress)
            model.to(self.device)
            self.spec = spec
            self.pretrained = bool(pretrained)
            self.model = model
            self.head = heads.head_spec(model)
            self.classes = tuple(spec.class_names) if len(spec.class_names) == self.head.num_classes else tuple(
                str(i) for i in range(self.head.num_classes)
            )
            self.frozen = ()
            self.lr_factors = {}
            self.history = None
            self.last_eval = None
            self._refresh_transforms()
            self.model_version += 1
            source = "pretrained" if pretrained else "random"
            self.message = f"Loaded {name} ({source} weights) on {describe(self.device)}."
            return model

    # ------------------------------------------------------------------ data
    def load_data(
        self, source: str | Path, val_fraction: float = 0.2, seed: int = 0, **options: Any
    ) -> data_mod.ScanReport:
        """Load images from a folder, an archive, a torchvision dataset name or ``"demo"``.

        Returns:
            The scan report: classes, counts per split, image sizes and skipped files.
        """
        with self._change("load data"):
            bundle = data_mod.load_data(source, val_fraction=val_fraction, seed=seed, **options)
            self.data = bundle
            self._refresh_transforms()
            self.last_eval = None
            self.data_version += 1
            report = bundle.report
            self.message = (
                f"Loaded {len(bundle.train)} training and {len(bundle.val)} validation images "
                f"in {len(bundle.classes)} classes; {len(report.skipped)} files skipped."
            )
            return report

    def set_augment(self, augment: data_mod.Augment | None = None, **options: Any) -> None:
        """Set training-time augmentation, e.g. ``set_augment(flip=True, rotation=10)``."""
        with self._change("change augmentation"):
            new = augment if augment is not None else dataclasses.replace(self.augment, **options)
            self.augment = new
            self._refresh_transforms()

    # ------------------------------------------------------------------ head
    def replace_head(
        self, num_classes: int | None = None, dropout: float = 0.0, hidden: int | None = None
    ) -> heads.HeadSpec:
        """Replace the final classifier with a new one for the loaded data's classes.

        Args:
            num_classes: number of outputs; default the number of classes in the loaded data.
            dropout: dropout before the final layer (0 to 1).
            hidden: width of an optional hidden layer (with ReLU) before the final layer.
        """
        with self._change("replace the head"):
            model = self._require_model()
            if num_classes is None:
                if self.data is None:
                    raise DataError(
                        "replace_head() takes the number of classes from the loaded data: "
                        "load data first, or pass num_classes=N."
                    )
                num_classes = len(self.data.classes)
            heads.check_args(num_classes, dropout, hidden)
            spec = heads.replace_head(model, num_classes, dropout=float(dropout), hidden=hidden)
            model.to(self.device)
            self.head = spec
            if self.data is not None and len(self.data.classes) == num_classes:
                self.classes = tuple(self.data.classes)
            else:
                self.classes = tuple(str(i) for i in range(num_classes))
            self.history = None
            self.last_eval = None
            self._after_freeze_change()
            self.message = f"New head: {num_classes} classes ({spec.path})."
            return spec

    # ------------------------------------------------------------------ training
    def configure(self, **options: Any) -> training.TrainConfig:
        """Change training options, e.g. ``configure(epochs=3, lr=1e-3, optimizer="adamw")``."""
        config = self.config.replaced(**options)
        self.config = config
        return config

    def readiness(self, require_trainable: bool = True, classes: Sequence[str] | None = None) -> str | None:
        """What is missing before training can start, in plain words; ``None`` when ready.

        The one rule every panel asks (the Train button, the collector, the App's status).

        Args:
            require_trainable: count "every layer is frozen" as missing (a recipe that sets
                the freezing itself passes False).
            classes: the classes the head must predict, in order. ``None`` takes the loaded
                data's (and counts "no data" as missing); given, no data need be loaded, so
                a panel can ask whether the model predicts exactly the classes it shows.
        """
        if self.model is None:
            return "Load a model first."
        if classes is None:
            if self.data is None:
                return "Load images first."
            classes, source, whose = list(self.data.classes), "the data has", "the data's classes"
        else:
            classes, source, whose = [str(c) for c in classes], "there are", "these classes"
        n = len(classes)
        if self.head is None or self.head.num_classes != n:
            have = self.head.num_classes if self.head is not None else "no"
            shown = f"{', '.join(classes[:5])}{'...' if n > 5 else ''}"
            return (f"The head predicts {have} classes but {source} {n} ({shown}): replace the head first "
                    "(Head tab, or session.replace_head()).")
        if tuple(self.classes) != tuple(classes):
            return f"The head's classes are not {whose}: replace the head first (session.replace_head())."
        if require_trainable and not any(p.requires_grad for p in self.model.parameters()):
            return "Every layer is frozen, so nothing can learn: unfreeze the head (or replace the head)."
        return None

    def _check_ready_to_train(self) -> tuple[nn.Module, data_mod.DataBundle]:
        model, bundle = self._require_model(), self._require_data()  # their messages name the call to make
        missing = self.readiness()
        if missing is not None:
            raise ModelError(missing)
        return model, bundle

    def fit(
        self,
        epochs: int | None = None,
        callbacks: Sequence[training.Callback] = (),
        checkpoint: str | Path | bool | None = None,
        resume: str | Path | bool = False,
        **options: Any,
    ) -> training.History:
        """Train (blocking) and return the history of the current model.

        Args:
            epochs: number of epochs (default: the session's config).
            callbacks: extra :class:`~tlwidgets.core.training.Callback` objects.
            checkpoint: write a checkpoint after every epoch: ``True`` for a file in the
                cache named after model, head, classes and data; or a file path.
            resume: ``True`` goes on from the last checkpoint (``checkpoint``'s file or the
                default one) when there is one, else trains from the start; a path goes on
                from that file. A resumed run keeps its saved options and gives the same
                result as an uninterrupted one. See :mod:`tlwidgets.core.checkpoint`.
            **options: any :class:`~tlwidgets.core.training.TrainConfig` field, kept for later fits.

        A second ``fit`` on the same model continues its history. Stop with
        :meth:`request_stop`; a failed run leaves the model as it was after the last
        completed step. Out of memory, the run restarts with half the batch size
        (see :mod:`tlwidgets.core.recovery`).
        """
        if epochs is not None:
            options["epochs"] = epochs
        with contextlib.ExitStack() as run:
            with self._lock:
                if self.status != Status.IDLE:
                    raise BusyError("Training is already running: wait for it, or press Stop.")
                model, _ = self._check_ready_to_train()
                previous = self.config
                if options:  # bad options fail here, before anything is stored
                    self.config.replaced(**options)
                plan = checkpoints.plan_fit(self, checkpoint, resume, options)
                if plan.state is not None:
                    config = plan.restore_session(self)
                else:
                    config = self.configure(**options) if options else self.config
                train_ds, val_ds = self._datasets()
                trainer = training.Trainer(
                    model,
                    train_ds,
                    val_ds,
                    config,
                    device=self.device,
                    lr_factors=dict(self.lr_factors),
                    callbacks=[*plan.callbacks(self), EventsCallback(self.events), *callbacks],
                    feature_cache=self.feature_cache,
                    head_path=self.head.path if self.head is not None else None,
                )
                plan.restore_trainer(trainer)
                run.enter_context(self.running(trainer))  # idle again when the block ends
            try:
                history = recovery.fit(self, trainer, retry=plan.state is None)
            except BaseException:
                if not trainer.history.epochs and self.config is config:
                    self.config = previous  # options that never completed an epoch are not kept
                raise
        if self.continues_history:
            history = self.history.extend(history)
        self.model_version += 1
        self.history = history
        kept = history.best_epoch
        last = history.epochs[kept - 1] if kept and kept <= len(history.epochs) else (
            history.epochs[-1] if history.epochs else {})
        val = last.get("val_acc")
        notes = " ".join([*trainer.notes, plan.note]).strip()
        self.message = (
            (f"{notes} " if notes else "")
            + f"{'Stopped' if history.stopped else 'Trained'} after {len(history.epochs)} epochs"
            + (f"; validation accuracy {val:.1%}." if val is not None and not math.isnan(val) else ".")
            + f" Batches: {trainer.mode}."
        )
        return history

    def lr_find(self, **options: Any) -> Any:
        """Learning-rate range test; the weights are restored afterwards.

        Returns a :class:`~tlwidgets.core.recipes.LRFinderResult` (``frame`` with columns
        ``lr`` and ``loss``, ``suggestion``); see :func:`tlwidgets.core.recipes.lr_find`.
        """
        from . import recipes

        return recipes.lr_find(self, **options)

    def fine_tune(self, epochs_head: int = 1, epochs_all: int = 3, base_lr: float = 2e-3, **options: Any) -> Any:
        """Train the head with the backbone frozen, then everything with lower LRs for early stages.

        See :func:`tlwidgets.core.recipes.fine_tune`; returns the whole History.
        """
        from . import recipes

        return recipes.fine_tune(self, epochs_head, epochs_all, base_lr, **options)

    @property
    def continues_history(self) -> bool:
        """True when the next fit extends the current history (same model and head).

        A new model or a new head starts a new history; freezing, unfreezing and
        option changes do not, so "train the head, then fine-tune" is one history.
        """
        return self.history is not None

    def request_stop(self) -> None:
        """Ask a running fit to stop after the current batch (safe from any thread)."""
        trainer = self._trainer
        if trainer is not None:
            trainer.request_stop()
            if self.status == Status.TRAINING:
                self.status = Status.STOPPING

    # ------------------------------------------------------------------ display
    def runs_frame(self) -> pd.DataFrame:
        """One row per recorded fit: model, weights, what was trained, options, final metrics, time."""
        return self.recorder.frame()

    def summary(self) -> dict[str, Any]:
        """Status-line facts: model, device, data, trainable parameters, state."""
        out: dict[str, Any] = {"model": self.spec.name if self.spec else None, "device": self.device}
        if self.data is not None:
            out["data"] = f"{len(self.data.train)}+{len(self.data.val)} images, {len(self.data.classes)} classes"
        if self.model is not None:
            trainable, total = self.trainable_params()
            out["trainable"] = f"{trainable:,} of {total:,}"
        out["status"] = self.status
        return out

    def __repr__(self) -> str:
        facts = ", ".join(f"{k}={v}" for k, v in self.summary().items() if v is not None)
        return f"Session({facts})"

