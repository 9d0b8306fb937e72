"""Assessing a trained classifier: metrics, confusion matrix, top losses, predictions."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from tlwidgets.core.device import autocast_dtype
from tlwidgets.core.errors import ConfigError, DataError, ModelError
from tlwidgets.core.images import ACCEPTED_IMAGES, Shrink, load_image
from tlwidgets.core.loading import (
    is_random_transform,
    read_batches,
    reader_threads,
    thread_map,
)
from tlwidgets.core.transforms import decode_shrink

PREDICTION_COLUMNS = ("path", "true", "pred", "confidence", "loss")
PREDICT_COLUMNS = ("image", "rank", "class", "probability")


@dataclass
class EvalResult:
    """Metrics of one evaluation.

    Attributes:
        accuracy: fraction of correct predictions.
        loss: mean cross-entropy.
        per_class: index = class names; columns precision, recall, f1, support.
        confusion: counts; index = true class names, columns = predicted class names.
        predictions: one row per sample: path (or dataset index), true and pred class
            names, confidence (probability of the predicted class), loss (cross-entropy).
    """

    accuracy: float
    loss: float
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    predictions: pd.DataFrame

    def top_losses(self, n: int = 9) -> pd.DataFrame:
        """The ``n`` samples with the highest loss, highest first."""
        return self.predictions.sort_values("loss", ascending=False, kind="stable").head(n)


def logits_of(out: Any) -> torch.Tensor:
    """The class scores in a model's output (GoogLeNet/Inception return named tuples in train mode)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelError(f"The model returned {type(out).__name__}; expected a tensor of class scores.")


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block; every module's own mode is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _sample_path(dataset: Dataset, index: int) -> Any:
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return index
    sample = samples[index]
    path = getattr(sample, "path", None)
    if path is None and isinstance(sample, (tuple, list)) and sample and isinstance(sample[0], (str, os.PathLike)):
        path = sample[0]
    return str(path) if path is not None else index


def _check_outputs(logits: torch.Tensor, classes: Sequence[str]) -> None:
    if logits.dim() != 2 or logits.shape[1] != len(classes):
        got = logits.shape[1] if logits.dim() == 2 else f"shape {tuple(logits.shape[1:])} of"
        raise ModelError(
            f"The model outputs {got} scores per image but there are {len(classes)} "
            "classes; replace the head with one output per class first."
        )


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    classes: Sequence[str],
    device: torch.device | str | None = None,
    batch_size: int = 32,
    precision: str = "auto",
) -> EvalResult:
    """Run ``model`` over ``dataset`` and compute classification metrics.

    Args:
        model: a classifier with one output per class; its training mode is restored after.
        dataset: ``(image tensor, int label)`` pairs; when it has ``samples`` with a
            ``path`` (or ``(path, label)`` tuples), predictions carry the file paths.
        classes: class names, in label order.
        device: where to run; ``None`` keeps the model where it is. Given, the model is moved there.
        batch_size: images per forward pass (32 keeps the quickstart's kernel under 1.5 GB
            with the default model; 64 took it to about 1.6 GB).
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).

    Raises:
        DataError: the dataset is empty or a label is outside ``range(len(classes))``.
        ModelError: the model's output size differs from ``len(classes)``.
    """
    classes = [str(c) for c in classes]
    n_classes = len(classes)
    if len(dataset) == 0:
        raise DataError("The evaluation set is empty; there is nothing to evaluate.")
    if device is not None:
        model.to(device)
    dev = _model_device(model)
    loader = read_batches(dataset, torch.arange(len(dataset)).split(batch_size))
    all_logits, all_labels = [], []
    with eval_mode(model), torch.no_grad():
        for x, y in loader:
            with _autocast(dev, precision):
                out = model(x.to(dev))
            logits = logits_of(out).float().cpu()
            _check_outputs(logits, classes)
            all_logits.append(logits)
            all_labels.append(torch.as_tensor(y).long().cpu())
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels)
    bad = labels[(labels < 0) | (labels >= n_classes)]
    if len(bad):
        raise DataError(f"Label {int(bad[0])} is outside the {n_classes} classes {classes}.")
    losses = nn.functional.cross_entropy(logits, labels, reduction="none").numpy()
    probs = logits.softmax(1)
    confidence, preds = probs.max(1)
    y_true, y_pred = labels.numpy(), preds.numpy()
    idx = list(range(n_classes))
    from sklearn.metrics import (  # 0.6 s to import
        confusion_matrix,
        precision_recall_fscore_support,
    )

    precision_, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=idx, zero_division=0
    )
    per_class = pd.DataFrame(
        {"precision": precision_, "recall": recall, "f1": f1, "support": support.astype(int)},
        index=pd.Index(classes, name="class"),
    )
    confusion = pd.DataFrame(
        confusion_matrix(y_true, y_pred, labels=idx),
        index=pd.Index(classes, name="true"),
        columns=pd.Index(classes, name="predicted"),
    )
    names = np.array(classes, dtype=object)
    predictions = pd.DataFrame(
        {
            "path": [_sample_path(dataset, i) for i in range(len(y_true))],
            "true": names[y_true],
            "pred": names[y_pred],
            "confidence": confidence.numpy().astype(float),
            "loss": losses.astype(float),
        },
        columns=list(PREDICTION_COLUMNS),
    )
    return EvalResult(
        accuracy=float((y_true == y_pred).mean()),
        loss=float(losses.mean()),
        per_class=per_class,
        confusion=confusion,
        predictions=predictions,
    )


