"""How the frozen prefix runs for the feature cache: eager, compiled, or the runtime chosen by measurement."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable

import torch

from tlwidgets.core import runtimes
from tlwidgets.core.runtimes import RuntimeChoice
from tlwidgets.core.splits import Split

COMPILE_MODES = ("auto", "on", "off")
#: ``compile_features="auto"`` compiles the prefix when at least this many images are to be
#: extracted: compiling costs 20-60 s on a CPU and roughly doubles the feature throughput.
COMPILE_MIN_IMAGES = 20_000


def autocast(device: torch.device, amp: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp)


def prefix_function(split: Split, device: torch.device, amp: torch.dtype | None, compile_mode: str = "off",
                    batch_size: int = 32, images: int = 0, *,
                    data: Callable[[], torch.Tensor] | torch.Tensor | None = None,
                    probe: torch.Tensor | None = None) -> tuple[Callable[[torch.Tensor], torch.Tensor], bool]:
    """The frozen prefix as a function of a batch, in the fastest runtime that matches PyTorch.

    Args:
        split: the model's split.
        device, amp: where it runs and the autocast dtype (``None``: fp32).
        compile_mode: ``"on"``, ``"off"``, or ``"auto"`` (compile for ``images`` >=
            :data:`COMPILE_MIN_IMAGES`). Compiled code (inductor, frozen weights) is built
            for one batch shape; smaller batches are padded to ``batch_size``.
        images: how many images the function will see.
        data: a batch of the fit's inputs (or a function reading one). With it the runtime is
            chosen by :func:`tlwidgets.core.runtimes.select` (eager PyTorch, compiled where
            ``compile_mode`` wants it, or ONNX Runtime); without it PyTorch runs as before.
        probe: one input, to estimate whether timing the runtimes pays off.

    Returns:
        The function (a :class:`~tlwidgets.core.runtimes.Runner`, whose ``choice`` says which
        runtime runs and why), and whether it is compiled. Under ``no_grad`` only.
    """

    def eager(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, amp):
            return split.prefix(x)

    forced = runtimes.requested() if data is not None else "auto"
    wanted = forced == "compile" or forced != "onnxruntime" and (
        compile_mode == "on" or (compile_mode == "auto" and images >= COMPILE_MIN_IMAGES and os.name != "nt"))
    compiled = _compiled(eager, batch_size) if wanted else None
    if data is None:
        runner = runtimes.Runner(compiled or eager, RuntimeChoice("compile" if wanted else "torch"))
    else:
        runner = runtimes.select(split.prefix, eager, device, amp, data=data, where=split.where,
                                 compiled=compiled, images=images, probe=probe)
    return runner, runner.choice.name == "compile"


def _compiled(eager: Callable[[torch.Tensor], torch.Tensor], batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``eager`` compiled for one batch shape (smaller batches padded), eager again if compiling fails."""
    compiled = torch.compile(eager, dynamic=False, options={"freezing": True})
    size = int(batch_size)
    state = {"ok": True}

    def run(x: torch.Tensor) -> torch.Tensor:
        if not state["ok"]:
            return eager(x)
        n = x.shape[0]
        if n < size:  # one shape only: a smaller last batch would compile again
            pad = x[:1].expand(size - n, *x.shape[1:])
            x = torch.cat([x, pad])
            if x.dim() == 4 and not x.is_contiguous():
                x = x.contiguous(memory_format=torch.channels_last)
        try:
            return compiled(x)[:n]
        except Exception as exc:  # noqa: BLE001 - the compiler does not support every model/platform
            state["ok"] = False
            warnings.warn(f"Compiling the feature pass failed ({type(exc).__name__}: {exc}); "
                          "using eager mode.", RuntimeWarning, stacklevel=2)
            return eager(x[:n])

    return run
