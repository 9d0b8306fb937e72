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

:func:`load` reads only plain files inside the bundle, each of bounded size, and checks
every field (:mod:`tlwidgets.core.bundle_schema`) before it rebuilds the architecture with
random weights, installs the stored head, loads the tensors, applies the frozen set and
restores every session trait. :func:`save` replaces only these three files of a bundle
folder, each whole, and leaves anything else in it. Bundles written by a generated
training script (:mod:`tlwidgets.core.script`) use the same format, so they open the same way.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchvision
from torch import Tensor, nn

from . import _bundle_files as files, bundle_schema as schema, data as data_mod
from .errors import ModelError
from .regular_files import sha256_file
from .runs import run_to_dict
from .session_settings import (  # the sections are built there; these names stay importable from here
    NON_FINITE,
    data_root,
    data_section,
    jsonable as _jsonable,
    memory_format,
    model_section,
    number_from_json,
    transforms_section,
)

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


def split_of(bundle: data_mod.DataBundle) -> dict[str, Any]:
    """The ``split.json`` content: root, classes, and ``[relative path, label]`` per file."""
    root = data_root(bundle)

    def rel(samples: list[data_mod.Sample]) -> list[list[Any]]:
        return [[Path(os.path.relpath(s.path, root)).as_posix(), int(s.label)] for s in samples]

    return {"root": root, "classes": list(bundle.classes), "train": rel(bundle.train), "val": rel(bundle.val)}


def session_metadata(session: Session) -> dict[str, Any]:
    """Everything ``tlwidgets.json`` holds except the weights entry: the session's settings
    (:class:`~tlwidgets.core.session_settings.SessionSettings`) between format facts and runs."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "written_by": "tlwidgets.Session.save",
        "versions": versions(),
        **session.settings().to_dict(),
        "runs": [run_to_dict(run) for run in getattr(session, "runs", ())],
    }


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

    In an existing bundle folder only the bundle's own three files are replaced, each whole
    (``tlwidgets.json`` last); anything else in the folder stays. Any other existing file or
    non-empty folder is refused, so nothing of the user's is overwritten by accident.

    Returns:
        The absolute path written.

    Raises:
        ModelError: no model; ``path`` holds something that is not a bundle; or nothing can
            be written there (nothing is then left behind).
    """
    if session.model is None or session.spec is None:
        raise ModelError("Nothing to save: load a model first (and train it).")
    shown, dest = files.target(path)
    meta = session_metadata(session)
    split = split_of(session.data) if session.data is not None else None
    state = state_dict_for_saving(session.model)
    created: list[Path] = []
    try:
        files.check_target(dest, shown, META_FILE)
        if dest.suffix.lower() == ".zip":
            files.make_folders(dest.parent, created)
            _write_zip(dest, state, meta, split)
        else:
            files.make_folders(dest, created)
            write_folder(dest, state, meta, split)
    except OSError as exc:
        files.remove_folders(created)
        raise ModelError(
            f"Cannot save to {shown}: {files.why_not_written(exc)}. Nothing was written; "
            "choose a folder you can write to (for example one in your home folder)."
        ) from exc
    return dest


def write_folder(
    folder: Path, state: Mapping[str, Tensor], meta: dict[str, Any], split: dict[str, Any] | None
) -> None:
    """Write weights, ``split.json`` and (last, with the weights' SHA-256) ``tlwidgets.json`` into ``folder``.

    Each file replaces the old one whole; other files in ``folder`` are left alone. Without
    ``split``, an old ``split.json`` is removed (it would describe other data).
    """
    import safetensors.torch

    temps: list[Path] = []
    try:
        weights = files.temp_file(folder, WEIGHTS_FILE, temps)
        safetensors.torch.save_file(dict(state), str(weights), metadata=_WEIGHTS_METADATA)
        files.flush_to_disk(weights)
        texts = _texts(meta, split, weights, len(state))
        written = {name: files.temp_file(folder, name, temps, text) for name, text in texts.items()}
        os.replace(weights, folder / WEIGHTS_FILE)
        if SPLIT_FILE in written:
            os.replace(written[SPLIT_FILE], folder / SPLIT_FILE)
        elif os.path.lexists(folder / SPLIT_FILE) and not (folder / SPLIT_FILE).is_dir():
            os.unlink(folder / SPLIT_FILE)
        os.replace(written[META_FILE], folder / META_FILE)
    finally:
        files.remove_files(temps)


def _write_zip(dest: Path, state: Mapping[str, Tensor], meta: dict[str, Any], split: dict[str, Any] | None) -> None:
    import safetensors.torch

    temps: list[Path] = []
    try:
        weights = files.temp_file(dest.parent, WEIGHTS_FILE, temps)
        safetensors.torch.save_file(dict(state), str(weights), metadata=_WEIGHTS_METADATA)
        texts = _texts(meta, split, weights, len(state))
        part = files.temp_file(dest.parent, dest.name, temps)
        with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(weights, WEIGHTS_FILE)
            for name, text in texts.items():
                zf.writestr(name, text)
        files.flush_to_disk(part)
        os.replace(part, dest)
    finally:
        files.remove_files(temps)


