"""Grad-CAM: heatmaps of the input's size for catalog CNNs, a clear refusal for transformers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlwidgets.core import gradcam as gc
from tlwidgets.core.errors import BusyError, ModelError
from tlwidgets.core.session import Session

needs_library = pytest.mark.skipif(
    importlib.util.find_spec("pytorch_grad_cam") is None, reason="grad-cam (extra 'insight') is not installed",
)
SIZE = 96


def _session(name: str, image_folder: Path, pretrained: bool = False) -> Session:
    """A model whose head has learnt the colours a little, so class evidence is positive somewhere."""
    torch.manual_seed(0)
    s = Session(device="cpu", image_size=SIZE)
    s.load_model(name, pretrained=pretrained)
    s.load_data(image_folder, val_fraction=0.25)
    s.replace_head()
    s.freeze_backbone()
    s.fit(epochs=2, lr=1e-2, batch_size=8, schedule="constant")
    return s


def _image(image_folder: Path) -> str:
    return str(sorted((image_folder / "class_0").glob("*.jpg"))[0])


@needs_library
@pytest.mark.parametrize(
    ("name", "pretrained", "layer"),
    [("resnet18", False, "layer4"), ("mobilenet_v2", False, "features"), ("efficientnet_lite0", True, "bn2")],
)
def test_heatmap_has_the_input_size_and_follows_the_target_class(
    name: str, pretrained: bool, layer: str, image_folder: Path
) -> None:
    s = _session(name, image_folder, pretrained)
    image = _image(image_folder)
    requires = [p.requires_grad for p in s.model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in s.model.parameters()]
    first = gc.explain(s, image, target_class=0)
    second = gc.gradcam(s, image, target_class="class_1")
    assert first["layer"] == layer and first["class"] == "class_0" and 0 <= first["probability"] <= 1
    heat = first["heatmap"]
    assert heat.shape == (SIZE, SIZE) == second.shape and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1 and heat.max() > 0.5  # scaled to use the whole range
    assert np.abs(heat - second).mean() > 1e-3  # another class, another explanation
    # the model is as it was: eval mode, gradients as the last fit left them, frozen set unchanged
    assert not s.model.training
    after = [p.grad for p in s.model.parameters()]
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(after, grads, strict=True))
    assert [p.requires_grad for p in s.model.parameters()] == requires


@needs_library
def test_default_target_is_the_top_prediction_and_tensors_keep_their_size(image_folder: Path) -> None:
    s = _session("resnet18", image_folder)
    image = _image(image_folder)
    top = s.predict(image, k=1).loc[0, "class"]
    result = gc.explain(s, image)
    assert result["class"] == top
    assert np.allclose(result["heatmap"], gc.gradcam(s, image, target_class=top))
    x = torch.randn(3, 128, 160)
    assert gc.gradcam(s, x, target_class=1).shape == (128, 160)


@needs_library
def test_overlay_is_a_picture_of_the_model_view(image_folder: Path) -> None:
    s = _session("mobilenet_v2", image_folder)
    picture = gc.gradcam_overlay(s, _image(image_folder))
    assert isinstance(picture, Image.Image) and picture.mode == "RGB" and picture.size == (SIZE, SIZE)
    big = Image.new("RGB", (200, 100), (0, 0, 0))
    heat = np.zeros((10, 10), dtype=np.float32)
    heat[:, 5:] = 1.0
    out = np.asarray(gc.overlay(big, heat, alpha=1.0))
    assert out.shape == (100, 200, 3)
    hot, cold = out[50, 190].astype(int), out[50, 10].astype(int)
    assert hot[0] > 100 and hot[0] > hot[1] + 50 and hot[0] > hot[2] + 50  # jet: red where it matters
    assert cold[2] > 100 and cold[2] > cold[0] + 50  # and blue where it does not
    with pytest.raises(ValueError, match="alpha"):
        gc.overlay(big, heat, alpha=2)


@needs_library
def test_transformers_get_a_clear_error(image_folder: Path) -> None:
    s = Session(device="cpu")
    s.load_model("vit_b_16", pretrained=False)
    with pytest.raises(ModelError, match=r"vit_b_16 is a transformer.*resnet18, mobilenet_v2 or efficientnet_lite0"):
        gc.gradcam(s, Image.new("RGB", (224, 224)))


def test_layer_choice_for_other_catalog_cnns() -> None:
    from tlwidgets.core.catalog import build_model

    assert gc.target_layer(build_model("squeezenet1_1", pretrained=False), 64) == "features"
    assert gc.target_layer(build_model("googlenet", pretrained=False), 64) == "inception5b"
    assert gc.target_layer(build_model("shufflenet_v2_x0_5", pretrained=False), 64) == "conv5"
    with pytest.raises(ModelError, match="no convolutional layer"):
        gc.target_layer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)), 8, "mlp")


@needs_library
def test_bad_class_and_busy_session(image_folder: Path) -> None:
    s = _session("resnet18", image_folder)
    image = _image(image_folder)
    with pytest.raises(ModelError, match="Unknown class 'tulip'.*class_0"):
        gc.gradcam(s, image, target_class="tulip")
    with pytest.raises(ModelError, match="outside 0..2"):
        gc.gradcam(s, image, target_class=5)
    s.status = "training"
    with pytest.raises(BusyError, match="training"):
        gc.gradcam(s, image)
    s.status = "idle"


def test_missing_library_names_the_extra(monkeypatch: pytest.MonkeyPatch, image_folder: Path) -> None:
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    s = Session(device="cpu", image_size=64)
    s.load_model("mobilenet_v3_small", pretrained=False)
    with pytest.raises(gc.GradCamUnavailableError, match=r"tlwidgets\[insight\]"):
        gc.gradcam(s, _image(image_folder))
