"""The measured prediction speeds, kept in ``speed.json`` in the tlwidgets cache folder.

:mod:`tlwidgets.core.speed` measures and writes them; the catalog (``list_models``), the
model picker and the recipes' time estimates read them. This module imports neither, so
both can use it.
"""

from __future__ import annotations

import threading

import torch

from tlwidgets.core import device as _device
from tlwidgets.core._cache import read_json, write_json

LOCK = threading.Lock()  # held while speed.json is read, changed and written
_FILE = "speed.json"


def read() -> dict[str, dict]:
    return read_json(_FILE)


def write(data: dict[str, dict]) -> None:
    write_json(_FILE, data)


def resolve(device: str | torch.device | None) -> torch.device:
    return _device.best_device() if device is None else torch.device(device)


def key(desc: str, name: str, batch_size: int) -> str:
    return f"{desc}|{name}|{batch_size}"


def speeds_for(device: str | torch.device | None = None) -> dict[str, float]:
    """``{name: ms_per_image}`` of every cached measurement on ``device`` (latest wins)."""
    desc = _device.describe(resolve(device))
    latest: dict[str, tuple[float, float]] = {}
    for entry in read().values():
        if not isinstance(entry, dict) or entry.get("device") != desc:
            continue
        try:
            name, ms = str(entry["name"]), float(entry["ms_per_image"])
        except (KeyError, TypeError, ValueError):
            continue
        when = float(entry.get("measured_at") or 0.0)
        if name not in latest or when >= latest[name][0]:
            latest[name] = (when, ms)
    return {name: ms for name, (_, ms) in latest.items()}


def cached_speed(name: str, device: str | torch.device | None = None) -> float | None:
    """``ms_per_image`` of the latest cached measurement of ``name`` on ``device``, or ``None``."""
    return speeds_for(device).get(name)
