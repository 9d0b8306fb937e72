"""The frozen layers in ONNX Runtime: exported once per weights to the cache folder, run on the CPU.

The module is exported in fp32 with a dynamic batch axis (TorchScript exporter, else dynamo)
to ``runtimes/<hash of architecture, weights, input shape, torch version>.onnx`` in the
cache folder, reused while it is there; the most recently used :data:`_KEEP_FILES` files are
kept. :class:`OnnxFunction` runs such a file with as many threads as torch, its batch axis
fixed to the fit's batch size (smaller batches are padded): with all shapes known ONNX Runtime
folds the shape arithmetic of timm's "same" padding, which makes EfficientNet-Lite0 1.5x faster.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import re
import threading
from pathlib import Path

import torch
from torch import nn

from tlwidgets.core._cache import cache_dir
from tlwidgets.core.onnx_graph import export_graph

_FOLDER = "runtimes"
_KEEP_FILES = 8


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def architecture(module: nn.Module) -> str:
    """What the speed depends on: the module's code and layers, not its weight values."""
    h = hashlib.sha1(type(module).__qualname__.encode())
    h.update(str(getattr(module, "code", "")).encode())
    h.update(repr(module).encode())
    for name, t in module.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
    return h.hexdigest()[:16]


def _weights(module: nn.Module, shape: tuple[int, ...]) -> str:
    """What an exported file depends on: the architecture, every weight and the input shape."""
    h = hashlib.sha1(f"{architecture(module)}|{shape}|{torch.__version__}".encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def exported_file(module: nn.Module, example: torch.Tensor) -> Path:
    """The module exported to ONNX (fp32, dynamic batch) in the cache folder; reused when there."""
    folder = cache_dir(_FOLDER)
    path = folder / f"{_weights(module, tuple(example.shape[1:]))}.onnx"
    if path.is_file():
        os.utime(path)
        return path
    plain = copy.deepcopy(module).to("cpu", torch.float32).eval()
    plain.to(memory_format=torch.contiguous_format)
    tmp = folder / f".{os.getpid()}-{threading.get_ident()}-{path.name}"
    errors = []
    try:
        # TorchScript exports in half a second, dynamo in ten; ONNX Runtime folds the constants itself
        for exporter in ("torchscript", "dynamo"):
            try:
                with torch.no_grad():
                    export_graph(plain, example.detach().to("cpu", torch.float32).contiguous(), tmp, exporter, None,
                                 fold_constants=False)
                break
            except Exception as exc:  # noqa: BLE001 - try the other exporter, report both
                errors.append(f"{exporter}: {type(exc).__name__}: {str(exc)[:200]}")
        else:
            raise RuntimeError("export failed: " + " | ".join(errors))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _prune(folder)
    return path


def _prune(folder: Path) -> None:
    """Keep the most recently used exported files (only files this module names)."""
    files = [p for p in folder.iterdir() if re.fullmatch(r"[0-9a-f]{40}\.onnx", p.name) and p.is_file()]
    files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[_KEEP_FILES:]:
        old.unlink(missing_ok=True)


class OnnxFunction:
    """Runs an exported file on the CPU: NCHW float32 in, a tensor like PyTorch's out."""

    def __init__(self, path: Path, batch_size: int, like: torch.Tensor) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Spinning threads would take the cores from PyTorch's training steps between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_free_dimension_override_by_name("batch", int(batch_size))
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.size = int(batch_size)
        self.device, self.dtype = like.device, like.dtype
        self.channels_last = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(
            memory_format=torch.channels_last)

    def fp32(self, x: torch.Tensor) -> torch.Tensor:
        """The outputs as ONNX Runtime computes them: float32 on the CPU."""
        x = x.detach().to("cpu", torch.float32).contiguous()
        outs = []
        for part in x.split(self.size):
            n = len(part)
            if n < self.size:  # the session is built for one batch size
                part = torch.cat([part, part[:1].expand(self.size - n, *part.shape[1:])])
            outs.append(torch.from_numpy(self.session.run(None, {self.input: part.numpy()})[0])[:n])
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        """Outputs of :meth:`fp32` as PyTorch would give them: its device, dtype and layout."""
        y = y.to(self.device, self.dtype)  # PyTorch's dtype: the cache stores what it planned for
        return y.contiguous(memory_format=torch.channels_last) if self.channels_last else y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.fp32(x))
