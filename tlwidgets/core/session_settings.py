"""A session's settings as plain data, serialised in one place.

:class:`SessionSettings` holds what a session is set to (model and weights source, head,
classes, transforms, augmentation, frozen layers, LR factors, training options, history and
where the data came from) as plain values: strings, numbers, lists and dicts. A bundle's
``tlwidgets.json`` (:mod:`tlwidgets.core.bundle`), a checkpoint's session part
(:mod:`tlwidgets.core.checkpoint`) and a generated script's settings block
(:mod:`tlwidgets.core.script`) are all built from one, so each setting is written the same
way everywhere. :meth:`SessionSettings.to_dict` gives the entries as ``tlwidgets.json``
names them; :meth:`SessionSettings.from_dict` reads them back.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import ConfigError

if TYPE_CHECKING:
    from .data import DataBundle
    from .session_state import SessionState

NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: string keys, lists for tuples, and a non-finite float as
    the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (strict JSON has no such numbers;
    a diverged run's loss is NaN). :func:`number_from_json` reads them back."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def number_from_json(value: Any) -> Any:
    """The float that :func:`jsonable` wrote as ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``; other values as they are."""
    return NON_FINITE.get(value, value) if isinstance(value, str) else value


def _plain(value: Any) -> Any:
    """A fresh copy of ``value`` with lists for tuples (non-finite floats stay floats)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------- sections
def memory_format(model: nn.Module) -> str:
    """``"channels_last"`` when the model's 4-D weights are stored channels-last, else ``"contiguous"``."""
    for p in model.parameters():
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
            cl = p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            return "channels_last" if cl else "contiguous"
    return "contiguous"


def model_section(session: SessionState) -> dict[str, Any]:
    """Architecture and weights source of the session's model."""
    spec = session.spec
    stored = {k: v for k, v in dataclasses.asdict(spec).items() if k != "class_names"}
    return {
        "name": spec.name, "source": spec.source, "arch": spec.arch, "family": spec.family,
        "pretrained": getattr(session, "pretrained", None),
        "checkpoint": spec.weights_path if spec.source == "checkpoint" else None,
        "weights_url": spec.weights_url,
        "memory_format": memory_format(session.model),
        "spec": jsonable(stored),
    }


def transforms_section(session: SessionState) -> dict[str, Any]:
    """Resize, crop, normalisation and interpolation of the images the model sees."""
    norm = session.spec
    size = session.image_size
    crop = int(size) if size is not None else int(norm.input_size)
    resize = round(int(size) * 256 / 224) if size is not None else int(norm.resize_size)
    return {
        "input_size": crop, "resize_size": resize, "mean": [float(v) for v in norm.mean],
        "std": [float(v) for v in norm.std], "interpolation": str(norm.interpolation),
        "image_size": None if size is None else int(size),
    }


def data_root(bundle: DataBundle) -> str:
    """The folder every image of ``bundle`` lies under (``""`` without images)."""
    paths = [s.path for s in (*bundle.train, *bundle.val)]
    if not paths:
        return ""
    root = os.path.commonpath([os.path.abspath(p) for p in paths])
    return root if os.path.isdir(root) else os.path.dirname(root)


def data_section(bundle: DataBundle | None) -> dict[str, Any] | None:
    """Where the data came from (the file lists go to ``split.json``)."""
    if bundle is None:
        return None
    return {
        "source": bundle.report.source, "layout": bundle.report.layout, "root": data_root(bundle),
        "num_train": len(bundle.train), "num_val": len(bundle.val),
    }


def history_section(history: Any) -> dict[str, Any] | None:
    """The records of a :class:`~tlwidgets.core.training.History` (``None`` for none)."""
    if history is None:
        return None
    return {"batches": list(history.batches), "epochs": list(history.epochs),
            "stopped": bool(history.stopped), "config": dict(history.config)}


# ---------------------------------------------------------------------------- the settings
@dataclasses.dataclass(frozen=True)
class SessionSettings:
    """What a session is set to, as plain data (see the module's docstring).

    Build one with :meth:`of` (or ``session.settings()``); :meth:`to_dict` gives fresh,
    JSON-ready entries in the order ``tlwidgets.json`` holds them, and
    ``SessionSettings.from_dict(s.to_dict()) == s``.

    Attributes:
        model: architecture and weights source (name, source, arch, family, pretrained,
            checkpoint, weights_url, memory_format, spec).
        head: the head's shape (a :class:`~tlwidgets.core.heads.HeadSpec` as a dict).
        classes: the class names the head predicts, in order.
        transforms: resize and crop sizes, mean, std, interpolation and the image size override.
        augment: the training augmentation (an :class:`~tlwidgets.core.data.Augment` as a dict).
        frozen: names of the frozen layers.
        lr_factors: layer-name prefix -> learning-rate factor.
        config: the training options (a :class:`~tlwidgets.core.config.TrainConfig` as a dict).
        history: batches, epochs, stopped and config of the current history, or ``None``.
        data: source, layout, root and sizes of the loaded data, or ``None``.
    """

    model: dict[str, Any]
    head: dict[str, Any]
    classes: tuple[str, ...]
    transforms: dict[str, Any]
    augment: dict[str, Any]
    frozen: tuple[str, ...]
    lr_factors: dict[str, float]
    config: dict[str, Any]
    history: dict[str, Any] | None = None
    data: dict[str, Any] | None = None

    @classmethod
    def of(cls, session: SessionState) -> SessionSettings:
        """The settings of ``session``, which must hold a model with a head."""
        if session.model is None or session.spec is None or session.head is None:
            raise ConfigError("The session has no model yet, so it has no settings to write: load a model first.")
        return cls(
            model=_plain(model_section(session)),
            head=_plain(dataclasses.asdict(session.head)),
            classes=tuple(str(c) for c in session.classes),
            transforms=transforms_section(session),
            augment=_plain(dataclasses.asdict(session.augment)),
            frozen=tuple(str(n) for n in session.frozen),
            lr_factors={str(k): float(v) for k, v in session.lr_factors.items()},
            config=_plain(dataclasses.asdict(session.config)),
            history=_plain(history_section(session.history)),
            data=data_section(session.data),
        )

    def to_dict(self) -> dict[str, Any]:
        """Every setting under its ``tlwidgets.json`` name, as a fresh copy (lists for tuples)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SessionSettings:
        """The settings :meth:`to_dict` gave (other entries of ``tlwidgets.json`` are ignored).

        Raises:
            ConfigError: ``values`` is not a mapping, lacks an entry, or holds one of the wrong kind.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"Session settings must be a dict of entries, not {type(values).__name__}.")
        fields = dataclasses.fields(cls)
        missing = [f.name for f in fields if f.name not in values and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"The session settings lack {', '.join(missing)}; "
                              f"they need {', '.join(f.name for f in fields)}.")
        out: dict[str, Any] = {}
        for f in fields:
            value = values.get(f.name)
            if f.name in ("classes", "frozen"):
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"The session settings' {f.name} must be a list of names, not {value!r:.80}.")
                out[f.name] = tuple(value)
            elif value is None and f.default is None:
                out[f.name] = None
            elif not isinstance(value, Mapping):
                kind = "a dict or None" if f.default is None else "a dict"
                raise ConfigError(f"The session settings' {f.name} must be {kind}, not {value!r:.80}.")
            elif f.name == "lr_factors":
                try:
                    out[f.name] = {str(k): float(v) for k, v in value.items()}
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"The session settings' lr_factors must map layer names to numbers ({exc}).") \
                        from None
            else:
                out[f.name] = _plain(value)
        return cls(**out)
