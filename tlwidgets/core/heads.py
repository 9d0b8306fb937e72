"""Locate, describe and replace the classifier head of any catalog model.

A replaced head lives at the same qualified name as the original one (``fc``,
``classifier.6``, ``heads.head`` ...). A plain head is a single ``nn.Linear``
(or a 1x1 ``nn.Conv2d`` for SqueezeNet), exactly as torchvision builds it, so
state dicts of ordinary fine-tuned torchvision models load unchanged. A head
with a hidden layer or dropout is a :class:`ClassifierHead`, a ``Sequential``
whose children are named ``hidden``, ``act``, ``dropout`` and ``out``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tlwidgets.core.errors import ModelError

# Attribute paths where torchvision and timm keep the classifier, most specific first.
_HEAD_ATTRS = ("heads.head", "heads", "head", "fc", "classifier", "last_linear")


@dataclass(frozen=True)
class HeadSpec:
    """Shape of a classifier head.

    Attributes:
        num_classes: number of outputs.
        in_features: features entering the head (channels for a 1x1 conv head).
        dropout: dropout probability inside the head (0 when none).
        hidden: width of the hidden layer, or ``None`` for a single layer.
        kind: ``"linear"`` or ``"conv1x1"`` (SqueezeNet).
        path: qualified module name of the head, e.g. ``"fc"`` or ``"classifier.1"``.
    """

    num_classes: int
    in_features: int
    dropout: float = 0.0
    hidden: int | None = None
    kind: str = "linear"
    path: str = ""


class ClassifierHead(nn.Sequential):
    """A head with a hidden layer and/or dropout: ``hidden -> act -> dropout -> out``."""


def _is_layer(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
    )


def _get(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _name_of(model: nn.Module, target: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if module is target and name:
            return name
    return None


def _last_layer_in(container: nn.Module) -> str | None:
    """Name of the last Linear / 1x1 Conv child of a Sequential-like container."""
    for name, child in reversed(list(container.named_children())):
        if _is_layer(child):
            return name
    return None


def find_head(model: nn.Module) -> tuple[str, nn.Module]:
    """Find the final classifier of ``model``.

    Args:
        model: a torchvision or timm classifier, possibly with a replaced head.

    Returns:
        The qualified module name of the head and the module itself. For a head
        installed by :func:`replace_head` with a hidden layer this is the whole
        :class:`ClassifierHead`.

    Raises:
        ModelError: if the model has no recognisable classifier layer.
    """
    for name, module in model.named_modules():
        if isinstance(module, ClassifierHead) and name:
            return name, module
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):  # timm models name their classifier themselves
        head = get_classifier()
        name = _name_of(model, head) if isinstance(head, nn.Module) else None
        if name and _is_layer(head):
            return name, head
    for attr in _HEAD_ATTRS:
        module = _get(model, attr)
        if module is None:
            continue
        if _is_layer(module):
            return attr, module
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            child = _last_layer_in(module)
            if child is not None:
                return f"{attr}.{child}", module.get_submodule(child)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    raise ModelError(
        f"Cannot find the classifier head of {type(model).__name__}: it has no attribute "
        f"among {', '.join(_HEAD_ATTRS)} and no nn.Linear layer. Pass a catalog model."
    )


def head_spec(model: nn.Module) -> HeadSpec:
    """Describe the current head of ``model`` (see :class:`HeadSpec`)."""
    path, head = find_head(model)
    if isinstance(head, ClassifierHead):
        out = head.get_submodule("out")
        hidden_layer = getattr(head, "hidden", None)
        drop = getattr(head, "dropout", None)
        first = hidden_layer if hidden_layer is not None else out
        return HeadSpec(
            num_classes=_out_features(out),
            in_features=_in_features(first),
            dropout=float(drop.p) if isinstance(drop, nn.Dropout) else 0.0,
            hidden=_out_features(hidden_layer) if hidden_layer is not None else None,
            kind=_kind(out),
            path=path,
        )
    return HeadSpec(
        num_classes=_out_features(head),
        in_features=_in_features(head),
        kind=_kind(head),
        path=path,
    )


def _kind(layer: nn.Module) -> str:
    return "conv1x1" if isinstance(layer, nn.Conv2d) else "linear"


def _in_features(layer: nn.Module) -> int:
    return int(layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features)


def _out_features(layer: nn.Module) -> int:
    return int(layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features)


def _layer(kind: str, n_in: int, n_out: int) -> nn.Module:
    if kind == "conv1x1":
        return nn.Conv2d(n_in, n_out, kernel_size=1)
    return nn.Linear(n_in, n_out)


def _steps(in_features: int, num_classes: int, dropout: float, hidden: int | None) -> list[tuple[str, int, int]]:
    """The head's layers in order, as ``(name, n_in, n_out)``; ``act`` and ``dropout`` carry no sizes."""
    steps: list[tuple[str, int, int]] = []
    width = in_features
    if hidden is not None:
        steps += [("hidden", in_features, hidden), ("act", 0, 0)]
        width = hidden
    if dropout > 0.0:
        steps.append(("dropout", 0, 0))
    steps.append(("out", width, num_classes))
    return steps


