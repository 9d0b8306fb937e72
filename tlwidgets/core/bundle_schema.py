"""What a bundle's ``tlwidgets.json`` and ``split.json`` may hold, checked before anything is built.

A bundle can come from anywhere, so its files are input like any other: every field has a
type, and every number that sizes something (image sides, classes, hidden width, list
lengths, text lengths) has a range. A value outside raises :class:`ModelError` naming the
file, the field and the value, so a damaged or edited bundle is refused when it is opened,
never later at predict or fit (or by the machine running out of memory).

Unknown fields are ignored (a newer tlwidgets may add some); fields that this version
never reads (``created``, ``versions``) are not checked.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .errors import ModelError
from .heads import MAX_CLASSES, MAX_HIDDEN
from .transforms import IMAGE_SIZE_RANGE

#: Largest ``tlwidgets.json`` or ``split.json`` read, in bytes.
MAX_JSON_BYTES = 64 * 2**20
#: Largest weights file read, in bytes (the biggest catalog model is 2.5 GB).
MAX_WEIGHTS_BYTES = 4 * 2**30
#: Sides in pixels: the crop the model sees, and the resize before it.
IMAGE_SIDE = IMAGE_SIZE_RANGE
RESIZE_SIDE = (16, round(1024 * 256 / 224))
NUM_CLASSES = (2, MAX_CLASSES)
HIDDEN = (1, MAX_HIDDEN)
#: Characters of a class name, layer name or other short text; of a path; of an error message.
MAX_TEXT = 1_000
MAX_PATH = 4_096
MAX_MESSAGE = 20_000
MAX_LAYERS = 10_000  # frozen layer names, learning-rate factors
MAX_BATCHES = 2_000_000  # records in a history
MAX_EPOCHS = 100_000
MAX_RUNS = 10_000
MAX_KEYS = 200  # entries of a small table: one log record, the options of a run
MAX_SPLIT_FILES = 5_000_000
MAX_COUNT = 10**12  # parameter counts, epoch and step numbers

SOURCES = ("torchvision", "packaged", "checkpoint")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
MEMORY_FORMATS = ("contiguous", "channels_last")
NON_FINITE = ("NaN", "Infinity", "-Infinity")
# Log keys that code reads as numbers (float(value)); other keys may also be null.
_METRICS = ("loss", "acc", "val_loss", "val_acc", "lr")
_SEPARATORS = re.compile(r"[/\\]")
_DAMAGED = "The file was edited or damaged; save the session again."


def refuse(where: str, field: str, what: str) -> NoReturn:
    """Raise the ModelError for ``field`` of the file ``where``: ``what`` is wrong with it."""
    raise ModelError(f"{where}: {field} {what}. {_DAMAGED}")


def _shown(value: Any) -> str:
    """``value`` as JSON (as the file has it), cut short."""
    if isinstance(value, (list, dict)) and len(value) > 8:
        return f"(a list of {len(value)} items)" if isinstance(value, list) else f"(an object of {len(value)} entries)"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (RecursionError, TypeError, ValueError):
        text = f"(a {type(value).__name__})"
    return text if len(text) <= 60 else text[:45] + f"... ({len(text)} characters)"


def _key(field: str, key: str) -> str:
    """``field.key``, or ``field["key"]`` for a key that is not a plain name."""
    return f"{field}.{key}" if key.isidentifier() else f"{field}[{_shown(key)}]"


class _Checker:
    """Field checks of one file; each returns the value (or refuses it)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, what: str) -> NoReturn:
        refuse(self.where, field, what)

    def whole(self, field: str, value: Any, low: int, high: int, none: bool = False) -> Any:
        if value is None and none:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"{_shown(value)} must be a whole number from {low} to {high}")
        if not low <= value <= high:
            self.fail(field, f"{_shown(value)} is out of range ({low} to {high})")
        return value

    def number(self, field: str, value: Any, low: float, high: float, *, below: bool = False,
               none: bool = False, non_finite: bool = False) -> Any:
        """A finite number in ``[low, high]`` (``[low, high)`` with ``below``); with ``non_finite``
        also NaN or an infinity, or the strings that stand for them."""
        if value is None and none:
            return None
        if non_finite and isinstance(value, str) and value in NON_FINITE:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(field, f"{_shown(value)} must be a number")
        if isinstance(value, int) and abs(value) > MAX_COUNT:
            self.fail(field, f"{_shown(value)} is out of range ({low:g} to {high:g})")
        if not math.isfinite(value):
            if non_finite:
                return value
            self.fail(field, f"{_shown(value)} must be a finite number")
        if not (low <= value < high if below else low <= value <= high):
            self.fail(field, f"{_shown(value)} is out of range ({low:g} to {high:g}{', not included' if below else ''})")
        return value

    def text(self, field: str, value: Any, limit: int = MAX_TEXT, none: bool = False) -> Any:
        if value is None and none:
            return None
        if not isinstance(value, str):
            self.fail(field, f"{_shown(value)} must be text")
        if len(value) > limit:
            self.fail(field, f"has {len(value)} characters, more than {limit}")
        return value

    def flag(self, field: str, value: Any, none: bool = False) -> Any:
        if not (isinstance(value, bool) or (value is None and none)):
            self.fail(field, f"{_shown(value)} must be true or false" + (" (or null)" if none else ""))
        return value

    def choice(self, field: str, value: Any, allowed: tuple[str, ...], none: bool = False) -> Any:
        if value is None and none:
            return None
        if not isinstance(value, str) or value not in allowed:
            self.fail(field, f"{_shown(value)} is not one of {', '.join(allowed)}")
        return value

    def table(self, field: str, value: Any, none: bool = True, limit: int = MAX_KEYS) -> dict[str, Any]:
        """A JSON object (``None`` reads as empty when ``none``)."""
        if value is None and none:
            return {}
        if not isinstance(value, dict):
            self.fail(field, f"{_shown(value)} must be a table (a JSON object)")
        if len(value) > limit:
            self.fail(field, f"has {len(value)} entries, more than {limit}")
        return value

    def rows(self, field: str, value: Any, limit: int, noun: str = "entries", none: bool = True) -> list[Any]:
        """A JSON list of at most ``limit`` items (``None`` reads as empty when ``none``)."""
        if value is None and none:
            return []
        if not isinstance(value, list):
            self.fail(field, f"{_shown(value)} must be a list")
        if len(value) > limit:
            self.fail(field, f"holds {len(value)} {noun}, more than {limit}")
        return value

    def names(self, field: str, value: Any, limit: int, unique: bool = False) -> list[str]:
        names = self.rows(field, value, limit, "names")
        seen: set[str] = set()
        for i, name in enumerate(names):
            self.text(f"{field}[{i}]", name)
            if unique and name in seen:
                self.fail(field, f"names {_shown(name)} twice")
            seen.add(name)
        return names

    def scalars(self, field: str, value: Any, none: bool = True) -> dict[str, Any]:
        """A small table of short texts, numbers, true/false and nulls."""
        values = self.table(field, value, none)
        for key, item in values.items():
            self.text(f"{field} key", key)
            if isinstance(item, str):
                self.text(_key(field, key), item)
            elif item is not None and not isinstance(item, bool):
                self.number(_key(field, key), item, -MAX_COUNT, MAX_COUNT, non_finite=True)
        return values

    def triple(self, field: str, value: Any, low: float, high: float) -> list[float]:
        if not isinstance(value, list) or len(value) != 3:
            self.fail(field, f"{_shown(value)} must be a list of 3 numbers (red, green, blue)")
        return [self.number(f"{field}[{i}]", v, low, high) for i, v in enumerate(value)]

    def record(self, field: str, value: Any, whole: tuple[str, ...]) -> dict[str, Any]:
        """One batch or epoch log: the ``whole`` keys are required counts, the metrics numbers."""
        values = self.scalars(field, value, none=False)
        for key in whole:
            self.whole(f"{field}.{key}", values.get(key), 0, MAX_COUNT)
        for key, item in values.items():
            if isinstance(item, str) and item not in NON_FINITE:
                self.fail(_key(field, key), f"{_shown(item)} must be a number")
            if key in _METRICS:
                self.number(_key(field, key), item, -MAX_COUNT, MAX_COUNT, non_finite=True)
        return values


