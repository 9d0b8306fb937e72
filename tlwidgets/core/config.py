"""Training options: :class:`TrainConfig`, its allowed values and ranges, and their checks.

Every option is checked before it is stored (:meth:`TrainConfig.replaced`), so a bad value
never becomes a session's option; the message names the option, the value and what is
allowed, as a :class:`~tlwidgets.core.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields, replace
from typing import Any

from tlwidgets.core import features
from tlwidgets.core.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("auto", "onecycle", "cosine", "step", "constant")
CLASS_WEIGHTS = ("auto", "balanced", "none")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Hyper-parameters of one call to :meth:`Trainer.fit`.

    ``channels_last=None`` converts models with Conv2d layers to channels-last memory
    format on CPU and CUDA (faster with oneDNN and tensor cores); ``max_batches_per_epoch``
    caps every epoch (a fast mode for notebooks and tests).

    ``precision``: ``"auto"`` uses bf16 autocast on CPUs that compute bf16 natively and on
    CUDA GPUs that support it (else fp16 with a gradient scaler); ``"fp32"`` turns
    autocast off.

    ``cache_features``: ``"auto"`` trains on cached outputs of the frozen prefix when the
    frozen layers form one (see :mod:`tlwidgets.core.features`) and they fit in memory;
    ``"on"`` insists (error when impossible); ``"off"`` runs full passes every epoch.
    ``augment_views``: cached views per training image when the training transform is
    random. ``compile_features``: ``torch.compile`` the frozen prefix (``"auto"``: only for
    large datasets, where the compile time pays off).

    ``num_workers=None`` picks DataLoader workers for the device: none on a CPU (the model
    needs every core), a few with pinned memory on a GPU.

    ``epochs="auto"`` trains until the validation loss stops improving for ``patience``
    epochs (half that, at least 3, when every epoch is a full pass), within a budget of
    optimizer steps, and keeps the best epoch's weights (see :mod:`tlwidgets.core.stopping`);
    a number trains exactly that many epochs. The defaults ``lr=3e-3`` and
    ``label_smoothing=0.1`` were measured best for a new head on cached features
    (``benchmarks/bench_defaults.py``); lower ``lr`` when you unfreeze pretrained layers
    yourself (the Better and Best recipes set lower rates for them).
    ``schedule="auto"`` is one-cycle for a fixed number of epochs and a plateau schedule
    (learning rate / 5 when the validation loss stalls) for ``epochs="auto"``.
    ``class_weights``: ``"balanced"`` weighs each class's loss by the inverse of its share of
    the training images; ``"auto"`` does so when the largest class has
    :data:`IMBALANCE_RATIO` times the images of the smallest; ``"none"`` never.
    """

    epochs: int | str = "auto"
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "auto"
    step_size: int = 1
    gamma: float = 0.1
    label_smoothing: float = 0.1
    seed: int = 0
    num_workers: int | None = None
    precision: str = "auto"
    max_batches_per_epoch: int | None = None
    channels_last: bool | None = None
    cache_features: str = "auto"
    augment_views: int = 4
    compile_features: str = "auto"
    patience: int = 8
    class_weights: str = "auto"

    def replaced(self, **options: Any) -> TrainConfig:
        """A validated copy with ``options`` changed; this config stays as it is.

        Raises:
            ConfigError: an unknown option (with the closest known names) or a bad value.
        """
        known = [f.name for f in fields(self)]
        unknown = [name for name in options if name not in known]
        if unknown:
            close = {n for name in unknown for n in difflib.get_close_matches(name, known, n=2)}
            close |= {_ALIASES[name] for name in unknown if name in _ALIASES}
            raise ConfigError(f"Unknown training option(s) {', '.join(map(repr, unknown))}"
                              + (f"; did you mean {', '.join(sorted(close))}?" if close else ".")
                              + f" Known options: {', '.join(known)}.")
        config = replace(self, **options)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`~tlwidgets.core.errors.ConfigError` naming the first bad field, its value and
        the allowed range. Every bound is one a real run can use; beyond it torch fails deep
        inside (a seed past 2**64) or the machine runs out of memory (a batch of 10**9)."""
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "precision": PRECISIONS,
                   "cache_features": features.CACHE_MODES, "compile_features": features.COMPILE_MODES,
                   "class_weights": CLASS_WEIGHTS}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}.")
        optional = ("max_batches_per_epoch", "num_workers")
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if (value is None and name in optional) or (name == "epochs" and value == "auto"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name}={value!r} must be a whole number from {low:,} to {high:,}"
                                  + (" (or None)." if name in optional else
                                     " (or 'auto': train until the validation loss stops improving)."
                                     if name == "epochs" else "."))
        for name, (text, test) in _FLOAT_RANGES.items():
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not (number and test(value)):
                raise ConfigError(f"{name}={value!r} must be a finite number {text}.")
        if self.channels_last not in (None, True, False):
            raise ConfigError(f"channels_last={self.channels_last!r} must be None, True or False.")


# Names other libraries use for the same options.
_ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "bs": "batch_size", "batch": "batch_size",
            "num_epochs": "epochs", "n_epochs": "epochs", "max_epochs": "epochs", "opt": "optimizer"}

#: Allowed range of each whole-number option (both ends included).
INT_RANGES = {
    "epochs": (1, 100_000),
    "batch_size": (1, 65_536),
    "step_size": (1, 100_000),
    "seed": (0, 2**32 - 1),  # what numpy's and torch's generators both take
    "augment_views": (1, 64),
    "patience": (1, 1000),
    "max_batches_per_epoch": (1, 10**9),
    "num_workers": (0, 256),
}
# name: (allowed range in words, test)
_FLOAT_RANGES = {
    "lr": ("> 0 and <= 1e9", lambda v: 0 < v <= 1e9),
    "momentum": (">= 0 and < 1", lambda v: 0 <= v < 1),
    "weight_decay": ("from 0 to 1 (typical values are 1e-4 to 0.05)", lambda v: 0 <= v <= 1),
    "gamma": ("> 0 and <= 1", lambda v: 0 < v <= 1),
    "label_smoothing": (">= 0 and < 1", lambda v: 0 <= v < 1),
}
