"""Export a classifier to ONNX with a dynamic batch axis, checked against PyTorch.

The model is exported in fp32 on the CPU from a copy (the session's model is left as it
is). With ``onnx`` installed, the class names and the preprocessing are written into the
file's metadata (``tlwidgets.classes``, ``tlwidgets.transforms``). With ``onnxruntime``
installed, the exported file is run on sample inputs at two batch sizes and compared
with PyTorch; a difference above the tolerance raises and removes the file.

Install the optional tools with ``pip install "tlwidgets[export]"``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ModelError

from .onnx_graph import EXPORTERS, INPUT_NAME, OUTPUT_NAME, Logits, export_graph


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and how well it matched PyTorch.

    Attributes:
        path: the ``.onnx`` file.
        exporter: ``"dynamo"`` (torch.export-based) or ``"torchscript"`` (the older exporter).
        input_size: side of the square input images (the batch axis is dynamic).
        max_abs_diff: largest absolute difference of the logits between onnxruntime and
            PyTorch on the sample inputs; ``None`` when onnxruntime is not installed.
        batch_sizes: batch sizes the check ran with.
    """

    path: Path
    exporter: str
    input_size: int
    max_abs_diff: float | None
    batch_sizes: tuple[int, ...] = ()

    def summary(self) -> str:
        """One line for people."""
        check = (
            f"max abs difference to PyTorch {self.max_abs_diff:.2e} at batch sizes "
            f"{', '.join(map(str, self.batch_sizes))}"
            if self.max_abs_diff is not None else "not checked (pip install onnxruntime to check it)"
        )
        return f"Exported {self.path} ({self.exporter} exporter, input Nx3x{self.input_size}x{self.input_size}); {check}."


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _annotate(path: Path, classes: Sequence[str] | None, transforms: Mapping[str, Any] | None) -> None:
    """Write class names and preprocessing into the ONNX metadata (needs ``onnx``)."""
    if not _has("onnx"):
        return
    import onnx

    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    if classes is not None:
        props["tlwidgets.classes"] = json.dumps(list(classes))
    if transforms is not None:
        props["tlwidgets.transforms"] = json.dumps(dict(transforms))
    props["tlwidgets.input"] = f"{INPUT_NAME}: float32 Nx3xHxW, normalised RGB; output {OUTPUT_NAME}: NxC"
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _compare(path: Path, module: nn.Module, batches: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference of onnxruntime's logits from PyTorch's."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    worst = 0.0
    with torch.no_grad():
        for x in batches:
            want = module(x).float()
            got = torch.from_numpy(sess.run(None, {name: x.numpy()})[0])
            if got.shape != want.shape:
                raise ModelError(f"The ONNX model in {path} returned shape {tuple(got.shape)}, PyTorch {tuple(want.shape)}.")
            worst = max(worst, float((got - want).abs().max()))
    return worst


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size: int,
    samples: torch.Tensor | None = None,
    *,
    classes: Sequence[str] | None = None,
    transforms: Mapping[str, Any] | None = None,
    exporter: str = "auto",
    opset: int | None = None,
    verify: bool = True,
    atol: float = 1e-4,
) -> OnnxExport:
    """Export ``model`` to ONNX (fp32, CPU) with a dynamic batch axis.

    Args:
        model: the classifier; it is copied, never changed.
        path: the file to write; ``.onnx`` is appended when it has no suffix.
        input_size: side of the square input images.
        samples: a batch of preprocessed images (N x 3 x S x S) to compare on; random
            normal images when ``None``.
        classes: class names, stored in the file's metadata.
        transforms: preprocessing description, stored in the file's metadata.
        exporter: ``"dynamo"`` (needs onnxscript), ``"torchscript"``, or ``"auto"``: the
            TorchScript exporter, and dynamo when that fails or is gone from torch.
        opset: ONNX opset; ``None`` for the exporter's default.
        verify: compare with PyTorch when onnxruntime is installed.
        atol: largest allowed absolute difference of the logits.

    Raises:
        ModelError: bad arguments, the export failed, or the ONNX model disagrees with
            PyTorch by more than ``atol`` (the file is then removed).
    """
    if exporter not in EXPORTERS:
        raise ModelError(f"exporter={exporter!r} is not one of {', '.join(map(repr, EXPORTERS))}.")
    dest = Path(path).expanduser().resolve()
    if dest.is_dir():
        raise ModelError(f"{dest} is a folder; pass a file path such as {dest / 'model.onnx'}.")
    if not dest.suffix:
        dest = dest.with_suffix(".onnx")
    size = int(input_size)
    module = Logits(copy.deepcopy(model)).to("cpu", torch.float32).eval()
    module.to(memory_format=torch.contiguous_format)
    if samples is None:
        samples = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    samples = samples.detach().to("cpu", torch.float32).contiguous()
    if samples.dim() != 4 or tuple(samples.shape[1:]) != (3, size, size):
        raise ModelError(f"samples must be N x 3 x {size} x {size} images, got shape {tuple(samples.shape)}.")
    if exporter == "auto":  # the TorchScript exporter is much faster; newer torch versions drop it
        order = ["torchscript", "dynamo"]
    else:
        order = [exporter]
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    used = None
    for name in order:
        try:
            export_graph(module, samples[:2], dest, name, opset)
            used = name
            break
        except Exception as exc:  # noqa: BLE001 - try the other exporter, report both
            errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
    if used is None:
        hint = " (pip install onnxscript for the dynamo exporter)" if not _has("onnxscript") else ""
        raise ModelError(f"ONNX export of {type(model).__name__} failed{hint}: " + " | ".join(errors))
    _annotate(dest, classes, transforms)
    diff, sizes = None, ()
    if verify and _has("onnxruntime"):
        batches = [samples[:1], samples] if len(samples) > 1 else [samples, samples.repeat(3, 1, 1, 1)]
        sizes = tuple(len(b) for b in batches)
        diff = _compare(dest, module, batches)
        if not diff <= atol:
            dest.unlink(missing_ok=True)
            raise ModelError(
                f"The ONNX export differs from PyTorch by up to {diff:.2e} (allowed {atol:g}), so {dest} "
                "was removed. Try the other exporter (exporter='torchscript' or 'dynamo') or another opset."
            )
    return OnnxExport(dest, used, size, diff, sizes)


def export_session(
    session: Any, path: str | os.PathLike[str], images: Sequence[Any] | None = None, **options: Any
) -> OnnxExport:
    """Export a session's model, checked on its own preprocessed images.

    Args:
        session: a :class:`~tlwidgets.core.session.Session` with a model.
        path: the ``.onnx`` file to write.
        images: image paths or PIL images to compare on; default up to four images of the
            loaded data (validation first), else random inputs.
        **options: passed on to :func:`export_onnx` (``exporter``, ``opset``, ``verify``, ``atol``).
    """
    from . import bundle, data as data_mod

    if session.model is None or session.spec is None:
        raise ModelError("Nothing to export: load a model first (and train it).")
    size = session.input_size
    eval_tf = (session.data.eval_tf if session.data is not None
               else data_mod.make_transforms(session.spec, None, session.image_size)[1])
    if images is None and session.data is not None:
        images = [s.path for s in (*session.data.val, *session.data.train)[:4]]
    samples = torch.stack([eval_tf(data_mod.load_image(item)) for item in images]) if images else None
    return export_onnx(
        session.model, path, size, samples, classes=list(session.classes),
        transforms=bundle.transforms_section(session), **options,
    )
