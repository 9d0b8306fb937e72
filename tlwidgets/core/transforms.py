"""Image transforms of a model: resize, crop and normalise, plus the training augmentation.

They follow the model's own weights (resize and crop sizes, mean and std, interpolation),
so a pretrained network sees images prepared as in its original training.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from .errors import DataError, ModelError
from .images import Shrink

#: Smallest and largest image size (pixels per side) a session or a bundle may ask for:
#: below 32 the deeper networks shrink their feature maps to nothing; above 1024 one batch
#: of 32 images needs gigabytes.
IMAGE_SIZE_RANGE = (32, 1024)

#: Mean and standard deviation of ImageNet's RGB channels: what most pretrained weights
#: expect, and what a session normalises with before a model is loaded.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MAX_ASPECT = 8  # longest side of a resized image, in multiples of the short side's target

_PIL_FILTERS = {
    T.InterpolationMode.NEAREST: Image.Resampling.NEAREST,
    T.InterpolationMode.NEAREST_EXACT: Image.Resampling.NEAREST,
    T.InterpolationMode.BILINEAR: Image.Resampling.BILINEAR,
    T.InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
    T.InterpolationMode.BOX: Image.Resampling.BOX,
    T.InterpolationMode.HAMMING: Image.Resampling.HAMMING,
    T.InterpolationMode.LANCZOS: Image.Resampling.LANCZOS,
}
_NO_DRAFT = frozenset({T.InterpolationMode.NEAREST, T.InterpolationMode.NEAREST_EXACT})

_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Resize and crop sizes, normalisation and interpolation: what :func:`make_transforms` reads.

    A :class:`~tlwidgets.core.catalog.ModelSpec` carries the same fields; :data:`IMAGENET`
    stands in for it before a model is loaded.
    """

    resize_size: int = 256
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"


#: ImageNet's preprocessing (resize 256, crop 224, ImageNet mean and std, bilinear).
IMAGENET = Preprocessing()

Normalisation = tuple[tuple[float, ...], tuple[float, ...]]


class Compose(T.Compose):
    """torchvision's ``Compose``, ending in ``Normalize(mean, std)``, that says which.

    :func:`make_transforms` builds these, so whoever holds the transforms can ask for the
    normalisation (:attr:`mean`, :attr:`std`, :func:`normalisation_of`) instead of
    searching the steps. It keeps torchvision's class name, so it prints the same and
    code that judges transforms by their class name (``features.is_random_transform``)
    sees the ``Compose`` it is.
    """

    def __init__(self, transforms: Sequence[Callable[[Any], Any]], mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(list(transforms))
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)


def normalisation_of(transform: Any) -> Normalisation | None:
    """``(mean, std)`` of a transform :func:`make_transforms` built; ``None`` for any other."""
    if isinstance(transform, Compose):
        return transform.mean, transform.std
    return None


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training-time augmentation; the default changes nothing.

    Attributes:
        flip: random horizontal flip.
        rotation: random rotation up to this many degrees either way (0..180).
        random_resized_crop: random crop of 60-100 % of the area, resized to the input size.
        color_jitter: strength 0..1 of random brightness, contrast, saturation and hue changes.
    """

    flip: bool = False
    rotation: float = 0.0
    random_resized_crop: bool = False
    color_jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.rotation) <= 180.0:
            raise DataError(f"Augment rotation={self.rotation!r} must be between 0 and 180 degrees.")
        if not 0.0 <= float(self.color_jitter) <= 1.0:
            raise DataError(f"Augment color_jitter={self.color_jitter!r} must be between 0 and 1.")

    def is_identity(self) -> bool:
        """True when no augmentation is enabled."""
        return not (self.flip or self.rotation or self.random_resized_crop or self.color_jitter)


class Resize(T.Resize):
    """torchvision's Resize (short side to ``size``) with the long side capped.

    A long thin strip (2x6000 pixels) would otherwise grow to hundreds of megabytes when
    its short side is scaled up; capped, it stays small and the crop pads it instead.
    """

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of this step's output for an image of that size."""
        if isinstance(self.size, int):
            cap = _MAX_ASPECT * self.size
            if max(width, height) * self.size > cap * max(min(width, height), 1):
                scale = cap / max(width, height)
                return max(1, round(width * scale)), max(1, round(height * scale))
        return resize_output_size(self, width, height)

    def forward(self, img: Any) -> Any:
        if isinstance(self.size, int):
            _, height, width = TF.get_dimensions(img)
            cap = _MAX_ASPECT * self.size
            if max(width, height) * self.size > cap * max(min(width, height), 1):
                scale = cap / max(width, height)
                size = [max(1, round(height * scale)), max(1, round(width * scale))]
                return TF.resize(img, size, self.interpolation, antialias=self.antialias)
        return super().forward(img)


