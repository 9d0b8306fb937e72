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
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchvision
from torch import Tensor, nn

from . import data as data_mod
from .errors import ModelError
from .runs import run_to_dict

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
        "runs": [run_to_dict(run) for run in getattr(session, "runs", ())],
    }


def _data_root(bundle: data_mod.DataBundle) -> str:
    paths = [s.path for s in (*bundle.train, *bundle.val)]
    if not paths:
        return ""
    root = os.path.commonpath([os.path.abspath(p) for p in paths])
    return root if os.path.isdir(root) else os.path.dirname(root)


NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: string keys, lists for tuples, and a non-finite float as
    the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (strict JSON has no such numbers;
    a diverged run's loss is NaN). :func:`number_from_json` reads them back."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def number_from_json(value: Any) -> Any:
    """The float that :func:`_jsonable` wrote as ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``; other values as they are."""
    return NON_FINITE.get(value, value) if isinstance(value, str) else value


def _dumps(value: Any, **options: Any) -> str:
    return json.dumps(_jsonable(value), allow_nan=False, **options)


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
        (folder / SPLIT_FILE).write_text(_dumps(split), encoding="utf-8")
    (folder / META_FILE).write_text(_dumps(meta, indent=1), encoding="utf-8")


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
    from ._restore import restore

    src = Path(path).expanduser().resolve()
    meta, raw, split = _read_files(src)
    return restore(src, meta, _tensors(raw, meta, src), split, device, data, session_cls)


__all__ = [
    "FORMAT", "FORMAT_VERSION", "META_FILE", "SPLIT_FILE", "WEIGHTS_FILE", "load", "read_metadata",
    "save", "session_metadata", "split_of", "state_dict_for_saving", "write_folder",
]
