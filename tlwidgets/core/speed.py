"""Measure how fast a catalog model classifies images on this machine, and remember it.

Results are kept in ``speed.json`` in the tlwidgets cache directory, keyed by the
device description, the model name and the batch size, so the model table can
show a measured ``ms_per_image`` without running anything. By default the model runs
in the runtime a user gets on this machine (:mod:`tlwidgets.core.runtimes`: eager
PyTorch, or ONNX Runtime where it is faster and matches).
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from tlwidgets.core import device as _device
from tlwidgets.core import runtimes
from tlwidgets.core import speed_cache
from tlwidgets.core.speed_cache import cached_speed  # noqa: F401 - part of this module's API
from tlwidgets.core.onnx_graph import Logits

from .errors import ConfigError

_RUNTIMES = ("auto", "torch", "onnxruntime")


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
    dev = speed_cache.resolve(device)
    dtype = _device.autocast_dtype(dev, precision)
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):  # the same weights every time: an exported file is reused
        torch.manual_seed(0)
        model = build_model(spec.name, pretrained=False).to(dev).eval()
        x = torch.randn(int(batch_size), 3, spec.input_size, spec.input_size, device=dev)
    autocast = torch.autocast(dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    run, used = model, "torch"
    if runtime != "torch":
        logits = Logits(model).eval()

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
    with speed_cache.LOCK:
        data = speed_cache.read()
        data[speed_cache.key(result["device"], spec.name, int(batch_size))] = {**result, "measured_at": time.time()}
        speed_cache.write(data)
    return result