_WEIGHTS_METADATA = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}


def _texts(meta: dict[str, Any], split: dict[str, Any] | None, weights: Path, num_tensors: int) -> dict[str, bytes]:
    """``split.json`` (when there is data) and ``tlwidgets.json`` (last), with the weights' SHA-256."""
    meta = {**meta, "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(weights), "num_tensors": num_tensors}}
    texts = {SPLIT_FILE: _dumps(split).encode("utf-8")} if split is not None else {}
    texts[META_FILE] = _dumps(meta, indent=1).encode("utf-8")
    return texts


# ---------------------------------------------------------------------------- reading
def _read_bundle(path: Path, weights: bool = True, split: bool = True) -> tuple[dict[str, Any], bytes, Any]:
    """``(checked metadata, weights bytes, split or None)`` of a bundle folder or zip."""
    with files.open_bundle(path, _SAVE_HINT) as read:
        raw = read(META_FILE, schema.MAX_JSON_BYTES)
        if raw is None:
            raise ModelError(f"{path} is not a tlwidgets bundle: it has no {META_FILE}. {_SAVE_HINT}")
        meta = _parse_json(raw, path / META_FILE)
        if meta.get("format") != FORMAT:
            found = repr(meta.get("format"))[:60]
            raise ModelError(f"{path / META_FILE} is not tlwidgets bundle metadata (format {found}).")
        schema.check_metadata(meta, str(path / META_FILE), FORMAT_VERSION)
        raw = read(SPLIT_FILE, schema.MAX_JSON_BYTES) if split else None
        parsed = None if raw is None else _parse_json(raw, path / SPLIT_FILE)
        if parsed is not None:
            schema.check_split(parsed, str(path / SPLIT_FILE))
        name = _weights_name(meta, path)
        tensors = read(name, schema.MAX_WEIGHTS_BYTES) if weights else b""
        if tensors is None:
            raise ModelError(f"The bundle {path} lacks its weights file {name}.")
        return meta, tensors, parsed


def _parse_json(raw: bytes, where: Path) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except RecursionError as exc:
        raise ModelError(f"{where} is nested too deeply to be bundle data; the bundle is damaged.") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{where} is not valid JSON ({str(exc)[:200]}); the bundle is damaged.") from exc
    if not isinstance(value, dict):
        raise ModelError(f"{where} must hold a JSON object; the bundle is damaged.")
    return value


def _weights_name(meta: dict[str, Any], path: Path) -> str:
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
    if want and hashlib.sha256(raw).hexdigest() != want:
        raise ModelError(
            f"The weights in {path} do not match the SHA-256 recorded in {META_FILE}: the file was "
            "changed or damaged after saving, so it is not loaded. Save the bundle again."
        )
    try:
        return st_load(raw)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise ModelError(
            f"The weights in {path} are not a safetensors file ({str(exc)[:200]}). A bundle's weights are read "
            "only as safetensors; a pickled file is never opened, because unpickling can run code."
        ) from exc


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked ``tlwidgets.json`` of a bundle folder or zip (nothing else is read or run)."""
    return _read_bundle(_source(path), weights=False, split=False)[0]


def _source(path: str | os.PathLike[str]) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        raise ModelError(f"Cannot open {path!r} as a bundle ({exc}).") from exc


# ---------------------------------------------------------------------------- loading
def read(
    path: str | os.PathLike[str], data: bool | str | os.PathLike[str] = True
) -> tuple[Path, dict[str, Any], dict[str, Tensor], dict[str, Any] | None]:
    """The checked parts of a bundle: ``(source, metadata, tensors, split or None)``.

    ``Session.load`` builds the session from them (:func:`tlwidgets.core._restore.load`).

    Args:
        path: a bundle folder or ``.zip``.
        data: ``False`` leaves ``split.json`` unread.

    Raises:
        ModelError: not a bundle, a newer format, a file that is not a plain file of the
            bundle or too large, a field of the wrong type or out of its range (see
            :mod:`tlwidgets.core.bundle_schema`), weights that are not safetensors; the
            message names the file and the field.
    """
    src = _source(path)
    meta, raw, split = _read_bundle(src, split=data is not False)
    return src, meta, _tensors(raw, meta, src), split


__all__ = [
    "FORMAT", "FORMAT_VERSION", "META_FILE", "NON_FINITE", "SPLIT_FILE", "WEIGHTS_FILE", "data_section",
    "memory_format", "model_section", "number_from_json", "read", "read_metadata", "save", "session_metadata",
    "split_of", "state_dict_for_saving", "transforms_section", "write_folder",
]