def build_head(
    kind: str, in_features: int, num_classes: int, dropout: float = 0.0, hidden: int | None = None
) -> nn.Module:
    """Create a new, freshly initialised head (a layer, or a :class:`ClassifierHead`)."""
    steps = _steps(in_features, num_classes, dropout, hidden)
    if len(steps) == 1:
        return _layer(kind, in_features, num_classes)
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    for name, n_in, n_out in steps:
        parts[name] = (nn.ReLU(inplace=False) if name == "act" else nn.Dropout(dropout) if name == "dropout"
                       else _layer(kind, n_in, n_out))
    return ClassifierHead(parts)


def describe_head(
    in_features: int, num_classes: int, dropout: float = 0.0, hidden: int | None = None, kind: str = "linear"
) -> str:
    """What :func:`build_head` builds, in one line: ``Linear(1280 → 32) → ReLU → Dropout(0.2) → Linear(32 → 5)``."""
    layer = "Conv1x1" if kind == "conv1x1" else "Linear"
    words = {"act": "ReLU", "dropout": f"Dropout({dropout:g})"}
    return " → ".join(words.get(name) or f"{layer}({n_in} → {n_out})"
                      for name, n_in, n_out in _steps(in_features, num_classes, dropout, hidden or None))


#: Largest number of outputs of a new head (ImageNet-21k has 21,841 classes).
MAX_CLASSES = 100_000
#: Largest width of a head's hidden layer.
MAX_HIDDEN = 65_536


def check_args(num_classes: Any, dropout: Any, hidden: Any) -> None:
    """The one check of head arguments: raise ModelError naming the first bad one and its range."""
    def whole(value: Any, low: int, high: int) -> bool:
        return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high

    if not whole(num_classes, 2, MAX_CLASSES):
        raise ModelError(f"num_classes={num_classes!r} must be a whole number from 2 to {MAX_CLASSES:,} "
                         "(the number of classes; a classifier needs at least 2).")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ModelError(f"dropout={dropout!r} must be a number from 0 up to (not including) 1, e.g. 0.2.")
    if hidden is not None and not whole(hidden, 1, MAX_HIDDEN):
        raise ModelError(f"hidden={hidden!r} must be None (no hidden layer) or a whole number from 1 to "
                         f"{MAX_HIDDEN:,}, e.g. 256.")


def replace_head(
    model: nn.Module, num_classes: int, dropout: float = 0.0, hidden: int | None = None
) -> HeadSpec:
    """Replace the classifier of ``model`` in place.

    The new head is created with torch's default initialisation, so it is
    deterministic under :func:`torch.manual_seed`, and it is trainable. It sits
    at the same qualified name as the old one, on the old head's device and dtype.

    Args:
        model: a catalog model (torchvision or timm).
        num_classes: outputs of the new head.
        dropout: dropout probability before the output layer (0 for none).
        hidden: width of an optional hidden layer (with ReLU) before the output layer.

    Returns:
        The :class:`HeadSpec` of the new head.

    Raises:
        ModelError: for bad arguments or a model without a recognisable head.
    """
    check_args(num_classes, dropout, hidden)
    old = head_spec(model)
    path, old_module = find_head(model)
    ref = next(iter(old_module.parameters()), None)
    new = build_head(old.kind, old.in_features, num_classes, float(dropout), hidden)
    if ref is not None:
        new = new.to(device=ref.device, dtype=ref.dtype)
    new.train(old_module.training)  # an eval-mode model keeps its new dropout off
    parent_name, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
    if hasattr(model, "num_classes"):  # timm and SqueezeNet keep the count on the model
        try:
            model.num_classes = num_classes
        except (AttributeError, TypeError):
            pass
    return head_spec(model)


def infer_head(
    state_dict: dict[str, torch.Tensor], path: str, origin: str = "The weights"
) -> tuple[int, int | None]:
    """Read ``(num_classes, hidden)`` of a head at ``path`` from a state dict.

    Args:
        state_dict: weights saved from a model whose head sits at ``path``.
        path: qualified name of the head, from :func:`find_head`.
        origin: where the weights come from, for the error message.

    Raises:
        ModelError: if the state dict has no head weights at ``path``.
    """
    for key in (f"{path}.weight", f"{path}.out.weight"):
        if key in state_dict:
            hidden_w = state_dict.get(f"{path}.hidden.weight")
            hidden = int(hidden_w.shape[0]) if hidden_w is not None else None
            return int(state_dict[key].shape[0]), hidden
    raise ModelError(
        f"{origin} has no classifier at {path!r} (expected a key {path}.weight or "
        f"{path}.out.weight). Was the checkpoint saved from this architecture?"
    )
