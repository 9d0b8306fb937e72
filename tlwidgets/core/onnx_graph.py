"""A network (or its frozen part) as an ONNX graph: the one export both the ONNX file of a
trained model (:mod:`tlwidgets.core.export`) and the ONNX Runtime path of the frozen layers
(:mod:`tlwidgets.core.runtimes`) use. fp32, batch axis dynamic, inputs named ``images``.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .evaluation import logits_of

EXPORTERS = ("auto", "dynamo", "torchscript")
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


class Logits(nn.Module):
    """The model with its output reduced to the class-score tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(images))


def export_graph(module: nn.Module, example: torch.Tensor, path: Path, exporter: str, opset: int | None,
                 fold_constants: bool = True) -> None:
    """Write ``module`` traced on ``example`` to ``path`` with ``exporter`` ("dynamo" or "torchscript").

    ``fold_constants=False`` skips the TorchScript exporter's constant folding (a third of its
    time): for a file only ONNX Runtime reads, which folds constants itself when it loads it.
    """
    kw: dict[str, Any] = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
    if opset is not None:
        kw["opset_version"] = opset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            with contextlib.redirect_stdout(None):  # the exporter narrates its steps on stdout
                torch.onnx.export(module, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                                  external_data=False, verbose=False, **kw)
        else:
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
            torch.onnx.export(module, (example,), str(path), dynamo=False, dynamic_axes=axes,
                              do_constant_folding=fold_constants, **kw)
