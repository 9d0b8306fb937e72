"""Panels undo the normalisation core reports for the data's transforms: ImageNet's or the model's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torchvision import transforms as T

from tests.helpers import loaded_session
from tlwidgets.core import transforms
from tlwidgets.core.data import load_data
from tlwidgets.widgets import _images


def _searched(transform: object) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """What the panels used to do: find the first Normalize step among the transform's steps."""
    stack = [transform]
    while stack:
        step = stack.pop(0)
        if isinstance(step, T.Normalize):
            return tuple(float(v) for v in np.ravel(step.mean)), tuple(float(v) for v in np.ravel(step.std))
        stack.extend(getattr(step, "transforms", ()))
    raise AssertionError("no Normalize step")


@pytest.mark.parametrize(("model", "mean", "std"), [
    ("resnet18", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
])
def test_panels_get_the_same_mean_and_std_as_the_normalize_step(
    image_folder: Path, model: str, mean: tuple, std: tuple
) -> None:
    s = loaded_session(image_folder, model, image_size=32)
    s.set_augment(flip=True)  # a training transform with more steps than the evaluation one
    found = _images.normalisation(s.data, s.spec)
    assert found == (mean, std) == s.data.normalisation
    assert found == _searched(s.data.train_tf) == _searched(s.data.eval_tf)
    *_, views = _images.augmented_views(s.data, 0, 1, s.spec)
    assert views[0].size == (32, 32) and views[0].mode == "RGB"


def test_the_session_normalises_with_imagenet_before_a_model_is_loaded(image_folder: Path) -> None:
    from tlwidgets import Session

    s = Session(device="cpu", image_size=32)
    s.load_data(image_folder)
    assert s.data.normalisation == (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
    assert _images.normalisation(s.data) == _searched(s.data.eval_tf)


def test_transforms_not_built_by_core_fall_back_to_the_spec_then_imagenet(image_folder: Path) -> None:
    bundle = load_data(image_folder)  # identity transforms until a session sets them
    assert bundle.normalisation is None
    half = transforms.Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert _images.normalisation(bundle, half) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert _images.normalisation(bundle) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_core_compose_knows_its_normalisation_and_keeps_torchvisions_name() -> None:
    train_tf, eval_tf = transforms.make_transforms(transforms.IMAGENET, None, 48)
    assert transforms.normalisation_of(eval_tf) == (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
    assert transforms.normalisation_of(T.Compose([T.ToTensor()])) is None
    assert repr(eval_tf).startswith("Compose(") and repr(train_tf) == repr(eval_tf)
    assert isinstance(eval_tf, T.Compose) and type(eval_tf).__name__ == "Compose"