def _open_image(item: Any, position: int | None, shrink: Shrink | None = None) -> Image.Image:
    """One input of :func:`predict` as an RGB image; ``position`` is its index in a list.

    A file is decoded as the datasets decode it (``shrink``: straight to the transform's
    resize size), so a photo gets the same prediction here as in an evaluation.
    """
    try:
        return load_image(item, shrink)
    except DataError as exc:
        if position is None or isinstance(item, (str, os.PathLike)):
            raise  # the message names the file
        raise DataError(f"images[{position}]: {exc}") from exc


def predict(
    model: nn.Module,
    images: Any,
    transform: Callable[[Image.Image], torch.Tensor],
    classes: Sequence[str],
    k: int = 3,
    device: torch.device | str | None = None,
    precision: str = "fp32",
) -> pd.DataFrame:
    """Top-``k`` classes of one or more images.

    Args:
        model: the classifier; its training mode is restored after.
        images: a file path (str or Path), a PIL image, a numpy array (HxWx3 or HxW;
            uint8 0-255 or float 0-1), a torch tensor (3xHxW or HxWx3; uint8 or float
            0-1), or a list of those. Only regular files are read.
        transform: PIL image -> tensor (the evaluation transform of the data).
        classes: class names, in label order.
        k: rows per image; clipped to the number of classes.
        device: where to run; ``None`` keeps the model where it is.
        precision: as :func:`evaluate`'s (a session passes its own to both, so a photo
            gets the same probabilities from each).

    Returns:
        Long DataFrame: image (the path, or the position in ``images`` for in-memory images),
        rank (1..k), class, probability (descending within an image).

    Raises:
        DataError: an image path cannot be read (the message names it), or an input is not
            an image (the message says what is accepted).
        ConfigError: ``k`` < 1.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r} must be a whole number of at least 1 (how many classes to show).")
    if images is None:
        raise DataError(f"images=None: nothing to predict. Pass {ACCEPTED_IMAGES}.")
    listed = isinstance(images, (list, tuple))
    items = list(images) if listed else [images]
    if not items:
        return pd.DataFrame(columns=list(PREDICT_COLUMNS))
    k = min(k, len(classes))
    if device is not None:
        model.to(device)
    dev = _model_device(model)
    keys = [os.fspath(item) if isinstance(item, (str, os.PathLike)) else i for i, item in enumerate(items)]
    shrink = decode_shrink(transform)
    threads = 1 if is_random_transform(transform) else reader_threads()

    def model_input(job: tuple[int, Any]) -> torch.Tensor:
        position, item = job
        return transform(_open_image(item, position if listed else None, shrink))

    rows = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(items), 32):
            chunk = items[start:start + 32]
            x = torch.stack(thread_map(model_input, list(enumerate(chunk, start)), threads)).to(dev)
            with _autocast(dev, precision):
                logits = logits_of(model(x)).float()
            _check_outputs(logits, classes)
            top_p, top_i = logits.softmax(1).topk(k, dim=1)
            for j in range(len(chunk)):
                for rank in range(k):
                    rows.append((keys[start + j], rank + 1, str(classes[int(top_i[j, rank])]),
                                 float(top_p[j, rank])))
    return pd.DataFrame(rows, columns=list(PREDICT_COLUMNS))
