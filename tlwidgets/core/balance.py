"""Class imbalance: when it matters, and what tlwidgets does about it.

A model trained on 200 daisies and 20 tulips learns that guessing "daisy" is nearly
always right. When the largest class has :data:`IMBALANCE_RATIO` times the images of the
smallest, the data panel warns, and ``fit()`` (``class_weights="auto"``) weighs each
class's loss by the inverse of its share of the training images, so every class counts
the same in the loss. Weighting was chosen over a balanced sampler because it keeps
every image in every epoch, which the cached-feature epochs make free, and it keeps the
epoch's batches (and so the results) the same as without it for balanced data.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import Dataset

#: Largest-to-smallest class ratio from which data counts as imbalanced.
IMBALANCE_RATIO = 3.0


def imbalance_note(counts: Mapping[str, int]) -> str | None:
    """A warning in words when the classes are imbalanced (empty classes aside), else None."""
    present = {str(k): int(v) for k, v in counts.items() if int(v) > 0}
    if len(present) < 2:
        return None
    largest = max(present, key=present.__getitem__)
    smallest = min(present, key=present.__getitem__)
    ratio = present[largest] / present[smallest]
    if ratio < IMBALANCE_RATIO:
        return None
    small = sorted((k for k, v in present.items() if v * IMBALANCE_RATIO <= present[largest]), key=present.__getitem__)
    shown = ", ".join(f"{k} ({present[k]})" for k in small[:5]) + (" ..." if len(small) > 5 else "")
    return (f"Classes are imbalanced: {largest} has {present[largest]} images, {ratio:.1f} times as many as "
            f"{smallest}. Few images in {shown}. Training weighs the loss to balance the classes "
            "(class_weights='auto'); more images of the small classes would help most.")


def labels_of(dataset: Dataset) -> torch.Tensor | None:
    """The integer labels of every item, read without decoding images; None when unknown."""
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        try:
            return torch.tensor([int(s[1]) if isinstance(s, tuple) else int(s.label) for s in samples])
        except (AttributeError, TypeError, ValueError, IndexError):
            return None
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) > 1:
        return torch.as_tensor(tensors[1]).long()
    return None


def class_weights(labels: torch.Tensor | None, mode: str) -> tuple[torch.Tensor | None, str | None]:
    """Loss weights ``n / (classes * n_c)`` per class (float32, 0 for absent classes) and a note.

    ``mode`` is ``TrainConfig.class_weights``: ``"none"``, ``"balanced"`` (always), or
    ``"auto"`` (from :data:`IMBALANCE_RATIO`). ``(None, None)`` when nothing is weighed.
    """
    if mode == "none" or labels is None or len(labels) == 0:
        return None, None
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1).double()
    present = counts[counts > 0]
    ratio = float(present.max() / present.min())
    if mode == "auto" and ratio < IMBALANCE_RATIO:
        return None, None
    weight = torch.where(counts > 0, counts.sum() / (len(present) * counts.clamp(min=1)), torch.zeros_like(counts))
    note = (f"Classes are imbalanced ({ratio:.1f} times as many images in the largest as in the smallest): "
            "the loss weighs each class by the inverse of its share." if mode == "auto" else "Class weights: balanced.")
    return weight.float(), note
