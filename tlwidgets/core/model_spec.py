"""What the catalog knows about a model before building it: :class:`ModelSpec`, and families."""

from __future__ import annotations

from dataclasses import dataclass

# Name prefix -> family, following the sections of torchvision's model documentation.
_FAMILIES = (
    ("alexnet", "AlexNet"), ("convnext", "ConvNeXt"), ("densenet", "DenseNet"),
    ("efficientnet_v2", "EfficientNetV2"), ("efficientnet", "EfficientNet"),
    ("googlenet", "GoogLeNet"), ("inception", "Inception"), ("maxvit", "MaxViT"),
    ("mnasnet", "MNASNet"), ("mobilenet", "MobileNet"), ("regnet", "RegNet"),
    ("resnext", "ResNeXt"), ("wide_resnet", "Wide ResNet"), ("resnet", "ResNet"),
    ("shufflenet", "ShuffleNet"), ("squeezenet", "SqueezeNet"), ("swin", "Swin"),
    ("vgg", "VGG"), ("vit", "ViT"),
)


@dataclass(frozen=True)
class ModelSpec:
    """Everything tlwidgets knows about a model before building it.

    Attributes:
        name: catalog name, e.g. ``"resnet18"``.
        family: architecture family, e.g. ``"ResNet"``.
        source: ``"torchvision"``, ``"packaged"``, ``"timm"``, ``"hub"`` or ``"checkpoint"``.
        arch: builder name (torchvision name, timm name, or the catalog model a checkpoint extends).
        params_m: parameters in millions.
        gflops: forward cost of one image at ``input_size``, in GFLOPs.
        size_mb: size of the weights file in MiB.
        top1: ImageNet-1K top-1 accuracy in percent (``None`` for checkpoints).
        top5: ImageNet-1K top-5 accuracy in percent.
        input_size: crop size the weights were evaluated at.
        resize_size: resize before the centre crop.
        mean: normalisation mean per channel.
        std: normalisation standard deviation per channel.
        interpolation: ``"bilinear"`` or ``"bicubic"``.
        weights_url: download URL of torchvision weights.
        weights_path: file of packaged or checkpoint weights.
        num_classes: outputs of the stored weights.
        class_names: class names of the stored weights, where known.
        license: licence of the weights as their publisher states it (``""`` when unknown).
        hub_id: Hugging Face Hub repository of the weights (timm and Hub models).
    """

    name: str
    family: str
    source: str
    arch: str
    params_m: float
    gflops: float
    size_mb: float
    top1: float | None
    top5: float | None
    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    weights_url: str | None
    weights_path: str | None
    num_classes: int = 1000
    class_names: tuple[str, ...] = ()
    license: str = ""
    hub_id: str | None = None


def family_of_name(name: str) -> str:
    """The family of a torchvision model name (the sections of torchvision's documentation)."""
    for prefix, family in _FAMILIES:
        if name.startswith(prefix):
            return family
    return name.split("_")[0].capitalize()


def family_label(prefix: str) -> str:
    """The family shown for a timm architecture prefix: torchvision's label when the prefix
    names the same family (``resnet`` -> ``ResNet``, ``vit`` -> ``ViT``), else the prefix."""
    labels = {label.lower().replace(" ", ""): label for _, label in _FAMILIES}
    return labels.get(prefix.lower(), prefix)
