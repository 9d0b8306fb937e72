"""Small helpers shared by the classroom labs (kept here so the notebooks stay short).

Set the environment variable ``TLWIDGETS_FAST=1`` for a quick run: fewer pictures,
fewer epochs, smaller images. The numbers are then rougher, but every lab still tells
its story.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

FAST = os.environ.get("TLWIDGETS_FAST") == "1"

#: Settings of the labs: image side in pixels, pictures per class, epochs.
SETTINGS = (
    {"image_size": 64, "max_per_class": 16, "epochs": 3}
    if FAST
    else {"image_size": 96, "max_per_class": 40, "epochs": 6}
)


def _freeze(session: Any, cut: str | None) -> str:
    """Apply one freezing choice; returns how it reads in the table."""
    if cut is None:
        session.unfreeze_all()
        return "nothing (all layers train)"
    if cut == "backbone":
        session.freeze_backbone()
        return "everything but the head"
    session.freeze_up_to(cut)
    return f"input … {cut}"


def freezing_table(
    session: Any,
    model: str,
    cuts: Sequence[str | None],
    epochs: int = 2,
    lr: float = 1e-3,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Train the same pretrained model once per freezing choice, with the same budget.

    For every entry of ``cuts`` the model is loaded afresh (pretrained), given a new
    head for the session's data, frozen from the input up to that layer or block
    (``None``: nothing frozen; ``"backbone"``: everything but the head), and trained
    for ``epochs`` epochs with the same seed.

    Returns:
        One row per choice: ``frozen`` (in words), ``trainable_params``, ``trainable_pct``,
        ``val_acc`` (after the last epoch), ``train_time_s`` (wall time of the whole fit)
        and ``ms_per_image`` (median time of one training step, per image).
    """
    # A short warm-up fit, not shown: the first fit of a process pays one-off costs
    # (thread pools, memory) that would otherwise land on the first row.
    session.load_model(model)
    session.replace_head()
    session.fit(epochs=1, lr=lr, batch_size=batch_size, max_batches_per_epoch=2)
    session.recorder.remove([session.runs[-1].id])

    rows = []
    for cut in cuts:
        session.load_model(model)
        session.replace_head()
        frozen = _freeze(session, cut)
        trainable, total = session.trainable_params()
        start = time.perf_counter()
        history = session.fit(epochs=epochs, lr=lr, batch_size=batch_size, max_batches_per_epoch=None, seed=0)
        wall = time.perf_counter() - start
        steps = [1000.0 / b["images_per_s"] for b in history.batches[1:] if b.get("images_per_s")]
        rows.append({
            "frozen": frozen,
            "trainable_params": trainable,
            "trainable_pct": round(100.0 * trainable / total, 1),
            "val_acc": round(float(history.epochs[-1]["val_acc"]), 3),
            "train_time_s": round(wall, 2),
            "ms_per_image": round(statistics.median(steps), 2),
        })
    return pd.DataFrame(rows)


def add_example_pictures(collector: Any, digits: dict[str, int] | None = None, per_class: int = 12) -> None:
    """Fill a DataCollector with pictures of handwritten digits (for a computer without a camera).

    Args:
        collector: the :class:`tlwidgets.DataCollector`, with its folder open.
        digits: class name -> digit, default ``{"zero": 0, "one": 1, "seven": 7}``.
        per_class: pictures per class.
    """
    from tlwidgets.core.data_sources import demo_folder

    digits = digits or {"zero": 0, "one": 1, "seven": 7}
    source = demo_folder(max_per_class=max(per_class, 1))
    for name, digit in digits.items():
        if name not in collector.classes:
            collector.create_class(name)
        files = sorted((source / str(digit)).glob("*.png"))[:per_class]
        collector.add_images([(f.name, f.read_bytes()) for f in files], class_name=name)


def example_folder() -> Path:
    """Where lab 4 keeps its pictures: ``my_images`` here, or a fresh temporary folder in fast mode."""
    if FAST:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="tlw-lab-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        return folder
    return Path("my_images")
