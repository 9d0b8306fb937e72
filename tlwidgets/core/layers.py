"""Layer rows, freezing, the BatchNorm policy and per-layer learning-rate factors.

The unit of freezing is a *layer*: a leaf module that owns parameters (``layer3.0.conv1``),
or a parameter held directly by a container (ViT's ``class_token``,
``encoder.pos_embedding``). Every function that takes names accepts a layer name, a
container name (``layer3``, ``features.4``: applies to everything below it) or a full
parameter name, and raises :class:`~tlwidgets.core.errors.ModelError` with close matches
for anything else.

Freezing means ``requires_grad = False``, which is the same as an LR factor of 0. Non-zero
factors are a plain ``{name prefix: factor}`` dict kept by the caller (the Session holds it
in a trait) and passed to :func:`layer_table`, :func:`param_groups` and the trainer;
:func:`set_lr_factor` updates such a dict and the freezing together.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tlwidgets.core.errors import ModelError, TLWidgetsError

TABLE_COLUMNS = ("name", "type", "output_shape", "params", "trainable", "lr_factor", "group", "is_head")


@dataclass(frozen=True)
class _Unit:
    """One freezable layer: a parameterised leaf module, or a container's own parameter."""

    name: str
    module: nn.Module
    params: tuple[nn.Parameter, ...]
    type: str
    is_module: bool


def _units(model: nn.Module) -> list[_Unit]:
    """Freezable layers in registration order; shared parameters are counted once."""
    seen: set[int] = set()
    units: list[_Unit] = []
    for mname, module in model.named_modules():
        direct = [(pn, p) for pn, p in module.named_parameters(recurse=False) if id(p) not in seen]
        if not direct:
            continue
        seen.update(id(p) for _, p in direct)
        is_leaf = next(module.children(), None) is None
        if is_leaf and mname:
            units.append(_Unit(mname, module, tuple(p for _, p in direct), type(module).__name__, True))
        else:
            for pn, p in direct:
                full = f"{mname}.{pn}" if mname else pn
                units.append(_Unit(full, module, (p,), "Parameter", False))
    return units


def _matches(full: str, key: str) -> bool:
    """True when ``key`` names ``full`` itself or one of its containers."""
    return full == key or full.startswith(key + ".")


def _known_names(model: nn.Module) -> list[str]:
    names = [n for n, _ in model.named_modules() if n]
    names += [n for n, _ in model.named_parameters()]
    return names


