"""Grad-CAM: which parts of an image made the model choose a class.

The class-activation maps come from the ``grad-cam`` package (pytorch-grad-cam, extra
``insight``); this module picks the layer to explain for any catalog CNN, prepares
the image the way the model sees it, and keeps the session's model as it was
(training flags, parameter gradients, hooks).

The explained layer is the last module whose output is the final convolutional
feature map: the last module, before the head, that outputs a 4-D map of the same
spatial size as the last ``Conv2d`` (``layer4`` of a ResNet, ``features`` of a
MobileNet, ``bn2`` of EfficientNet-Lite0). Transformers (ViT, Swin, MaxViT), whose
last convolution only cuts the image into patches before attention layers, are refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import data as data_mod
from .errors import BusyError, ConfigError, DataError, ModelError, TLWidgetsError
from .evaluation import eval_mode
from .heads import find_head
from .images import load_image
from .status import Status

if TYPE_CHECKING:  # pragma: no cover
    from .session import Session

_SKIP = (nn.Dropout, nn.Dropout2d, nn.Identity)
_INSTALL = "pip install 'tlwidgets[insight]'  (or: pip install grad-cam)"


class GradCamUnavailableError(TLWidgetsError, RuntimeError):
    """The optional grad-cam package is not installed."""


def _library() -> Any:
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.image import show_cam_on_image
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as exc:
        raise GradCamUnavailableError(f"Grad-CAM needs the grad-cam package: {_INSTALL}.") from exc
    return GradCAM, ClassifierOutputTarget, show_cam_on_image


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__


def _inside(name: str, prefix: str) -> bool:
    return bool(prefix) and (name == prefix or name.startswith(prefix + "."))


def _check_convolutional(model: nn.Module, head_path: str, model_name: str) -> str:
    """Name of the last Conv2d outside the head; ModelError for models Grad-CAM cannot explain."""
    named = [(n, m) for n, m in model.named_modules() if n and not _inside(n, head_path)]
    convs = [i for i, (_, m) in enumerate(named) if isinstance(m, nn.Conv2d)]
    advice = "Grad-CAM explains convolutional networks: load one such as resnet18, mobilenet_v2 or efficientnet_lite0."
    if not convs:
        raise ModelError(f"{model_name} has no convolutional layer, so it has no feature map to explain. {advice}")
    last = convs[-1]
    attention = next((n for n, m in named[last + 1:] if _is_attention(m)), None)
    if attention is not None:
        raise ModelError(
            f"{model_name} is a transformer: attention layers such as {attention} follow its last convolution "
            f"({named[last][0]}), so it has no convolutional feature map to explain. {advice}"
        )
    return named[last][0]


def target_layer(model: nn.Module, input_size: int = 224, model_name: str | None = None) -> str:
    """Qualified name of the layer Grad-CAM explains in ``model``.

    Args:
        model: a classifier with convolutional layers.
        input_size: side of the probe image used to follow the forward pass.
        model_name: name for error messages (default: the class name).

    Raises:
        ModelError: no convolutional layer, or a transformer (ViT, Swin, MaxViT).
    """
    name = model_name or type(model).__name__
    head_path = find_head(model)[0]
    last_conv = _check_convolutional(model, head_path, name)
    modules = dict(model.named_modules())
    done: list[tuple[str, Any]] = []  # completion order of modules outside the head
    calls: dict[str, int] = {}
    head_started = [False]
    hooks = []

    def record(module_name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            calls[module_name] = calls.get(module_name, 0) + 1
            if not head_started[0]:
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
                done.append((module_name, shape))
        return hook

    def start_head(module: nn.Module, args: Any) -> None:
        head_started[0] = True

    try:
        for module_name, module in modules.items():
            if not module_name or _inside(module_name, head_path):
                continue
            hooks.append(module.register_forward_hook(record(module_name)))
        hooks.append(model.get_submodule(head_path).register_forward_pre_hook(start_head))
        ref = next(iter(model.parameters()))
        probe = torch.zeros(1, 3, input_size, input_size, device=ref.device, dtype=ref.dtype)
        with eval_mode(model), torch.no_grad():
            model(probe)
    finally:
        for handle in hooks:
            handle.remove()
    ends = [i for i, (n, _) in enumerate(done) if n == last_conv]
    if not ends:
        return last_conv
    conv_shape = done[ends[-1]][1]
    best = last_conv
    for module_name, shape in done[ends[-1] + 1:]:
        # A module called twice (a shared ReLU) would hand the library two activations.
        same_map = shape is not None and len(shape) == 4 and shape[-2:] == conv_shape[-2:]
        if same_map and calls.get(module_name) == 1 and not isinstance(modules[module_name], _SKIP):
            best = module_name
    return best


@contextlib.contextmanager
def _kept_gradients(model: nn.Module) -> Iterator[None]:
    """Parameter gradients as they were before the block (Grad-CAM's backward pass overwrites them)."""
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, grad in saved:
            p.grad = grad


def _prepare(session: Session, image: Any) -> tuple[torch.Tensor, Image.Image]:
    """The model's input tensor (1, 3, H, W) and the RGB picture it shows."""
    spec = session.spec
    if session.model is None or spec is None:
        raise ModelError("No model loaded yet: call load_model(name) first.")
    if isinstance(image, torch.Tensor):
        x = image if image.dim() == 4 else image.unsqueeze(0)
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise DataError(f"Expected an image tensor of shape (3, H, W); got {tuple(image.shape)}.")
    else:
        picture = load_image(image)
        eval_tf = session.data.eval_tf if session.data is not None else data_mod.make_transforms(
            spec, None, session.image_size)[1]
        x = eval_tf(picture).unsqueeze(0)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    rgb = (x[0].detach().float().cpu() * std + mean).clamp(0, 1)
    seen = Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return x, seen


def _class_index(session: Session, target_class: Any) -> int | None:
    if target_class is None:
        return None
    classes = list(session.classes)
    if isinstance(target_class, str):
        if target_class in classes:
            return classes.index(target_class)
        raise ModelError(f"Unknown class {target_class!r}; the model predicts: {', '.join(classes)}.")
    index = int(target_class)
    if not 0 <= index < len(classes):
        raise ModelError(f"target_class={target_class!r} is outside 0..{len(classes) - 1} ({len(classes)} classes).")
    return index


def explain(session: Session, image: Any, target_class: Any = None, layer: str | None = None) -> dict[str, Any]:
    """Grad-CAM of one image with everything needed to show it.

    Returns:
        ``{"heatmap": (H, W) float32 in [0, 1], "image": the RGB picture the model saw (PIL),
        "class": explained class name, "index": its index, "probability": its softmax
        probability, "layer": the explained layer}``.
    """
    GradCAM, ClassifierOutputTarget, _ = _library()
    if session.status != Status.IDLE:
        raise BusyError("Cannot compute Grad-CAM while training runs: wait for it, or press Stop.")
    x, seen = _prepare(session, image)
    model = session.model
    name = session.spec.name
    layer = layer or target_layer(model, input_size=int(x.shape[-1]), model_name=name)
    ref = next(iter(model.parameters()))
    x = x.to(device=ref.device, dtype=torch.float32)
    index = _class_index(session, target_class)
    with eval_mode(model), _kept_gradients(model):
        cam = GradCAM(model=model, target_layers=[model.get_submodule(layer)])
        cam.compute_input_gradient = True  # gradients must reach a frozen backbone's feature map
        try:
            with torch.enable_grad():
                targets = None if index is None else [ClassifierOutputTarget(index)]  # None: the top class
                heatmap = cam(input_tensor=x, targets=targets)[0]
                scores = cam.outputs.detach().float()
                index = int(scores.argmax(1)[0]) if index is None else index
                probability = float(scores.softmax(1)[0, index])
        except IndexError as exc:  # the library's way of saying no gradient reached the layer
            raise ModelError(f"No gradient reached layer {layer!r} of {name}; pass another layer=.") from exc
        finally:
            cam.activations_and_grads.release()
    heatmap = np.nan_to_num(np.asarray(heatmap, dtype=np.float32)).clip(0.0, 1.0)
    classes = list(session.classes)
    return {"heatmap": heatmap, "image": seen, "class": classes[index] if index < len(classes) else str(index),
            "index": index, "probability": probability, "layer": layer}


def gradcam(session: Session, image: Any, target_class: Any = None, layer: str | None = None) -> np.ndarray:
    """Grad-CAM heatmap of ``image`` for ``target_class`` (default: the predicted class).

    Args:
        session: a session with a convolutional model loaded.
        image: a file path, a PIL image, or an input tensor (3, H, W) already transformed.
        target_class: class index or name; ``None`` explains the top prediction.
        layer: module to explain (default: :func:`target_layer`).

    Returns:
        float32 array (H, W) in [0, 1] of the model's input size (the session's
        ``input_size`` for files and PIL images, the tensor's own size otherwise).

    Raises:
        ModelError: a transformer or a model without convolutions (with a suggestion),
            or an unknown class. GradCamUnavailableError: grad-cam not installed.
        BusyError: training runs.
    """
    return explain(session, image, target_class, layer)["heatmap"]


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``image`` with ``heatmap`` drawn over it in the jet colour map (red = most important).

    Args:
        image: the picture (the heatmap is resized to it).
        heatmap: values in [0, 1].
        alpha: weight of the heatmap, 0 (picture only) to 1 (heatmap only).
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"alpha={alpha!r} must be between 0 and 1.")
    _, _, show_cam_on_image = _library()
    picture = image.convert("RGB")
    mask = np.asarray(heatmap, dtype=np.float32)
    if mask.shape != (picture.height, picture.width):
        resized = Image.fromarray(mask).resize(picture.size, Image.BILINEAR)
        mask = np.asarray(resized, dtype=np.float32)
    base = np.asarray(picture, dtype=np.float32) / 255.0
    blended = show_cam_on_image(base, mask.clip(0, 1), use_rgb=True, image_weight=1.0 - float(alpha))
    return Image.fromarray(blended)


def gradcam_overlay(
    session: Session, image: Any, target_class: Any = None, alpha: float = 0.5, layer: str | None = None
) -> Image.Image:
    """The picture the model saw (resized and cropped) with its Grad-CAM heatmap over it."""
    result = explain(session, image, target_class, layer)
    return overlay(result["image"], result["heatmap"], alpha)
