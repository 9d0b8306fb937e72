"""Measure how fast a catalog model classifies images on this machine, and remember it.

Results are kept in ``speed.json`` in the tlwidgets cache directory, keyed by the
device description, the model name and the batch size, so the model table can
show a measured ``ms_per_image`` without running anything. By default the model runs
in the runtime a user gets on this machine (:mod:`tlwidgets.core.runtimes`: eager
PyTorch, or ONNX Runtime where it is faster and matches).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from tlwidgets.core import device as _device
from tlwidgets.core import runtimes
from tlwidgets.core._cache import cache_dir
from tlwidgets.core.export import _Logits

from .errors import ConfigError

_LOCK = threading.Lock()
_FILE = "speed.json"
_RUNTIMES = ("auto", "torch", "onnxruntime")


def _cache_file() -> Path:
    return cache_dir() / _FILE


def _read() -> dict[str, dict]:
    # Same place as cache_dir(), which would create the folder: reading must not.
    base = os.environ.get("TLWIDGETS_CACHE_DIR") or Path.home() / ".cache" / "tlwidgets"
    try:
        data = json.loads((Path(base) / _FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(data: dict[str, dict]) -> None:
    path = _cache_file()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".speed-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _resolve(device: str | torch.device | None) -> torch.device:
    return _device.best_device() if device is None else torch.device(device)


def _key(desc: str, name: str, batch_size: int) -> str:
    return f"{desc}|{name}|{batch_size}"


def _synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def measure_speed(
    name: str,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    repeats: int = 5,
    precision: str = "auto",
    runtime: str = "auto",
) -> dict:
    """Time inference of a randomly initialised catalog model and cache the result.

    One warm-up batch is excluded; the median of ``repeats`` timed batches is used.

    Args:
        name: catalog model name.
        device: where to run (default :func:`best_device`).
        batch_size: images per batch, at the model's ``input_size``.
        repeats: timed batches.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast dtype).
        runtime: ``"auto"`` (the runtime :func:`tlwidgets.core.runtimes.select` picks for
            the whole model: ONNX Runtime where it is faster on this CPU and matches
            PyTorch, else PyTorch), ``"torch"`` (eager PyTorch) or ``"onnxruntime"``.

    Returns:
        ``{"name", "device", "batch_size", "ms_per_image", "peak_mem_mb", "precision",
        "runtime"}``; ``peak_mem_mb`` is the peak allocated accelerator memory, ``None`` on
        the CPU; ``runtime`` is the runtime that was timed (``"torch"`` or ``"onnxruntime"``).

    Raises:
        ValueError: non-positive ``batch_size`` or ``repeats``, unknown precision or runtime.
        ModelError: unknown model name.
    """
    from tlwidgets.core.catalog import build_model, get_spec

    if int(batch_size) < 1 or int(repeats) < 1:
        raise ConfigError(f"batch_size={batch_size!r} and repeats={repeats!r} must both be >= 1.")
    if runtime not in _RUNTIMES:
        raise ConfigError(f"runtime={runtime!r} is not one of {', '.join(map(repr, _RUNTIMES))}.")
    dev = _resolve(device)
    dtype = _device.autocast_dtype(dev, precision)
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):  # the same weights every time: an exported file is reused
        torch.manual_seed(0)
        model = build_model(spec.name, pretrained=False).to(dev).eval()
        x = torch.randn(int(batch_size), 3, spec.input_size, spec.input_size, device=dev)
    autocast = torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    run, used = model, "torch"
    if runtime != "torch":
        logits = _Logits(model).eval()

        def eager(images: torch.Tensor) -> torch.Tensor:
            with torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
                return logits(images)

        run = runtimes.select(logits, eager, dev, dtype, data=x, where="whole model", force=runtime)
        used = run.choice.name
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    with torch.inference_mode(), autocast:
        run(x)  # warm-up: allocations, kernel selection
        _synchronize(dev)
        for _ in range(int(repeats)):
            start = time.perf_counter()
            run(x)
            _synchronize(dev)
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    result = {
        "name": spec.name,
        "device": _device.describe(dev),
        "batch_size": int(batch_size),
        "ms_per_image": statistics.median(times) * 1000.0 / int(batch_size),
        "peak_mem_mb": peak,
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
        "runtime": used,
    }
    with _LOCK:
        data = _read()
        data[_key(result["device"], spec.name, int(batch_size))] = {**result, "measured_at": time.time()}
        _write(data)
    return result


def _speeds_for(device: str | torch.device | None = None) -> dict[str, float]:
    """``{name: ms_per_image}`` of every cached measurement on ``device`` (latest wins)."""
    desc = _device.describe(_resolve(device))
    latest: dict[str, tuple[float, float]] = {}
    for entry in _read().values():
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
    return _speeds_for(device).get(name)