def _check_names(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Return ``names`` as a list, or raise ModelError naming the first unknown one."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    known = _known_names(model)
    known_set = set(known)
    for name in names:
        if not isinstance(name, str) or name not in known_set:
            close = difflib.get_close_matches(str(name), known, n=5, cutoff=0.5)
            if close:
                hint = "Did you mean " + ", ".join(repr(c) for c in close) + "?"
            else:
                tops = [n for n, _ in model.named_children()]
                hint = "Top-level layers are: " + ", ".join(tops[:12]) + "."
            raise ModelError(
                f"No layer named {name!r} in {type(model).__name__}. {hint} "
                "layer_table(model)['name'] lists every layer."
            )
    return names


def _set_requires_grad(model: nn.Module, names: list[str], flag: bool) -> None:
    for pname, p in model.named_parameters():
        if any(_matches(pname, key) for key in names):
            p.requires_grad_(flag)


def freeze(model: nn.Module, names: Iterable[str]) -> None:
    """Stop training the named layers.

    Args:
        model: the model, changed in place.
        names: layer, container or parameter names (one string is accepted too);
            a container name freezes everything below it.

    Raises:
        ModelError: a name does not exist in ``model``.
    """
    _set_requires_grad(model, _check_names(model, names), False)


def unfreeze(model: nn.Module, names: Iterable[str]) -> None:
    """Train the named layers again (inverse of :func:`freeze`)."""
    _set_requires_grad(model, _check_names(model, names), True)


def unfreeze_all(model: nn.Module) -> None:
    """Make every parameter of ``model`` trainable."""
    for p in model.parameters():
        p.requires_grad_(True)


def freeze_up_to(model: nn.Module, name: str) -> None:
    """Freeze every layer from the first up to and including ``name``; unfreeze the rest.

    Layers are ordered by registration. When ``name`` is a container, the cut is after
    its last layer.

    Raises:
        ModelError: ``name`` does not exist in ``model``.
    """
    _check_names(model, [name])
    units = _units(model)
    last = max(i for i, u in enumerate(units) if _matches(u.name, name) or _matches(name, u.name))
    for i, unit in enumerate(units):
        for p in unit.params:
            p.requires_grad_(i > last)


def freeze_backbone(model: nn.Module, head_path: str) -> None:
    """Freeze everything except the head at ``head_path`` (which becomes trainable)."""
    _check_names(model, [head_path])
    for pname, p in model.named_parameters():
        p.requires_grad_(_matches(pname, head_path))


def frozen_names(model: nn.Module) -> tuple[str, ...]:
    """Names of the layers whose parameters are all frozen, in registration order."""
    return tuple(u.name for u in _units(model) if not any(p.requires_grad for p in u.params))


def set_bn_eval(model: nn.Module) -> None:
    """Put BatchNorm layers with frozen affine parameters in eval mode.

    Call it after ``model.train()``: a frozen BatchNorm then normalises with its stored
    statistics and leaves ``running_mean``/``running_var``/``num_batches_tracked`` untouched,
    so a frozen stage stays exactly as it was. BatchNorm without affine parameters has
    nothing to freeze and keeps its mode.
    """
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def lr_factor_of(name: str, factors: Mapping[str, float]) -> float:
    """Learning-rate factor of layer ``name``: that of the longest key of ``factors`` that names ``name`` or a container of it."""
    best, best_len = 1.0, -1
    for key, value in factors.items():
        if _matches(name, key) and len(key) > best_len:
            best, best_len = float(value), len(key)
    return best


def _check_factors(model: nn.Module, factors: Mapping[str, float]) -> None:
    _check_names(model, list(factors))
    for key, value in factors.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ModelError(f"LR factor for {key!r} is {value!r}; use a number >= 0 (0 freezes the layer).")


def set_lr_factor(
    model: nn.Module, lr_factors: Mapping[str, float] | None, name: str, factor: float
) -> dict[str, float]:
    """Scale the learning rate of ``name`` (and everything below it) by ``factor``.

    A factor of 0 freezes the layers (and is not stored: freezing is the record of it);
    a positive factor unfreezes them. Entries of ``lr_factors`` for ``name`` or layers
    below it are replaced.

    Args:
        model: the model; its ``requires_grad`` flags change in place.
        lr_factors: the current ``{name prefix: factor}`` dict (not modified).
        name: a layer, container or parameter name.
        factor: a number >= 0.

    Returns:
        The updated factors, a new dict.

    Raises:
        ModelError: unknown ``name`` or a negative / non-finite factor.
    """
    _check_factors(model, {name: factor})
    factors = {k: float(v) for k, v in (lr_factors or {}).items() if not _matches(k, name)}
    if factor == 0:
        freeze(model, [name])
    else:
        unfreeze(model, [name])
        factors[name] = float(factor)
    return factors


def param_groups(model: nn.Module, lr: float, lr_factors: Mapping[str, float] | None = None) -> list[dict]:
    """Optimizer parameter groups, one per distinct LR factor.

    Each parameter gets the factor of the longest matching name prefix in ``lr_factors``
    (1.0 when none matches). Frozen parameters and those with factor 0 are left out.

    Args:
        model: the model.
        lr: the base learning rate.
        lr_factors: ``{layer or container name: factor}``; ``None`` means 1.0 everywhere.

    Returns:
        Dicts with ``params``, ``lr`` (= lr * factor), ``lr_factor`` and ``names``, in
        order of decreasing factor.

    Raises:
        ModelError: a key of ``lr_factors`` is not a layer name, or a factor is negative.
    """
    factors = _resolve_factors(model, lr_factors)
    groups: dict[float, dict] = {}
    for pname, p in model.named_parameters():
        factor = lr_factor_of(pname, factors)
        if not p.requires_grad or factor == 0:
            continue
        group = groups.setdefault(factor, {"params": [], "lr": lr * factor, "lr_factor": factor, "names": []})
        group["params"].append(p)
        group["names"].append(pname)
    return [groups[f] for f in sorted(groups, reverse=True)]


def _resolve_factors(model: nn.Module, factors: Mapping[str, float] | None) -> dict[str, float]:
    resolved = dict(factors or {})
    _check_factors(model, resolved)
    return resolved


def _default_head(model: nn.Module, units: list[_Unit]) -> str | None:
    try:
        from tlwidgets.core.heads import find_head

        return find_head(model)[0]
    except (ImportError, TLWidgetsError):
        return units[-1].name if units else None


def _groups(units: list[_Unit]) -> dict[str, int]:
    """Count the layers below every container name."""
    counts: dict[str, int] = {}
    for unit in units:
        parts = unit.name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            counts[prefix] = counts.get(prefix, 0) + 1
    return counts


def _group_of(name: str, counts: dict[str, int], total: int) -> str:
    """Top-level stage of ``name``: descend through containers holding most of the model.

    ResNet's ``layer3.0.conv1`` -> ``layer3``; EfficientNet's ``features.4.0.block.0.0``
    -> ``features.4`` (``features`` holds nearly every layer); timm's ``blocks.2.0.conv_pw``
    -> ``blocks.2``; ViT's ``encoder.layers.encoder_layer_3.ln_1`` -> ``...encoder_layer_3``.
    """
    parts = name.split(".")
    prefix = parts[0]
    for part in parts[1:]:
        if counts.get(prefix, 0) * 2 <= total:
            break
        prefix = f"{prefix}.{part}"
    return prefix


def _shape_of(out: object) -> tuple[int, ...] | None:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return tuple(out[0].shape)
    return None


def _output_shapes(model: nn.Module, modules: dict[str, nn.Module], input_size: int) -> dict[str, tuple | None]:
    """Run one zeros image through ``model`` in eval mode and record each module's output shape."""
    shapes: dict[str, tuple | None] = {}

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs: object, out: object) -> None:
            shapes.setdefault(name, _shape_of(out))

        return hook

    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=device, dtype=dtype))
    except Exception as exc:  # a table without shapes is still useful for freezing
        warnings.warn(
            f"Could not run a 1x3x{input_size}x{input_size} image through {type(model).__name__} "
            f"({exc}); output shapes are missing. Try the model's own input size.",
            stacklevel=3,
        )
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes:
            module.training = mode
    return shapes


