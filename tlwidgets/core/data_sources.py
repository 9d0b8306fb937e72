"""Where images come from besides a plain folder: archives (:mod:`tlwidgets.core.archives`),
the demo digits, torchvision datasets.

Each source ends up as a folder of class sub-folders in the cache directory, so one
scanner (:mod:`tlwidgets.core.images`) checks every image the same way. Writing is
idempotent: a source already materialised in the cache is reused as it is.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ._cache import cache_dir
from .archives import ARCHIVE_SUFFIXES, extract_archive, is_archive  # noqa: F401 - part of this module's API
from .errors import DataError

Progress = Callable[[int, int], None]

DEMO_MAX_PER_CLASS = 60

# torchvision dataset -> (keyword arguments of the training split, of the validation split or None).
# None: the dataset has no predefined split and is split by val_fraction.
_TV_SPLITS: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "CIFAR10": ({"train": True}, {"train": False}),
    "CIFAR100": ({"train": True}, {"train": False}),
    "MNIST": ({"train": True}, {"train": False}),
    "FashionMNIST": ({"train": True}, {"train": False}),
    "KMNIST": ({"train": True}, {"train": False}),
    "USPS": ({"train": True}, {"train": False}),
    "SVHN": ({"split": "train"}, {"split": "test"}),
    "STL10": ({"split": "train"}, {"split": "test"}),
    "Flowers102": ({"split": "train"}, {"split": "val"}),
    "OxfordIIITPet": ({"split": "trainval", "target_types": "category"},
                      {"split": "test", "target_types": "category"}),
    "Food101": ({"split": "train"}, {"split": "test"}),
    "DTD": ({"split": "train"}, {"split": "val"}),
    "GTSRB": ({"split": "train"}, {"split": "test"}),
    "Country211": ({"split": "train"}, {"split": "valid"}),
    "FGVCAircraft": ({"split": "train"}, {"split": "val"}),
    "StanfordCars": ({"split": "train"}, {"split": "test"}),
    "Imagenette": ({"split": "train", "size": "160px"}, {"split": "val", "size": "160px"}),
    "RenderedSST2": ({"split": "train"}, {"split": "val"}),
    "PCAM": ({"split": "train"}, {"split": "val"}),
    "EuroSAT": ({}, None),
    "Caltech101": ({"target_type": "category"}, None),
    "Caltech256": ({}, None),
    "SUN397": ({}, None),
    # Random images, offline: a quick way to exercise this path without a download.
    "FakeData": ({"size": 120, "image_size": (3, 32, 32), "num_classes": 4, "random_offset": 0},
                 {"size": 40, "image_size": (3, 32, 32), "num_classes": 4, "random_offset": 10_000}),
}
_TV_NO_ROOT = frozenset({"FakeData"})


# ---------------------------------------------------------------------------- demo digits
def demo_folder(max_per_class: int = DEMO_MAX_PER_CLASS, progress: Progress | None = None) -> Path:
    """Write scikit-learn's bundled 8x8 digits as 32x32 RGB PNGs: ``<cache>/demo/digits/<0..9>/``.

    The first ``max_per_class`` images of each digit (in the data set's order) are
    written; files already there are kept, so a second call writes nothing.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    dest = cache_dir("demo", "digits")
    wanted: list[tuple[int, int]] = []  # (index into the data set, digit)
    per_class: dict[int, int] = {}
    for i, digit in enumerate(digits.target.tolist()):
        if per_class.get(digit, 0) < max_per_class:
            per_class[digit] = per_class.get(digit, 0) + 1
            wanted.append((i, digit))
    todo = [(i, d) for i, d in wanted if not (dest / str(d) / f"digit_{i:04d}.png").is_file()]
    for n, (i, digit) in enumerate(todo, 1):
        # Dark ink on white paper, values 0..16 -> 255..0.
        pixels = (255 - np.rint(digits.images[i] * (255 / 16))).astype(np.uint8)
        image = Image.fromarray(pixels, "L").resize((32, 32), Image.Resampling.BILINEAR).convert("RGB")
        _save_atomic(image, dest / str(digit) / f"digit_{i:04d}.png")
        if progress is not None:
            progress(n, len(todo))
    return dest


def _save_atomic(image: Image.Image, path: Path) -> None:
    """Save via a temporary name so an interrupted run never leaves a half-written image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- torchvision
def torchvision_name(name: str) -> str | None:
    """The torchvision dataset class matching ``name`` (case-insensitive), or None."""
    lookup = {n.lower(): n for n in _TV_SPLITS}
    return lookup.get(name.strip().lower())


def torchvision_names() -> list[str]:
    """Names of the torchvision datasets :func:`torchvision_folder` knows how to split."""
    return sorted(_TV_SPLITS)


def torchvision_folder(
    name: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    max_per_class: int | None = None,
    progress: Progress | None = None,
) -> tuple[Path, bool]:
    """Materialise a torchvision dataset as ``<cache>/torchvision-folders/<Name>/{train,val}/<class>/``.

    Args:
        name: a dataset class of ``torchvision.datasets`` (see :func:`torchvision_names`).
        root: where torchvision keeps the raw download; default ``<cache>/torchvision``.
        download: let torchvision download the data when it is not in ``root``.
        max_per_class: write only the first N images of each class per split.

    Returns:
        ``(folder, has_val)``: with ``has_val`` the folder holds ``train/`` and ``val/``,
        otherwise ``all/`` (split later by ``val_fraction``).
    """
    canonical = torchvision_name(name)
    if canonical is None:
        close = difflib.get_close_matches(name, torchvision_names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise DataError(
            f"Unknown torchvision dataset {name!r}.{hint} Known: {', '.join(torchvision_names())}."
        )
    raw_root = Path(root).expanduser() if root is not None else cache_dir("torchvision")
    dest = cache_dir("torchvision-folders", canonical)
    train_kw, val_kw = _TV_SPLITS[canonical]
    splits = {"train": train_kw, "val": val_kw} if val_kw is not None else {"all": train_kw}
    for split, kwargs in splits.items():
        manifest = dest.parent / f"{canonical}-{split}.json"
        if _manifest_covers(manifest, max_per_class):
            continue
        ds = _open_torchvision(canonical, kwargs, raw_root, download)
        classes = _class_names(ds)
        counts = _dataset_to_folder(ds, dest / split, classes, max_per_class, progress)
        manifest.write_text(json.dumps({"max_per_class": max_per_class, "counts": counts}))
    return dest, val_kw is not None


def _manifest_covers(manifest: Path, max_per_class: int | None) -> bool:
    """True when an earlier conversion wrote at least the images now asked for."""
    try:
        written = json.loads(manifest.read_text())["max_per_class"]
    except (OSError, ValueError, KeyError):
        return False
    return written is None or (max_per_class is not None and written >= max_per_class)


def _open_torchvision(name: str, kwargs: dict[str, Any], root: Path, download: bool) -> Any:
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if cls is None:
        raise DataError(f"This torchvision version has no dataset {name}; upgrade torchvision.")
    if name in _TV_NO_ROOT:
        return cls(**kwargs)
    try:
        return cls(root=str(root), download=download, **kwargs)
    except ImportError as exc:
        raise DataError(f"The torchvision dataset {name} needs a package that is missing: {exc}.") from exc
    except Exception as exc:
        if not download:
            raise DataError(
                f"The torchvision dataset {name} is not in {root}. Pass download=True to download it "
                f"(needs internet); it will be stored in {root}."
            ) from exc
        raise DataError(
            f"Downloading the torchvision dataset {name} into {root} failed ({exc}). Check the internet "
            f"connection, or download it elsewhere and copy it into {root}."
        ) from exc


def _class_names(ds: Any) -> list[str]:
    """Folder-safe class names, in label order; digits are zero-padded so they sort by label."""
    names = getattr(ds, "classes", None)
    if names is None:
        targets = _targets(ds)
        count = getattr(ds, "num_classes", None) or (max(targets) + 1 if targets else 0)
        width = len(str(max(count - 1, 0)))
        return [str(i).zfill(width) for i in range(count)]
    return [re.sub(r"[/\\:\0]", "_", str(n)).strip() or f"class_{i}" for i, n in enumerate(names)]


def _targets(ds: Any) -> list[int] | None:
    """Labels without decoding images, where the dataset exposes them."""
    for attr in ("targets", "_labels", "labels", "y"):
        values = getattr(ds, attr, None)
        if values is not None and not isinstance(values, (str, dict)):
            try:
                return [int(v) for v in values]
            except (TypeError, ValueError):
                continue
    samples = getattr(ds, "samples", None) or getattr(ds, "_samples", None)
    if samples is not None:
        return [int(label) for _, label in samples]
    return None


def _source_files(ds: Any) -> list[str] | None:
    """Original image files of a file-backed dataset, to copy instead of re-encoding."""
    samples = getattr(ds, "samples", None) or getattr(ds, "_samples", None)
    if samples is not None:
        return [str(path) for path, _ in samples]
    for attr in ("_image_files", "_images"):
        files = getattr(ds, attr, None)
        if files is not None:
            return [str(f) for f in files]
    return None


def _dataset_to_folder(
    ds: Any,
    dest: str | os.PathLike[str],
    classes: Sequence[str],
    max_per_class: int | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write a map-style dataset of ``(PIL image, label)`` into ``dest/<class>/<index>.png``.

    Only the first ``max_per_class`` items of each class (in dataset order) are
    written; file names carry the dataset index, zero-padded, so sorting them keeps
    that order. Files already present are kept. File-backed datasets are copied.

    Returns:
        images per class name that the folder now holds for this request.
    """
    dest = Path(dest)
    n = len(ds)
    targets = _targets(ds)
    files = _source_files(ds)
    if files is not None and len(files) != n:
        files = None
    width = max(6, len(str(n)))
    counts = dict.fromkeys(classes, 0)
    for i in range(n):
        label = targets[i] if targets is not None else None
        if label is not None and max_per_class is not None and counts[classes[label]] >= max_per_class:
            continue
        ext = os.path.splitext(files[i])[1].lower() if files is not None else ".png"
        if label is not None:
            path = dest / classes[label] / f"{i:0{width}d}{ext}"
            if path.is_file():
                counts[classes[label]] += 1
                continue
        image = None
        if files is None or label is None:
            image, label = ds[i]
            if max_per_class is not None and counts[classes[int(label)]] >= max_per_class:
                continue
        path = dest / classes[int(label)] / f"{i:0{width}d}{ext}"
        if not path.is_file():
            if files is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                shutil.copyfile(files[i], tmp)
                os.replace(tmp, path)
            else:
                if not isinstance(image, Image.Image):
                    raise DataError(f"Item {i} of {type(ds).__name__} is not a PIL image; pass transform=None.")
                _save_atomic(image, path)
        counts[classes[int(label)]] += 1
        if progress is not None:
            progress(i + 1, n)
        if max_per_class is not None and all(c >= max_per_class for c in counts.values()):
            break
    return counts