# ---------------------------------------------------------------------------- tlwidgets.json
def check_metadata(meta: dict[str, Any], where: str, version: int) -> None:
    """Refuse ``meta`` (the parsed ``tlwidgets.json`` at ``where``) unless every field restore reads fits.

    Args:
        meta: the parsed JSON object.
        where: the file, as shown in messages.
        version: the newest format version this tlwidgets reads.

    Raises:
        ModelError: naming ``where``, the first bad field and its value.
    """
    c = _Checker(where)
    found = c.whole("format_version", meta.get("format_version"), 1, 10**6)
    if found > version:
        raise ModelError(
            f"{where}: the bundle uses format version {found}, newer than this tlwidgets reads "
            f"({version}); upgrade tlwidgets to open it."
        )
    weights = c.table("weights", meta.get("weights"))
    c.text("weights.file", weights.get("file", ""))
    sha = c.text("weights.sha256", weights.get("sha256"), none=True)
    if sha is not None and (len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha)):
        c.fail("weights.sha256", f"{_shown(sha)} must be 64 hexadecimal digits")
    _check_model(c, c.table("model", meta.get("model"), none=False))
    classes = c.names("classes", _required(c, meta, "classes"), NUM_CLASSES[1], unique=True)
    head = c.table("head", _required(c, meta, "head"), none=False)
    count = c.whole("head.num_classes", head.get("num_classes"), *NUM_CLASSES)
    if len(classes) != count:
        c.fail("classes", f"holds {len(classes)} names, but head.num_classes is {count}: they must agree")
    c.number("head.dropout", head.get("dropout", 0.0), 0.0, 1.0, below=True)
    c.whole("head.hidden", head.get("hidden"), *HIDDEN, none=True)
    c.text("head.path", head.get("path", ""))
    c.text("head.kind", head.get("kind", ""))
    _check_transforms(c, "transforms", c.table("transforms", meta.get("transforms")))
    augment = c.table("augment", meta.get("augment"))
    c.flag("augment.flip", augment.get("flip", False))
    c.flag("augment.random_resized_crop", augment.get("random_resized_crop", False))
    c.number("augment.rotation", augment.get("rotation", 0.0), 0.0, 180.0)
    c.number("augment.color_jitter", augment.get("color_jitter", 0.0), 0.0, 1.0)
    c.names("frozen", meta.get("frozen"), MAX_LAYERS)
    factors = c.table("lr_factors", meta.get("lr_factors"), limit=MAX_LAYERS)
    for key, factor in factors.items():
        c.text("lr_factors key", key)
        c.number(_key("lr_factors", key), factor, 0.0, 1e6)
    c.table("config", meta.get("config"))  # its values are TrainConfig's to check
    _check_history(c, "history", meta.get("history"))
    data = c.table("data", meta.get("data"))
    for key in ("source", "layout", "root"):
        c.text(f"data.{key}", data.get(key, ""), MAX_PATH, none=True)
    for i, run in enumerate(c.rows("runs", meta.get("runs"), MAX_RUNS, "runs")):
        _check_run(c, f"runs[{i}]", run)


