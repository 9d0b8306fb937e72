"""The one shared state of a transfer-learning workflow.

A :class:`Session` holds the model, the data, the frozen set, the head, the
training options and the history. Panels observe its traits and call its
methods; scripts use the same methods with no front end at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import traitlets
from torch import nn

from . import catalog, features, feeds, heads, recovery, training
from . import checkpoint as checkpoints
from . import data as data_mod
from .device import best_device, describe
from .errors import BusyError, ConfigError, DataError, ModelError
from .events import Events, EventsCallback
from .runs import RunRecorder
from .transforms import IMAGE_SIZE_RANGE
from .session_layers import SessionLayers
from .session_outputs import SessionOutputs

_IMAGENET = dataclasses.make_dataclass(
    "_DefaultNorm",
    [("resize_size", int), ("input_size", int), ("mean", tuple), ("std", tuple), ("interpolation", str)],
)(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")



# What install_state() may set, in the order it sets them ("message" last).
_INSTALLABLE = ("spec", "model", "pretrained", "head", "classes", "frozen", "lr_factors", "config", "augment",
                "history", "data", "runs", "message")


class Session(SessionLayers, SessionOutputs, traitlets.HasTraits):
    """Model, data, freezing, head, training and results of one workflow.

    Args:
        device: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None`` for the best one available.
        image_size: input size override (smaller is faster; ``None`` uses the model's own).

    Traits are reassigned (never mutated in place) so that observers fire; the
    ``*_version`` counters change whenever the model or data change in place.
    """

    spec = traitlets.Any(None, allow_none=True, help="catalog.ModelSpec of the loaded model")
    model = traitlets.Any(None, allow_none=True, help="the torch.nn.Module, on `device`")
    model_version = traitlets.Int(0, help="bumped whenever the model changes (load, head, training)")
    data = traitlets.Any(None, allow_none=True, help="data.DataBundle")
    data_version = traitlets.Int(0)
    classes = traitlets.Tuple(help="class names the current head predicts")
    frozen = traitlets.Tuple(help="names of layers whose parameters are frozen")
    lr_factors = traitlets.Dict(help="layer-name prefix -> learning-rate factor (0 = frozen)")
    head = traitlets.Any(None, allow_none=True, help="heads.HeadSpec of the current head")
    config = traitlets.Any(help="training.TrainConfig used by the next fit")
    augment = traitlets.Any(help="data.Augment applied to training images")
    image_size = traitlets.Any(None, allow_none=True)
    history = traitlets.Any(None, allow_none=True, help="training.History of the current model")
    last_eval = traitlets.Any(None, allow_none=True, help="evaluation.EvalResult")
    status = traitlets.Enum(("idle", "training", "stopping"), default_value="idle")
    device = traitlets.Unicode("cpu")
    message = traitlets.Unicode("", help="one line on what happened last")
    pretrained = traitlets.Bool(None, allow_none=True, help="whether the loaded model started from pretrained weights")
    runs = traitlets.Tuple(help="runs.Run records of every fit, oldest first (a new tuple per run)")

    def __init__(self, device: str | torch.device | None = None, image_size: int | None = None) -> None:
        super().__init__()
        self.device = str(torch.device(device) if device is not None else best_device())
        self.image_size = image_size
        self.config = training.TrainConfig()
        self.augment = data_mod.Augment()
        self._lock = threading.RLock()
        self._trainer: training.Trainer | None = None
        self.events = Events()  # subscribers of on_epoch_end() and the other training events
        self.recorder = RunRecorder(self)  # appends to `runs` at the end of every fit
        self.feature_cache = features.FeatureCache()  # frozen-prefix outputs, reused while nothing changes
        self._datasets_for: tuple = ()

    # ------------------------------------------------------------------ events
    def on_batch_end(self, callback: Callable[[dict], Any], remove: bool = False) -> None:
        """Call ``callback(logs)`` after every training batch (from the training thread)."""
        self.events.subscribe("batch_end", callback, remove)

    def on_epoch_end(self, callback: Callable[[dict], Any], remove: bool = False) -> None:
        """Call ``callback(logs)`` after every epoch with train and validation metrics."""
        self.events.subscribe("epoch_end", callback, remove)

    def on_fit_start(self, callback: Callable[[training.Trainer], Any], remove: bool = False) -> None:
        """Call ``callback(trainer)`` when a fit starts."""
        self.events.subscribe("fit_start", callback, remove)

    def on_fit_end(self, callback: Callable[[training.History], Any], remove: bool = False) -> None:
        """Call ``callback(history)`` when a fit ends, stopped or failed runs included."""
        self.events.subscribe("fit_end", callback, remove)

    def on_exception(self, callback: Callable[[BaseException], Any], remove: bool = False) -> None:
        """Call ``callback(exc)`` when training raises."""
        self.events.subscribe("exception", callback, remove)

    # ------------------------------------------------------------------ guards
    def require_idle(self, action: str) -> None:
        """Raise :class:`BusyError` (worded the same everywhere) unless the session is idle.

        What may run beside a background fit: ``configure`` (it sets the options of the
        *next* fit; the running one keeps its own), ``to_script`` (it only reads settings),
        ``request_stop``, ``summary`` and ``runs_frame``. Everything that runs the model
        (``predict``, ``evaluate``, Grad-CAM, ``compare_models``, ``lr_find``) or changes
        what the running fit reads (model, head, freezing, data, augmentation,
        ``image_size``, ``save``, ``export_onnx``) waits: it would switch the model out of
        training mode, change its inputs mid-run, or save a half-updated model.
        """
        if self.status != "idle":
            raise BusyError(f"Cannot {action} while training runs: press Stop (or call request_stop()) and wait.")

    @contextlib.contextmanager
    def _change(self, what: str) -> Iterator[None]:
        """Refuse changes while training, and serialise changes between threads."""
        self.require_idle(what)
        with self._lock:
            yield

    def _require_model(self) -> nn.Module:
        if self.model is None:
            raise ModelError("No model loaded yet: call load_model(name) first (see tlwidgets.list_models()).")
        return self.model

    def _require_data(self) -> data_mod.DataBundle:
        if self.data is None:
            raise DataError("No data loaded yet: call load_data(folder) or load_data('demo') first.")
        return self.data

    # ------------------------------------------------------------------ state from elsewhere
    def install_state(self, **parts: Any) -> None:
        """Set several parts of the state at once: the one way other core modules change a session.

        Restoring a bundle or a checkpoint, adopting the best compared model, halving the
        batch size after running out of memory and recording runs all go through here, so
        no module assigns a session's traits or private attributes itself. Parts are set in
        a fixed order under the session's lock; ``model_version`` is bumped once when the
        model, head, classes, freezing, LR factors or history change, ``data_version`` when
        the data change, and ``message`` is set last. Nothing is checked here: the caller
        hands over state it built and checked (a validated ``TrainConfig``, a head that
        matches the model).

        Args:
            **parts: any of ``spec, model, pretrained, head, classes, frozen, lr_factors,
                config, augment, history, data, runs, message``.
        """
        unknown = sorted(set(parts) - set(_INSTALLABLE))
        if unknown:
            raise TypeError(f"install_state() got unknown parts {unknown}; known: {', '.join(_INSTALLABLE)}.")
        with self._lock:
            for name in _INSTALLABLE[:-1]:
                if name in parts:
                    setattr(self, name, parts[name])
            if not {"spec", "model", "head", "classes", "frozen", "lr_factors", "history"}.isdisjoint(parts):
                self.model_version += 1
            if "data" in parts:
                self.data_version += 1
            if "message" in parts:
                self.message = parts["message"]

    @contextlib.contextmanager
    def running(self, trainer: training.Trainer) -> Iterator[training.Trainer]:
        """Mark the session as training ``trainer`` for the ``with`` block (``fit`` and ``lr_find``).

        Raises:
            BusyError: another run is on; nothing changes then.
        """
        with self._lock:
            if self.status != "idle":
                raise BusyError("Training is already running: wait for it, or press Stop.")
            self._trainer = trainer
            self.status = "training"
        try:
            yield trainer
        finally:
            with self._lock:
                self._trainer = None
                self.status = "idle"

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

    def _norm_spec(self) -> Any:
        return self.spec if self.spec is not None else _IMAGENET

    def _refresh_transforms(self) -> None:
        if self.data is None:
            return
        train_tf, eval_tf = data_mod.make_transforms(self._norm_spec(), self.augment, self.image_size)
        self.data.train_tf = train_tf
        self.data.eval_tf = eval_tf

    @traitlets.validate("image_size")
    def _valid_image_size(self, proposal: dict) -> int | None:
        value = proposal["value"]
        if value is None:
            return None
        low, high = IMAGE_SIZE_RANGE
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(
                f"image_size={value!r} must be a whole number of pixels from {low} to {high} "
                "(or None for the model's own size); the image size was left as it was."
            )
        if getattr(self, "_lock", None) is not None:  # set up after the first assignment in __init__
            self.require_idle("change the image size")
        return int(value)

    @traitlets.observe("image_size")
    def _on_image_size(self, change: dict) -> None:
        self._refresh_transforms()

    @traitlets.observe("model", "data")
    def _on_model_or_data(self, change: dict) -> None:
        cache = getattr(self, "feature_cache", None)
        if cache is not None:  # free the old features (and the old model they reference) now
            cache.clear()

    def _datasets(self) -> tuple[data_mod.ImageDataset, data_mod.ImageDataset]:
        """The training and validation datasets, kept while data and transforms stay the same.

        Keeping them lets decoded images (when they fit in memory) and cached features
        serve the next fit too.
        """
        bundle = self._require_data()
        key = (self.data_version, bundle, bundle.train_tf, bundle.eval_tf, self.device, self.config.num_workers)
        if len(self._datasets_for) != 7 or any(a is not b and a != b for a, b in zip(key, self._datasets_for)):
            decoded = feeds.decoded_fits(bundle, self.device, self.config.num_workers)
            self._datasets_for = (*key, bundle.datasets(cache=decoded))
        return self._datasets_for[-1]

    @property
    def input_size(self) -> int:
        """Side of the square images fed to the model."""
        return int(self.image_size or self._norm_spec().input_size)

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

    def _check_ready_to_train(self) -> tuple[nn.Module, data_mod.DataBundle]:
        model = self._require_model()
        bundle = self._require_data()
        n = len(bundle.classes)
        if self.head is None or self.head.num_classes != n or tuple(self.classes) != tuple(bundle.classes):
            have = self.head.num_classes if self.head is not None else "no"
            raise ModelError(
                f"The model's head predicts {have} classes but the data has {n} "
                f"({', '.join(bundle.classes[:5])}{'...' if n > 5 else ''}): call replace_head() first."
            )
        if not any(p.requires_grad for p in model.parameters()):
            raise ModelError("Every layer is frozen, so nothing can learn: unfreeze the head (or call replace_head()).")
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
                if self.status != "idle":
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
            if self.status == "training":
                self.status = "stopping"

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

