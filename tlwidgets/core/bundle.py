"""Save a trained session to a bundle and open it again, without ever unpickling.

A bundle is a folder (or the same files in a ``.zip``) holding:

``tlwidgets.json``
    Readable metadata: format name and version, library versions, the model's
    architecture and weights source, head, classes, transforms, augmentation, frozen
    layers, LR factors, training options, history, data location and the weights file's
    SHA-256.
``model.safetensors``
    The state dict (parameters and buffers), in the safetensors format: plain tensors,
    no code.
``split.json``
    The data root and the training and validation files (relative paths and labels),
    when data was loaded; it restores the exact split.

:func:`load` rebuilds the architecture with random weights, installs the stored head,
loads the tensors, applies the frozen set and restores every session trait. Bundles
written by a generated training script (:mod:`tlwidgets.core.script`) use the same
format, so they open the same way.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
import torchvision
from torch import Tensor, nn

from . import catalog, data as data_mod, heads, layers, training
from .errors import DataError, ModelError

if TYPE_CHECKING:
    from .session import Session

FORMAT = "tlwidgets-bundle"
FORMAT_VERSION = 1
META_FILE = "tlwidgets.json"
WEIGHTS_FILE = "model.safetensors"
SPLIT_FILE = "split.json"

_SAVE_HINT = "Save one with Session.save(path)."


# ---------------------------------------------------------------------------- metadata
def versions() -> dict[str, str]:
    """Versions of the libraries that wrote a bundle."""
    import tlwidgets

    return {
        "tlwidgets": tlwidgets.__version__, "torch": torch.__version__,
        "torchvision": torchvision.__version__, "python": platform.python_version(),
    }


def memory_format(model: nn.Module) -> str:
    """``"channels_last"`` when the model's 4-D weights are stored channels-last, else ``"contiguous"``."""
    for p in model.parameters():
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
            cl = p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            return "channels_last" if cl else "contiguous"
    return "contiguous"


def model_section(session: Session) -> dict[str, Any]:
    """Architecture and weights source of the session's model."""
    spec = session.spec
    stored = {k: v for k, v in dataclasses.asdict(spec).items() if k != "class_names"}
    return {
        "name": spec.name, "source": spec.source, "arch": spec.arch, "family": spec.family,
        "pretrained": getattr(session, "pretrained", None),
        "checkpoint": spec.weights_path if spec.source == "checkpoint" else None,
        "weights_url": spec.weights_url,
        "memory_format": memory_format(session.model),
        "spec": _jsonable(stored),
    }


def transforms_section(session: Session) -> dict[str, Any]:
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


def data_section(bundle: data_mod.DataBundle | None) -> dict[str, Any] | None:
    """Where the data came from (the file lists go to ``split.json``)."""
    if bundle is None:
        return None
    return {
        "source": bundle.report.source, "layout": bundle.report.layout, "root": _data_root(bundle),
        "num_train": len(bundle.train), "num_val": len(bundle.val),
    }


def split_of(bundle: data_mod.DataBundle) -> dict[str, Any]:
    """The ``split.json`` content: root, classes, and ``[relative path, label]`` per file."""
    root = _data_root(bundle)

    def rel(samples: list[data_mod.Sample]) -> list[list[Any]]:
        return [[Path(os.path.relpath(s.path, root)).as_posix(), int(s.label)] for s in samples]

    return {"root": root, "classes": list(bundle.classes), "train": rel(bundle.train), "val": rel(bundle.val)}


def session_metadata(session: Session) -> dict[str, Any]:
    """Everything ``tlwidgets.json`` holds except the weights entry."""
    history = session.history
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "written_by": "tlwidgets.Session.save",
        "versions": versions(),
        "model": model_section(session),
        "head": dataclasses.asdict(session.head),
        "classes": list(session.classes),
        "transforms": transforms_section(session),
        "augment": dataclasses.asdict(session.augment),
        "frozen": list(session.frozen),
        "lr_factors": {k: float(v) for k, v in session.lr_factors.items()},
        "config": dataclasses.asdict(session.config),
        "history": None if history is None else {
            "batches": history.batches, "epochs": history.epochs,
            "stopped": bool(history.stopped), "config": history.config,
        },
        "data": data_section(session.data),
    }


