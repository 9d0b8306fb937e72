"""Choosing the compute device and the fastest safe precision for it."""

from __future__ import annotations

import functools
import os

import torch

from .errors import ConfigError


def best_device() -> torch.device:
    """Return CUDA if available, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AMX or AVX512-BF16).

    ``TLWIDGETS_CPU_BF16=0`` (or ``1``) overrides the detection, so a bf16 machine can run
    the fp32 path that CPUs without bf16 take (the tests do).
    """
    forced = os.environ.get("TLWIDGETS_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_flags_have_bf16()


def cpu_has_amx() -> bool:
    """True when this CPU has AMX tiles for bf16 (there eager bf16 runs near four times fp32).

    ``TLWIDGETS_CPU_BF16=0`` makes it False with the rest of the bf16 path.
    """
    if os.environ.get("TLWIDGETS_CPU_BF16", "").strip() == "0":
        return False
    return "amx_bf16" in _cpu_flags()


@functools.cache
def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return ""


def _cpu_flags_have_bf16() -> bool:
    flags = _cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """Pick the autocast dtype for ``device``.

    Args:
        device: where the model runs.
        precision: ``"auto"`` (fastest safe choice), ``"fp32"`` (no autocast),
            ``"bf16"`` or ``"fp16"``.

    Returns:
        The dtype to pass to :func:`torch.autocast`, or ``None`` for plain fp32.
    """
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"precision={precision!r} is not one of 'auto', 'fp32', 'bf16', 'fp16'.")
    kind = torch.device(device).type
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def describe(device: torch.device | str) -> str:
    """A short human description, e.g. ``"cpu (2 threads, bf16)"`` or the GPU's name."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    if dev.type == "cpu":
        extra = ", bf16" if cpu_has_bf16() else ""
        return f"cpu ({torch.get_num_threads()} threads{extra})"
    return dev.type