def _required(c: _Checker, values: dict[str, Any], key: str, field: str | None = None) -> Any:
    if key not in values:
        c.fail(field or key, "is missing")
    return values[key]


def _check_model(c: _Checker, model: dict[str, Any]) -> None:
    c.text("model.name", _required(c, model, "name", "model.name"))
    c.choice("model.source", _required(c, model, "source", "model.source"), SOURCES)
    c.text("model.arch", _required(c, model, "arch", "model.arch"))
    c.flag("model.pretrained", model.get("pretrained"), none=True)
    c.choice("model.memory_format", model.get("memory_format"), MEMORY_FORMATS, none=True)
    spec = c.table("model.spec", model.get("spec"))
    for key in ("name", "family", "arch"):
        if key in spec:
            c.text(f"model.spec.{key}", spec[key])
    if "source" in spec:
        c.choice("model.spec.source", spec["source"], SOURCES)
    for key in ("params_m", "gflops", "size_mb", "top1", "top5"):
        if key in spec:
            c.number(f"model.spec.{key}", spec[key], 0.0, 1e9, none=True)
    for key in ("weights_url", "weights_path"):
        if key in spec:
            c.text(f"model.spec.{key}", spec[key], MAX_PATH, none=True)
    if "num_classes" in spec:
        c.whole("model.spec.num_classes", spec["num_classes"], 1, NUM_CLASSES[1])
    _check_transforms(c, "model.spec", spec)


def _check_transforms(c: _Checker, field: str, values: dict[str, Any]) -> None:
    checks: dict[str, Callable[[str, Any], Any]] = {
        "input_size": lambda f, v: c.whole(f, v, *IMAGE_SIDE),
        "resize_size": lambda f, v: c.whole(f, v, *RESIZE_SIDE),
        "image_size": lambda f, v: c.whole(f, v, *IMAGE_SIDE, none=True),
        "mean": lambda f, v: c.triple(f, v, -100.0, 100.0),
        "std": lambda f, v: c.triple(f, v, 1e-6, 100.0),
        "interpolation": lambda f, v: c.choice(f, v, INTERPOLATIONS),
    }
    for key, check in checks.items():
        if key in values:
            check(f"{field}.{key}", values[key])