def _data_root(bundle: data_mod.DataBundle) -> str:
    paths = [s.path for s in (*bundle.train, *bundle.val)]
    if not paths:
        return ""
    root = os.path.commonpath([os.path.abspath(p) for p in paths])
    return root if os.path.isdir(root) else os.path.dirname(root)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------- saving
def state_dict_for_saving(model: nn.Module) -> dict[str, Tensor]:
    """The model's tensors on the CPU, contiguous and not sharing memory (as safetensors wants)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[key] = t
    return out


def save(session: Session, path: str | os.PathLike[str]) -> Path:
    """Write the session to a bundle folder, or to a ``.zip`` of the same files.

    An existing bundle at ``path`` is replaced; any other existing file or non-empty
    folder is refused, so nothing of the user's is overwritten by accident.

    Returns:
        The absolute path written.

    Raises:
        ModelError: no model, or ``path`` holds something that is not a bundle.
    """
    if session.model is None or session.spec is None:
        raise ModelError("Nothing to save: load a model first (and train it).")
    dest = Path(path).expanduser().resolve()
    _check_target(dest)
    meta = session_metadata(session)
    split = split_of(session.data) if session.data is not None else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tlw-save-", dir=dest.parent) as tmp:
        folder = Path(tmp) / "bundle"
        write_folder(folder, state_dict_for_saving(session.model), meta, split)
        if dest.suffix.lower() == ".zip":
            part = Path(tmp) / "bundle.zip"
            with zipfile.ZipFile(part, "w") as zf:
                for name in (META_FILE, WEIGHTS_FILE, SPLIT_FILE):
                    if (folder / name).is_file():
                        zf.write(folder / name, name, compress_type=zipfile.ZIP_DEFLATED)
            os.replace(part, dest)
        else:
            old = Path(tmp) / "old"
            if dest.exists():
                os.replace(dest, old)
            os.replace(folder, dest)
    return dest


def write_folder(
    folder: Path, state: Mapping[str, Tensor], meta: dict[str, Any], split: dict[str, Any] | None
) -> None:
    """Write weights, ``split.json`` and (last, with the weights' SHA-256) ``tlwidgets.json``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    save_file(dict(state), str(weights), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    meta = dict(meta)
    meta["weights"] = {"file": WEIGHTS_FILE, "sha256": _sha256(weights.read_bytes()), "num_tensors": len(state)}
    if split is not None:
        (folder / SPLIT_FILE).write_text(json.dumps(split), encoding="utf-8")
    (folder / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _check_target(dest: Path) -> None:
    if not dest.exists():
        return
    if dest.is_dir():
        if any(dest.iterdir()) and not (dest / META_FILE).is_file():
            raise ModelError(
                f"{dest} is a folder that is not a tlwidgets bundle; refusing to overwrite it. "
                "Choose a new path (a bundle is a folder of its own)."
            )
    elif not (dest.suffix.lower() == ".zip" and _zip_is_bundle(dest)):
        raise ModelError(f"{dest} exists and is not a tlwidgets bundle; choose another path.")


def _zip_is_bundle(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return META_FILE in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- reading
def _read_files(path: Path) -> tuple[dict[str, Any], bytes, dict[str, Any] | None]:
    """``(metadata, weights bytes, split or None)`` of a bundle folder or zip."""
    if path.is_dir():
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise ModelError(f"{path} is not a tlwidgets bundle: it has no {META_FILE}. {_SAVE_HINT}")
        meta = _parse_json(meta_file.read_bytes(), meta_file)
        weights_name = _weights_name(meta, path)
        weights_file = path / weights_name
        if not weights_file.is_file():
            raise ModelError(f"The bundle {path} lacks its weights file {weights_name}.")
        split_file = path / SPLIT_FILE
        split = _parse_json(split_file.read_bytes(), split_file) if split_file.is_file() else None
        return meta, weights_file.read_bytes(), split
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if META_FILE not in names:
                raise ModelError(f"{path} is a zip but not a tlwidgets bundle: it has no {META_FILE}. {_SAVE_HINT}")
            meta = _parse_json(zf.read(META_FILE), path / META_FILE)
            weights_name = _weights_name(meta, path)
            if weights_name not in names:
                raise ModelError(f"The bundle {path} lacks its weights file {weights_name}.")
            split = _parse_json(zf.read(SPLIT_FILE), path / SPLIT_FILE) if SPLIT_FILE in names else None
            return meta, zf.read(weights_name), split
    if not path.exists():
        raise ModelError(f"No bundle at {path}: the path does not exist.")
    raise ModelError(f"{path} is not a tlwidgets bundle (a folder or .zip holding {META_FILE}). {_SAVE_HINT}")


def _parse_json(raw: bytes, where: Path) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{where} is not valid JSON ({exc}); the bundle is damaged.") from exc
    if not isinstance(value, dict):
        raise ModelError(f"{where} must hold a JSON object; the bundle is damaged.")
    return value


def _weights_name(meta: dict[str, Any], path: Path) -> str:
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}/{META_FILE} is not tlwidgets bundle metadata (format {meta.get('format')!r}).")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"{path} uses bundle format version {version!r}, newer than this tlwidgets reads "
            f"({FORMAT_VERSION}); upgrade tlwidgets to open it."
        )
    name = str((meta.get("weights") or {}).get("file", WEIGHTS_FILE))
    if name != Path(name).name or not name.endswith(".safetensors"):
        raise ModelError(
            f"{path}: weights file {name!r} refused. Bundles hold weights only as a .safetensors file "
            "beside tlwidgets.json; pickled files (.pt, .pth, .pkl) are never opened because they can run code."
        )
    return name


def _tensors(raw: bytes, meta: dict[str, Any], path: Path) -> dict[str, Tensor]:
    """Parse the weights; a pickle or any other non-safetensors content is refused unread."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    want = (meta.get("weights") or {}).get("sha256")
    if want and _sha256(raw) != want:
        raise ModelError(
            f"The weights in {path} do not match the SHA-256 recorded in {META_FILE}: the file was "
            "changed or damaged after saving, so it is not loaded. Save the bundle again."
        )
    try:
        return st_load(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"The weights in {path} are not a safetensors file ({exc}). A bundle's weights are read "
            "only as safetensors; a pickled file is never opened, because unpickling can run code."
        ) from exc


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``tlwidgets.json`` of a bundle folder or zip (nothing else is read or run)."""
    return _read_files(Path(path).expanduser())[0]


# ---------------------------------------------------------------------------- loading
def load(
    path: str | os.PathLike[str],
    device: str | torch.device | None = None,
    data: bool | str | os.PathLike[str] = True,
    session_cls: type[Session] | None = None,
) -> Session:
    """Open a bundle as a new session, trained model, history and all.

    Args:
        path: a bundle folder or ``.zip``.
        device: where the model goes; ``None`` picks the best device.
        data: ``True`` restores the stored split when its files are present (else the
            session has no data, and predict still works); ``False`` never loads data; a
            folder path is the data root moved elsewhere.
        session_cls: the class to create (``Session`` or a subclass).

    Raises:
        ModelError: not a bundle, a newer format, weights that are not safetensors or do
            not fit the stored architecture.
    """
    if session_cls is None:
        from .session import Session as session_cls
    src = Path(path).expanduser().resolve()
    meta, raw, split = _read_files(src)
    state = _tensors(raw, meta, src)
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
        stored = _known(catalog.ModelSpec, model.get("spec") or {})
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


def _history_from(values: Mapping[str, Any] | None) -> training.History | None:
    if not values:
        return None

    def clean(rows: list[dict]) -> list[dict]:
        return [{k: (math.nan if v is None else v) for k, v in row.items()} for row in rows]

    return training.History(
        batches=clean(list(values.get("batches") or [])), epochs=clean(list(values.get("epochs") or [])),
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


__all__ = [
    "FORMAT", "FORMAT_VERSION", "META_FILE", "SPLIT_FILE", "WEIGHTS_FILE", "load", "read_metadata",
    "save", "session_metadata", "split_of", "state_dict_for_saving", "write_folder",
]