def layer_table(
    model: nn.Module,
    input_size: int = 224,
    head_path: str | None = None,
    lr_factors: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per layer, for browsing and freezing.

    Rows are the layers (leaf modules with parameters, and parameters held directly by
    containers) in registration order, plus every leaf of the head (a head's Dropout
    too).

    Args:
        model: the model; its training mode is left as it was.
        input_size: side of the square zeros image used to record output shapes.
        head_path: qualified name of the classifier head; ``None`` asks
            ``tlwidgets.core.heads.find_head`` and falls back to the last layer.
        lr_factors: ``{name prefix: factor}``; ``None`` means 1.0 everywhere.

    Returns:
        DataFrame with columns ``name, type, output_shape, params, trainable, lr_factor,
        group, is_head``. ``output_shape`` is a tuple (``None`` for container parameters
        and modules the forward pass did not reach). ``lr_factor`` is 0.0 for frozen layers.
    """
    factors = _resolve_factors(model, lr_factors)
    units = _units(model)
    if head_path is None:
        head_path = _default_head(model, units)
    elif head_path:
        _check_names(model, [head_path])
    by_module: dict[int, list[_Unit]] = {}
    for unit in units:
        by_module.setdefault(id(unit.module), []).append(unit)
    rows: list[tuple[str, nn.Module | None, tuple[nn.Parameter, ...], str]] = []
    for mname, module in model.named_modules():
        unit_rows = by_module.get(id(module))
        if unit_rows:
            rows.extend((u.name, module if u.is_module else None, u.params, u.type) for u in unit_rows)
        elif head_path and mname and _matches(mname, head_path) and next(module.children(), None) is None:
            rows.append((mname, module, (), type(module).__name__))
    shapes = _output_shapes(model, {n: m for n, m, _, _ in rows if m is not None}, input_size)
    counts = _groups(units)
    records = []
    for name, _module, params, type_name in rows:
        trainable = all(p.requires_grad for p in params)
        frozen = bool(params) and not any(p.requires_grad for p in params)
        records.append(
            {
                "name": name,
                "type": type_name,
                "output_shape": shapes.get(name),
                "params": sum(p.numel() for p in params),
                "trainable": trainable,
                "lr_factor": 0.0 if frozen else lr_factor_of(name, factors),
                "group": _group_of(name, counts, len(units)),
                "is_head": bool(head_path) and _matches(name, head_path),
            }
        )
    return pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
