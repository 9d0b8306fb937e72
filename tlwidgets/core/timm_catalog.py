"""The timm models of the catalog, read from a snapshot that ``tools/build_timm_catalog.py`` writes.

The snapshot (``data/timm_catalog.json.gz``) lists every ImageNet-1k classifier among timm's
pretrained weights that lives on the Hugging Face Hub as a safetensors state dict, with
preprocessing, licence and Hub repository from timm's pretrained configs, and parameters
and GFLOPs computed by that script on the meta device. It says when it was built and
from which timm version. ImageNet top-1 comes from timm's published results table,
fetched at run time (:mod:`tlwidgets.core.timm_accuracy`), so the rows carry none here.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlwidgets.core.model_spec import ModelSpec, family_label

PREFIX = "timm:"
SNAPSHOT = Path(__file__).resolve().parent / "data" / "timm_catalog.json.gz"
COLUMNS = (
    "id", "arch", "tag", "family", "input_size", "interpolation", "crop_pct", "crop_mode",
    "mean", "std", "license", "hf_hub_id", "params_m", "gflops", "flops_note",
)
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@functools.cache
def snapshot(path: Path = SNAPSHOT) -> dict[str, Any]:
    """The snapshot as ``{"built", "timm", "torch", "rows": [dict per model], "skipped"}``.

    Raises:
        ValueError: the file's columns are not :data:`COLUMNS` (written by another version).
    """
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    if tuple(data.get("columns", ())) != COLUMNS:
        raise ValueError(f"{path} has columns {data.get('columns')}, expected {list(COLUMNS)}.")
    rows = [dict(zip(COLUMNS, row)) for row in data["rows"]]
    return {**{k: v for k, v in data.items() if k not in ("columns", "rows")}, "rows": rows}


def available() -> bool:
    """Whether timm is installed (the timm rows are listed only then: they need it to build)."""
    return importlib.util.find_spec("timm") is not None


def family_prefix(arch: str) -> str:
    """The architecture prefix: ``resnet50`` -> ``resnet``, ``vit_base_patch16_224`` -> ``vit``,
    ``convnextv2_tiny`` -> ``convnextv2`` (a version belongs to the family), ``tf_efficientnet_b0``
    -> ``efficientnet``."""
    name = arch
    for prefix in ("tf_", "legacy_", "gluon_"):
        name = name.removeprefix(prefix)
    first = name.split("_")[0]
    if re.search(r"v\d+$", first):
        return first
    return re.sub(r"\d+[a-z]?$", "", first) or first


def family_for(arch: str) -> str:
    """Family shown for a timm architecture (``resnet50`` -> ``ResNet``, ``convnextv2_tiny`` -> ``convnextv2``)."""
    return family_label(family_prefix(arch))


def resize_for(input_size: int, crop_pct: float) -> int:
    """The resize before the centre crop, as timm computes it: ``floor(size / crop_pct)``."""
    return math.floor(input_size / crop_pct) if 0 < crop_pct <= 1 else input_size


def _spec(row: Mapping[str, Any], class_names: tuple[str, ...], accuracy: tuple[float, float] | None) -> ModelSpec:
    size = int(row["input_size"][0])
    gflops = row["gflops"]
    return ModelSpec(
        name=row["id"], family=family_label(row["family"]), source="timm",
        arch=f"{row['arch']}.{row['tag']}", params_m=float(row["params_m"]),
        gflops=float("nan") if gflops is None else float(gflops),
        size_mb=float(row["params_m"]) * 1e6 * 4 / 2**20,  # float32 safetensors
        top1=accuracy[0] if accuracy else None, top5=accuracy[1] if accuracy else None,
        input_size=size, resize_size=resize_for(size, float(row["crop_pct"])),
        mean=tuple(row["mean"]), std=tuple(row["std"]),  # type: ignore[arg-type]
        interpolation=row["interpolation"] if row["interpolation"] in _INTERPOLATIONS else "bicubic",
        weights_url=None, weights_path=None, num_classes=1000, class_names=class_names,
        license=str(row["license"] or ""), hub_id=row["hf_hub_id"],
    )


def specs(
    class_names: tuple[str, ...] = (), accuracy: Mapping[str, tuple[float, float]] | None = None
) -> dict[str, ModelSpec]:
    """One :class:`ModelSpec` per snapshot row, keyed ``timm:<arch>.<tag>`` (empty without timm).

    Args:
        class_names: the ImageNet-1k class names (the weights' outputs, in order).
        accuracy: ``{"<arch>.<tag>": (top1, top5)}`` to merge.
    """
    if not available() or not SNAPSHOT.is_file():
        return {}
    accuracy = accuracy or {}
    return {
        row["id"]: _spec(row, class_names, accuracy.get(row["id"][len(PREFIX):]))
        for row in snapshot()["rows"]
    }
