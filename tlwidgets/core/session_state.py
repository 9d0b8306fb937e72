"""What a session is made of: its traits, guards, transforms and the one way to change it.

:class:`SessionState` declares every member the session's parts use (``SessionLayers``,
``SessionOutputs``, ``Session``), so none of them relies on members it does not see.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import traitlets
from torch import nn

from . import data as data_mod
from . import features, feeds, training
from .device import best_device
from .errors import BusyError, ConfigError, DataError, ModelError
from .events import Events
from .runs import RunRecorder
from .session_settings import SessionSettings
from .status import Status
from .transforms import IMAGE_SIZE_RANGE, IMAGENET

# What install_state() may set, in the order it sets them ("message" last).
_INSTALLABLE = ("spec", "model", "pretrained", "head", "classes", "frozen", "lr_factors", "config", "augment",
                "history", "data", "last_eval", "runs", "message")


class SessionState(traitlets.HasTraits):
    """The state every part of a :class:`~tlwidgets.core.session.Session` shares: its traits, its
    guards and the one way to change it from other modules (:meth:`install_state`).

    ``SessionLayers``, ``SessionOutputs`` and ``Session`` build on it, so every member
    they use is declared here. See :class:`~tlwidgets.core.session.Session` for the arguments.
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
    status = traitlets.Enum(tuple(Status), default_value=Status.IDLE, help="a Status: idle, training or stopping")
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
        if self.status != Status.IDLE:
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
                config, augment, history, data, last_eval, runs, message``.
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

    def settings(self) -> SessionSettings:
        """What the session is set to, as plain data: the one serialisation that bundles,
        checkpoints and training scripts are written from (see
        :mod:`tlwidgets.core.session_settings`). Needs a loaded model."""
        return SessionSettings.of(self)

    @contextlib.contextmanager
    def running(self, trainer: training.Trainer) -> Iterator[training.Trainer]:
        """Mark the session as training ``trainer`` for the ``with`` block (``fit`` and ``lr_find``).

        Raises:
            BusyError: another run is on; nothing changes then.
        """
        with self._lock:
            if self.status != Status.IDLE:
                raise BusyError("Training is already running: wait for it, or press Stop.")
            self._trainer = trainer
            self.status = Status.TRAINING
        try:
            yield trainer
        finally:
            with self._lock:
                self._trainer = None
                self.status = Status.IDLE

    def _norm_spec(self) -> Any:
        return self.spec if self.spec is not None else IMAGENET

    def _refresh_transforms(self) -> None:
        if self.data is None:
            return
        train_tf, eval_tf = data_mod.make_transforms(self._norm_spec(), self.augment, self.image_size)
        self.data.train_tf = train_tf
        self.data.eval_tf = eval_tf

    @traitlets.validate("status")
    def _valid_status(self, proposal: dict) -> Status:
        return Status.parse(proposal["value"])  # a plain "idle" is stored as Status.IDLE

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
