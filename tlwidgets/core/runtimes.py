"""Which runtime runs the frozen layers: eager PyTorch, ``torch.compile`` or ONNX Runtime.

Without native bf16 the frozen feature pass runs in fp32, where eager PyTorch is several
times slower than ONNX Runtime for small convolutional nets (EfficientNet-Lite0 on an AVX2
laptop: 26 vs 100 images/s); with bf16, eager bf16 is usually faster. So :func:`select`
times each candidate on a batch of the fit's own images (a warm-up, then up to three rounds,
interleaved so that a busy machine slows all alike, best round counted), keeps the fastest
whose features match PyTorch's, and remembers the choice in ``runtimes.json`` in the cache
folder, keyed by the device, the architecture (code, layers, weight shapes: speed does not
depend on weight values), the cut, batch shape and layout, precision and library versions.

Choosing costs little where the answer is clear. Eager PyTorch is timed on the
:data:`CHECK_IMAGES` images the reference features come from (on the bf16 path once more,
warm, in bf16), and ONNX Runtime on its first run over the whole batch (its warm-up, so if
anything too slow); when one is :data:`CLEAR` times as fast as the other that decides,
otherwise both are timed side by side.
The features the chosen ONNX Runtime computed for that batch are kept
(:attr:`Runner.computed`): the feature cache stores them instead of running the batch again.

* ``torch``: eager PyTorch as the trainer runs it (autocast dtype, channels-last input).
* ``compile``: ``torch.compile`` of it, only where ``compile_features`` already wants it
  (compiling takes 15-60 s and is never done only to time it).
* ``onnxruntime``: the module exported to ONNX and run by ONNX Runtime on the CPU
  (:mod:`tlwidgets.core.ort_function`).

A candidate replaces the current path (eager, or compiled where wanted) only when at least
:data:`MARGIN` times as fast. Features are compared with eager PyTorch in fp32 on the first
:data:`CHECK_IMAGES` images, for a remembered or forced choice too: fp32 candidates may
differ by :data:`FP32_TOLERANCE` times the largest absolute feature (ONNX Runtime differs by
about 1e-6 of it, a wrongly exported operator by far more); bf16 ones (compiled under bf16
autocast) by :data:`BF16_TOLERANCE` in relative norm ``|got - want| / |want|`` (eager bf16
features of Lite0, MobileNetV2, ResNet-18/50 differ from fp32 by 0.4-1.7% in norm; single
elements are noisier). Timing runs only when the eager pass should take :data:`MIN_SECONDS`
or more; :data:`MIN_SECONDS_AMX` on CPUs with AMX, whose eager bf16 is near four times their
fp32 (fp32 ONNX Runtime was at best a little faster there: Lite0 84 vs 78 images/s);
:data:`MIN_SECONDS_BF16` with AVX512-BF16 but no AMX (AMD Zen 4 and later, Cooper Lake),
where eager bf16 is only about twice fp32 and ONNX Runtime's fp32 beats it by 1.3-1.7x
(Lite0 205 vs 146 images/s on a Zen 4 EPYC) but choosing costs up to 2 s when the two must be
timed side by side. The work is estimated from one image first (a batch of one runs slower
per image, so this only stops clearly short runs), then from the check images, warm.
GPUs keep PyTorch untimed. Whatever fails (onnxruntime
missing, an operator neither exporter handles, a mismatch, an error at run time) falls back
to PyTorch with the reason in :attr:`RuntimeChoice.rejected`.

``TLWIDGETS_FEATURE_RUNTIME`` forces a choice: ``auto`` (default), ``torch`` (PyTorch as
before: eager, compiled where ``compile_features`` asks), ``onnxruntime`` (checked; PyTorch
when it fails) or ``compile``. OpenVINO is not a candidate: another large dependency, while
ONNX Runtime already is the optional dependency that checks ONNX exports.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from tlwidgets.core import device as _device
from tlwidgets.core._cache import read_json, write_json
from tlwidgets.core.ort_function import (
    OnnxFunction,
    architecture,
    exported_file,
    onnxruntime_available,
)

RUNTIMES = ("auto", "torch", "onnxruntime", "compile")
ENV = "TLWIDGETS_FEATURE_RUNTIME"
#: Time only when the eager pass over the data should take at least this long (seconds).
MIN_SECONDS = 5.0
#: The same where the frozen layers run in bf16 autocast on a CPU without AMX.
MIN_SECONDS_BF16 = 8.0
#: The same where the frozen layers run in bf16 autocast on a CPU with AMX.
MIN_SECONDS_AMX = 60.0
#: A candidate replaces the current path only when at least this many times as fast.
MARGIN = 1.1
#: fp32 candidates: largest absolute difference / largest absolute feature.
FP32_TOLERANCE = 1e-3
#: bf16 candidates: norm of the difference / norm of the fp32 features.
BF16_TOLERANCE = 5e-2
#: Eager PyTorch (timed on the check images) against ONNX Runtime's first run (on the whole
#: batch): a ratio this large decides without timing both side by side.
CLEAR = 1.5
#: Images of the batch the features are compared on.
CHECK_IMAGES = 8
#: Timed rounds stop after this many seconds (at least one round runs).
TIME_LIMIT_S = 1.0
ROUNDS = 3
NAMES = {"torch": "PyTorch", "compile": "torch.compile", "onnxruntime": "ONNX Runtime"}
_STORE = "runtimes.json"
_LOCK = threading.Lock()

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class RuntimeChoice:
    """The runtime of a frozen pass and why.

    Attributes:
        name: ``"torch"``, ``"compile"`` or ``"onnxruntime"``.
        images_per_s: measured speed of each candidate (empty when nothing was timed).
        rejected: why each other candidate is not used.
        source: ``"measured"`` (timed now), ``"cached"`` (timed by an earlier fit),
            ``"forced"`` (``TLWIDGETS_FEATURE_RUNTIME`` or an argument) or ``"default"``.
    """

    name: str
    images_per_s: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    source: str = "default"

    @property
    def label(self) -> str:
        """For people, e.g. ``"ONNX Runtime, 98 img/s"``."""
        speed = self.images_per_s.get(self.name)
        return NAMES[self.name] + (f", {speed:.0f} img/s" if speed else "")

    @property
    def worth_saying(self) -> bool:
        """Whether a progress line should name the runtime (it was measured or is not PyTorch)."""
        return self.name == "onnxruntime" or bool(self.images_per_s)


class Runner:
    """A batch -> output function with the :class:`RuntimeChoice` behind it.

    When the chosen runtime fails at run time, this and later calls use eager PyTorch.
    ``computed`` holds what the chosen runtime returned for the whole batch it was checked on
    (``None`` when it did not run on all of it): real outputs of real inputs, which the feature
    cache keeps instead of computing them again.
    """

    def __init__(self, fn: Fn, choice: RuntimeChoice, fallback: Fn | None = None,
                 computed: torch.Tensor | None = None) -> None:
        self.fn, self.choice, self._fallback = fn, choice, fallback
        self.computed = computed

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._fallback is None:
            return self.fn(x)
        try:
            return self.fn(x)
        except Exception as exc:  # noqa: BLE001 - any runtime error: PyTorch can still do it
            why = f"failed at run time: {type(exc).__name__}: {str(exc)[:200]}"
            warnings.warn(f"{NAMES[self.choice.name]} {why}; using PyTorch.", RuntimeWarning, stacklevel=2)
            self.choice.rejected[self.choice.name] = why
            self.choice.name = "torch"
            self.fn, self._fallback = self._fallback, None
            return self.fn(x)


def requested() -> str:
    """The runtime ``TLWIDGETS_FEATURE_RUNTIME`` asks for (``"auto"`` when unset or unknown)."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in RUNTIMES:
        warnings.warn(f"{ENV}={value!r} is not one of {', '.join(RUNTIMES)}; using 'auto'.", RuntimeWarning,
                      stacklevel=2)
        return "auto"
    return value