def _check_history(c: _Checker, field: str, value: Any) -> None:
    """A training history: ``batches`` and ``epochs`` logs, ``stopped``, ``config``."""
    if value is None:
        return
    history = c.table(field, value)
    for i, row in enumerate(c.rows(f"{field}.batches", history.get("batches"), MAX_BATCHES, "records")):
        c.record(f"{field}.batches[{i}]", row, ("epoch", "step"))
    for i, row in enumerate(c.rows(f"{field}.epochs", history.get("epochs"), MAX_EPOCHS, "records")):
        c.record(f"{field}.epochs[{i}]", row, ("epoch",))
    c.flag(f"{field}.stopped", history.get("stopped", False))
    c.scalars(f"{field}.config", history.get("config"))


def _check_run(c: _Checker, field: str, value: Any) -> None:
    run = c.table(field, value, none=False)
    for key in ("id", "model", "pretrained", "trainable_params", "total_params", "head", "options"):
        _required(c, run, key, f"{field}.{key}")
    c.whole(f"{field}.id", run.get("id"), 1, MAX_COUNT)
    c.text(f"{field}.model", run.get("model"))
    c.flag(f"{field}.pretrained", run.get("pretrained"), none=True)
    c.names(f"{field}.frozen", run.get("frozen"), MAX_LAYERS)
    for key in ("trainable_params", "total_params"):
        c.whole(f"{field}.{key}", run.get(key), 0, MAX_COUNT)
    c.scalars(f"{field}.head", run.get("head"))
    c.scalars(f"{field}.options", run.get("options"))
    _check_history(c, f"{field}.history", run.get("history"))
    c.whole(f"{field}.first_epoch", run.get("first_epoch", 0), 0, MAX_COUNT)
    c.whole(f"{field}.continues", run.get("continues"), 1, MAX_COUNT, none=True)
    c.number(f"{field}.wall_time_s", run.get("wall_time_s", "NaN"), 0.0, 1e12, non_finite=True)
    c.text(f"{field}.started", run.get("started", ""), none=True)
    for key in ("stopped", "failed"):
        c.flag(f"{field}.{key}", run.get(key, False))
    c.text(f"{field}.error", run.get("error", ""), MAX_MESSAGE)
    c.whole(f"{field}.image_size", run.get("image_size"), 1, IMAGE_SIDE[1], none=True)
    for key in ("trained", "tag"):
        c.text(f"{field}.{key}", run.get(key, ""))
    c.scalars(f"{field}.extra", run.get("extra"))


# ---------------------------------------------------------------------------- split.json
def check_split(split: Any, where: str) -> None:
    """Refuse ``split.json`` unless it is ``{root, classes, train, val}`` with ``[path, label]``
    rows whose paths stay inside the data folder and whose labels name a class.

    Raises:
        ModelError: naming ``where``, the first bad field and its value.
    """
    c = _Checker(where)
    if not isinstance(split, dict):
        c.fail("(the whole file)", f"{_shown(split)} must be a JSON object")
    c.text("root", split.get("root", ""), MAX_PATH)
    classes = c.names("classes", _required(c, split, "classes"), NUM_CLASSES[1], unique=True)
    if not classes:
        c.fail("classes", "is empty")
    parts = {key: c.rows(key, split.get(key), sys.maxsize, "files") for key in ("train", "val")}
    total = sum(len(rows) for rows in parts.values())
    if total > MAX_SPLIT_FILES:
        c.fail("train and val", f"hold {total} files together, more than {MAX_SPLIT_FILES}")
    for key, rows in parts.items():
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str)
                    and isinstance(row[1], int) and not isinstance(row[1], bool)):
                c.fail(f"{key}[{i}]", f"{_shown(row)} must be a [path, label] pair")
            path, label = row
            if not 0 <= label < len(classes):
                c.fail(f"{key}[{i}]", f"has label {label}, outside the {len(classes)} classes")
            if not _inside(path):
                c.fail(f"{key}[{i}]", f"path {_shown(path)} must be a relative path inside the data folder")


def _inside(path: str) -> bool:
    """True for a non-empty relative path that cannot leave the folder it is joined to, read
    as a POSIX or a Windows path (no leading slash, no drive, no ``..`` part)."""
    if not path or len(path) > MAX_PATH or "\0" in path or path[0] in "/\\" or path[1:2] == ":":
        return False
    return ".." not in _SEPARATORS.split(path)


__all__ = ["MAX_JSON_BYTES", "MAX_SPLIT_FILES", "MAX_WEIGHTS_BYTES", "check_metadata", "check_split", "refuse"]