def resize_output_size(step: T.Resize, width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` that torchvision's ``Resize`` gives an image of that size."""
    size = [step.size] if isinstance(step.size, int) else list(step.size)
    if len(size) == 2:
        return int(size[1]), int(size[0])
    short, long = sorted((width, height))
    new_short, new_long = int(size[0]), int(size[0] * long / max(short, 1))
    if step.max_size is not None and new_long > step.max_size:
        new_short, new_long = int(step.max_size * new_short / new_long), int(step.max_size)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def decode_shrink(transform: Any) -> Shrink | None:
    """How images for ``transform`` may be decoded straight to its first step's size.

    Only a transform that starts by resizing (a ``Resize``, or a ``Compose`` whose first
    step is one, as :func:`make_transforms` builds) gives a :class:`Shrink`: decoding to
    that step's output size, JPEGs at a reduced scale never below it, changes what the
    transform returns by a rounding difference only (nearest-neighbour resizing is not
    drafted: picking pixels from a scaled decode would pick different ones).

    Returns:
        The Shrink for :func:`tlwidgets.core.images.load_image`, or None.
    """
    step = transform.transforms[0] if isinstance(transform, T.Compose) and transform.transforms else transform
    if not isinstance(step, T.Resize):
        return None
    resample = _PIL_FILTERS.get(step.interpolation)
    if resample is None:
        return None
    size = step.output_size if isinstance(step, Resize) else functools.partial(resize_output_size, step)
    return Shrink(size, resample, draft=step.interpolation not in _NO_DRAFT)


def make_transforms(
    spec_like: Any, augment: Any = None, image_size: int | None = None
) -> tuple[Callable[[Image.Image], torch.Tensor], Callable[[Image.Image], torch.Tensor]]:
    """Training and evaluation transforms (PIL RGB image -> normalised tensor).

    Args:
        spec_like: anything with ``resize_size``, ``input_size``, ``mean``, ``std`` and
            ``interpolation`` ("bilinear" | "bicubic" | "nearest"), e.g. a ModelSpec.
        augment: an :class:`Augment`; ``None`` means none.
        image_size: crop size overriding the spec's; the resize becomes round(size * 256 / 224).

    Returns:
        ``(train_tf, eval_tf)``, each a :class:`Compose` that knows its mean and std.
        eval: Resize -> CenterCrop -> ToTensor -> Normalize.
        train: the same with rotation, flip and colour jitter added; a random resized crop
        replaces the centre crop when enabled.
    """
    interpolation = _INTERPOLATION.get(str(spec_like.interpolation).lower())
    if interpolation is None:
        raise ModelError(
            f"Unknown interpolation {spec_like.interpolation!r}; use one of {', '.join(_INTERPOLATION)}."
        )
    if image_size is not None:
        if int(image_size) < 8:
            raise DataError(f"image_size={image_size!r} is too small; use at least 8 pixels.")
        crop, resize = int(image_size), round(int(image_size) * 256 / 224)
    else:
        crop, resize = int(spec_like.input_size), int(spec_like.resize_size)
    mean, std = list(spec_like.mean), list(spec_like.std)
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    resize_tf = Resize(resize, interpolation=interpolation, antialias=True)
    eval_tf = Compose([resize_tf, T.CenterCrop(crop), *tail], mean, std)
    if augment is None or augment.is_identity():
        return Compose([resize_tf, T.CenterCrop(crop), *tail], mean, std), eval_tf
    # Rotating the resized image before cropping keeps most of the black corners out of the crop.
    steps: list[Any] = [resize_tf]
    if augment.rotation:
        steps.append(T.RandomRotation(float(augment.rotation), interpolation=interpolation))
    if augment.random_resized_crop:
        steps.append(T.RandomResizedCrop(crop, scale=(0.6, 1.0), interpolation=interpolation, antialias=True))
    else:
        steps.append(T.CenterCrop(crop))
    if augment.flip:
        steps.append(T.RandomHorizontalFlip())
    if augment.color_jitter:
        s = float(augment.color_jitter)
        steps.append(T.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.1, s / 4)))
    return Compose([*steps, *tail], mean, std), eval_tf