# ---------------------------------------------------------------------------- remembered choices
def _read_store() -> dict[str, dict]:
    return read_json(_STORE)


def _remember(key: str, choice: RuntimeChoice) -> None:
    with _LOCK:
        data = _read_store()
        data[key] = {"name": choice.name, "images_per_s": choice.images_per_s, "rejected": choice.rejected,
                     "measured_at": time.time()}
        write_json(_STORE, data)


def _recall(key: str) -> RuntimeChoice | None:
    entry = _read_store().get(key)
    try:  # an edited or damaged entry counts as none
        speeds = {str(k): float(v) for k, v in dict(entry.get("images_per_s") or {}).items()}
        rejected = {str(k): str(v) for k, v in dict(entry.get("rejected") or {}).items()}
        name = entry["name"]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return RuntimeChoice(name, speeds, rejected, "cached") if name in NAMES else None


# ---------------------------------------------------------------------------- fingerprints
# ---------------------------------------------------------------------------- ONNX Runtime
def _onnx_runtime(module: nn.Module, x: torch.Tensor, like: torch.Tensor) -> OnnxFunction:
    if not onnxruntime_available():
        raise RuntimeError("not installed (pip install onnxruntime)")
    example = x[:2] if len(x) > 1 else torch.cat([x, x])  # a batch of one would fix the batch axis
    return OnnxFunction(exported_file(module, example), len(x), like)


