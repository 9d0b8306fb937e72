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