# ---------------------------------------------------------------------------- checks and timing
def _mismatch(got: torch.Tensor, want: torch.Tensor, bf16: bool) -> str | None:
    """Why ``got`` does not match the fp32 features ``want``, or None."""
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    if got.shape != want.shape:
        return f"features of shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    if not bool(torch.isfinite(got).all()):
        return "features that are not finite"
    if bf16:
        rel = float((got - want).norm() / want.norm().clamp(min=1e-12))
        return None if rel <= BF16_TOLERANCE else (
            f"features differ from PyTorch's fp32 ones by {rel:.1e} in relative norm (allowed {BF16_TOLERANCE:g})")
    diff, scale = float((got - want).abs().max()), float(want.abs().max())
    return None if diff <= FP32_TOLERANCE * max(scale, 1e-12) else (
        f"features differ from PyTorch's by up to {diff:.1e} (allowed {FP32_TOLERANCE:g} x {scale:.2g})")


def _time(candidates: dict[str, Fn], x: torch.Tensor) -> tuple[dict[str, float], dict[str, str]]:
    """Images/s of each candidate (best timed round) and the ones that failed."""
    failed: dict[str, str] = {}
    best: dict[str, float] = {}
    start = time.perf_counter()
    for _ in range(ROUNDS):
        for name, fn in candidates.items():
            if name in failed:
                continue
            try:
                t = time.perf_counter()
                fn(x)
                best[name] = min(best.get(name, math.inf), time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - a failing candidate is out, not the fit
                failed[name] = _failed(exc)
        if time.perf_counter() - start > TIME_LIMIT_S:
            break
    return {n: len(x) / t for n, t in best.items() if n not in failed and t > 0}, failed


def _seconds_per_image(eager: Fn, probe: torch.Tensor) -> float:
    start = time.perf_counter()
    eager(probe)
    return (time.perf_counter() - start) / max(len(probe), 1)


def min_seconds(amp: torch.dtype | None) -> float:
    """Seconds of eager frozen-layer work from which choosing a runtime pays off on this CPU."""
    if amp is None:
        return MIN_SECONDS
    return MIN_SECONDS_AMX if _device.cpu_has_amx() else MIN_SECONDS_BF16


def _short(images: int | None, seconds_per_image: float, amp: torch.dtype | None) -> str | None:
    """Why timing does not pay off for ``images`` images, or None when it may."""
    if images is None:
        return None
    expected = seconds_per_image * images
    return f"not timed: about {expected:.1f} s of frozen-layer work" if expected < min_seconds(amp) else None


# ---------------------------------------------------------------------------- choosing
def select(module: nn.Module, eager: Fn, device: torch.device, amp: torch.dtype | None, *,
           data: Callable[[], torch.Tensor] | torch.Tensor, where: str = "", compiled: Fn | None = None,
           images: int | None = None, probe: torch.Tensor | None = None, force: str | None = None) -> Runner:
    """Choose the runtime of ``module`` (see the module docstring); never raises for a candidate.

    Args:
        module: what runs (the frozen prefix, or a whole model); exported for ONNX Runtime.
        eager: ``module`` as PyTorch runs it today (autocast inside).
        device, amp: where it runs and the autocast dtype (``None``: fp32).
        data: a batch of real inputs, or a function reading one (only read when needed).
        where: what ``module`` is, part of the remembered choice's key.
        compiled: the compiled function where compiling is wanted, else ``None``.
        images: how many images the fit will run through it: whether timing pays off is
            judged first from ``probe`` (one input; a batch of one runs slower per image, so
            only a clearly short run stops there), then from the check images, warm.
            ``None``: always time.
        force: a value of :data:`RUNTIMES` overriding ``TLWIDGETS_FEATURE_RUNTIME``.
    """
    mode = force if force in RUNTIMES and force != "auto" else requested()
    base_name, base = ("compile", compiled) if compiled is not None else ("torch", eager)
    if device.type != "cpu":
        return Runner(base, RuntimeChoice(base_name, rejected={"onnxruntime": f"PyTorch runs on the {device.type}"}))
    if mode == "torch" or (mode == "compile" and compiled is not None):
        return Runner(base, RuntimeChoice(base_name, source="forced"))
    if mode == "compile":
        return Runner(eager, RuntimeChoice("torch", rejected={"compile": "not built"}, source="forced"))
    if mode == "auto" and images is not None and probe is not None:
        with torch.no_grad():
            why = _short(images, _seconds_per_image(eager, probe), amp)
        if why is not None:
            return Runner(base, RuntimeChoice(base_name, rejected={"onnxruntime": why}))
    try:
        x = data() if callable(data) else data
        with torch.no_grad():
            return _choose(module, eager, base_name, base, amp, x, where, mode, images)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the current path still works
        return Runner(base, RuntimeChoice(base_name, rejected={"onnxruntime": _failed(exc)}))


def _choose(module: nn.Module, eager: Fn, base_name: str, base: Fn, amp: torch.dtype | None, x: torch.Tensor,
            where: str, mode: str, images: int | None = None) -> Runner:
    key = _key(module, x, where, amp, base_name)
    remembered = _recall(key) if mode == "auto" else None
    if remembered is not None and remembered.name != "onnxruntime":
        return Runner(base, remembered)
    untimed = mode == "onnxruntime" or remembered is not None
    k = min(CHECK_IMAGES, len(x))
    want, eager_speed = None, 0.0
    if amp is None:  # the timed eager pass is the fp32 reference too
        start = time.perf_counter()
        want = eager(x[:k])
        eager_speed = k / max(time.perf_counter() - start, 1e-9)
    elif not untimed:  # eager bf16 on the check images, warm
        eager(x[:k])
        start = time.perf_counter()
        eager(x[:k])
        eager_speed = k / max(time.perf_counter() - start, 1e-9)
    why = None if untimed else _short(images, 1 / eager_speed, amp)
    if why is not None:  # before the reference and the export: nothing more is spent
        return Runner(base, RuntimeChoice(base_name, rejected={"onnxruntime": why}))
    if want is None:
        want = module(x[:k])  # the fp32 reference (no autocast around module)
    rejected: dict[str, str] = {}
    candidates: dict[str, Fn] = {base_name: base}
    if base_name == "compile":
        candidates["torch"] = eager
    try:
        candidates["onnxruntime"] = _onnx_runtime(module, x, want[:1] if amp is None else eager(x[:1]))
    except Exception as exc:  # noqa: BLE001 - missing package, an operator the exporters cannot handle
        rejected["onnxruntime"] = str(exc) if isinstance(exc, RuntimeError) else _failed(exc)
    first: dict[str, float] = {}
    computed = None
    for name in [n for n in candidates if n != "torch" and (n == "onnxruntime" or not untimed)]:
        try:  # the first run is the warm-up too; eager PyTorch is the reference, never rejected
            run = getattr(candidates[name], "fp32", candidates[name])  # ONNX Runtime before the cast
            t = time.perf_counter()
            y = run(x)
            first[name] = len(x) / max(time.perf_counter() - t, 1e-9)
            why = _mismatch(y[:k], want, bf16=name == "compile" and amp is not None)
            if why is None and name == "onnxruntime":
                computed = candidates[name].finish(y)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001
            why = _failed(exc)
        if why is not None:
            rejected[name] = why
            del candidates[name]
    if untimed:  # forced, or timed by an earlier fit: ONNX Runtime if it works here
        old = remembered or RuntimeChoice("onnxruntime", source="forced")
        rejected = {**old.rejected, **rejected}
        if "onnxruntime" in candidates:
            return Runner(candidates["onnxruntime"], RuntimeChoice("onnxruntime", old.images_per_s, rejected,
                                                                   old.source), eager, computed)
        return Runner(base, RuntimeChoice(base_name, {}, rejected, old.source))
    if len(candidates) == 1:  # nothing to compare with: remembered, so the export is not tried again
        choice = RuntimeChoice(base_name, {}, rejected, "measured")
        _remember(key, choice)
        return Runner(base, choice)
    speeds: dict[str, float] = {}
    if set(candidates) == {"torch", "onnxruntime"}:
        ort = first["onnxruntime"]  # a first run, warm-up included: if anything too slow
        if max(ort, eager_speed) >= CLEAR * min(ort, eager_speed):
            speeds = {"torch": eager_speed, "onnxruntime": ort}
    if not speeds:  # close, bf16, or compiled: time them side by side
        if "torch" in candidates:
            eager(x)  # warm-up at the batch size
        speeds, failed = _time(candidates, x)
        rejected.update(failed)
    best = _fastest(speeds, base_name, rejected)
    choice = RuntimeChoice(best, speeds, rejected, "measured")
    _remember(key, choice)
    return Runner(candidates.get(best, eager), choice, eager if best != "torch" else None,
                  computed if best == "onnxruntime" else None)


def _fastest(speeds: dict[str, float], base_name: str, rejected: dict[str, str]) -> str:
    """The fastest runtime, the current one unless another is :data:`MARGIN` times as fast."""
    current = base_name if base_name in speeds else "torch"
    best = max(speeds, key=lambda n: speeds[n]) if speeds else current
    if best != current and speeds[best] < MARGIN * speeds.get(current, 0.0):
        best = current
    for name, speed in speeds.items():
        if name != best:
            rejected[name] = f"slower: {speed:.0f} img/s, {NAMES[best]} {speeds[best]:.0f} img/s"
    return best


def _key(module: nn.Module, x: torch.Tensor, where: str, amp: torch.dtype | None, base_name: str) -> str:
    """Like speed.json's keys: the device, then what the speed depends on."""
    try:
        ort_version = importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        ort_version = "none"
    layout = "channels_last" if x.dim() == 4 and not x.is_contiguous() else "contiguous"
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, str(amp))
    return "|".join([_device.describe(x.device), architecture(module), where, str(tuple(x.shape)), layout,
                     precision, base_name, f"torch {torch.__version__}", f"onnxruntime {ort_version}"])


def _failed(exc: BaseException) -> str:
    return f"failed: {type(exc).__name__}: {str(exc)[:200]}"
