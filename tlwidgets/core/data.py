"""Image data for transfer learning: load a source, check it, split it and report on it.

``load_data`` accepts a folder of class sub-folders (or ``train/`` + ``val/`` folders),
a zip/tar archive, ``"demo"`` (scikit-learn's bundled digits) or a torchvision dataset
name. Archives, the demo and torchvision datasets are first written into the cache as
class folders (see :mod:`tlwidgets.core.data_sources`), so every source is scanned
the same way (:mod:`tlwidgets.core.folder_scan`): each image is decoded once, and each
unusable file is reported with its reason. The result is a :class:`DataBundle`, whose
datasets (:mod:`tlwidgets.core.datasets`) read the images through the session's transforms
(:mod:`tlwidgets.core.transforms`, where :class:`Augment` lives too).
"""

from __future__ import annotations

import html
import math
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from . import data_sources as sources
from .data_sources import torchvision_names
from .datasets import (
    DECODED_CACHE_MAX_BYTES,
    DecodedBudget,
    ImageDataset,
    decoded_cache_bound,
)
from .errors import DataError
from .folder_scan import Progress, Sample, _Scan, _scan, scan_folder
from .images import file_kind, is_hidden, load_image
from .transforms import Augment, Normalisation, make_transforms, normalisation_of

# Names other modules and notebooks import from here, wherever they are defined.
__all__ = [
    "DECODED_CACHE_MAX_BYTES", "Augment", "DataBundle", "DecodedBudget", "ImageDataset", "Sample", "ScanReport",
    "decoded_cache_bound", "holdout_samples", "load_data", "load_image", "make_transforms", "scan_folder",
    "torchvision_names",
]

_VAL_NAMES = ("val", "valid", "validation", "test")
_LAYOUT_HINT = "one sub-folder per class, e.g. root/cats/*.jpg, root/dogs/*.jpg"


@dataclass
class ScanReport:
    """What a data source held: classes, counts per split, image sizes and skipped files.

    Attributes:
        source: what was passed to :func:`load_data`.
        layout: ``"folder"``, ``"train/val folders"``, ``"archive"`` (``"archive (train/val
            folders)"``), ``"demo:digits"`` or ``"torchvision:<Name>"``.
        classes: class names; a class's label is its index here.
        counts: index classes, integer columns ``train``, ``val``, ``total``.
        image_sizes: index ``min``, ``median``, ``max``; columns ``width``, ``height`` (pixels).
        skipped: columns ``path``, ``reason``: every file or folder left out.
        notes: remarks on the split, e.g. classes too small to get validation images.
    """

    source: str
    layout: str
    classes: list[str]
    counts: pd.DataFrame
    image_sizes: pd.DataFrame
    skipped: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One readable paragraph: totals, split, sizes, skipped files and notes."""
        train, val = int(self.counts["train"].sum()), int(self.counts["val"].sum())
        parts = [
            f"{train + val} images in {len(self.classes)} classes from {self.source} ({self.layout}): "
            f"{train} for training, {val} for validation."
        ]
        totals = self.counts["total"]
        if len(totals) and totals.min() != totals.max():
            parts.append(
                f"Smallest class {totals.idxmin()!r} has {totals.min()} images, "
                f"largest {totals.idxmax()!r} {totals.max()}."
            )
        w, h = self.image_sizes.get("width"), self.image_sizes.get("height")
        if len(self.image_sizes) and w["min"] == w["max"] and h["min"] == h["max"]:
            parts.append(f"All images are {w['min']}x{h['min']} pixels.")
        elif len(self.image_sizes):
            parts.append(
                f"Image sizes: width {w['min']}-{w['max']} (median {w['median']}), "
                f"height {h['min']}-{h['max']} (median {h['median']}) pixels."
            )
        if len(self.skipped):
            groups = self.skipped["reason"].str.split(":").str[0].value_counts()
            listed = "; ".join(f"{n} {reason}" for reason, n in groups.head(4).items())
            more = " and more" if len(groups) > 4 else ""
            parts.append(f"Skipped {len(self.skipped)} (see .skipped): {listed}{more}.")
        parts.extend(self.notes)
        return " ".join(parts)

    def _repr_html_(self) -> str:
        skipped = self.skipped.head(20).to_html(index=False) if len(self.skipped) else ""
        return f"<p>{html.escape(self.summary())}</p>{self.counts.to_html()}{skipped}"


def _identity(image: Any) -> Any:
    return image


@dataclass
class DataBundle:
    """Classes, the two splits, the scan report and the transforms; what a Session holds."""

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    report: ScanReport
    train_tf: Callable[[Image.Image], Any] = _identity
    eval_tf: Callable[[Image.Image], Any] = _identity

    @property
    def normalisation(self) -> Normalisation | None:
        """``(mean, std)`` the transforms normalise with; ``None`` until a session sets them.

        Read from the transforms themselves (:func:`~tlwidgets.core.transforms.make_transforms`
        builds them knowing it), so it always matches what the model is fed.
        """
        return normalisation_of(self.train_tf) or normalisation_of(self.eval_tf)

    def datasets(self, cache: bool = False) -> tuple[ImageDataset, ImageDataset]:
        """``(ImageDataset(train, train_tf), ImageDataset(val, eval_tf))``.

        With ``cache=True`` both keep decoded images within one shared
        :func:`decoded_cache_bound`.
        """
        budget = DecodedBudget() if cache else False
        return (
            ImageDataset(self.train, self.train_tf, cache=budget, classes=self.classes),
            ImageDataset(self.val, self.eval_tf, cache=budget, classes=self.classes),
        )


# ---------------------------------------------------------------------------- loading
def load_data(
    source: str | os.PathLike[str],
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    max_per_class: int | None = None,
    progress: Progress | None = None,
) -> DataBundle:
    """Load, check and split images; the bundle's transforms are identities until set.

    Args:
        source: a folder of class sub-folders (or of ``train/`` and ``val/`` class folders,
            whose split is used as given), a ``.zip``/``.tar``/``.tar.gz``/``.tgz``/
            ``.tar.bz2`` archive, ``"demo"``, or a torchvision dataset such as
            ``"torchvision:CIFAR10"`` / ``"CIFAR10"`` (written once into the cache as
            class folders of image files).
        val_fraction: share of each class held out for validation, 0 <= f < 1.
        seed: seed of the stratified split.
        root: where torchvision datasets are downloaded; default the cache directory.
        download: allow torchvision to download a dataset that is not in ``root``.
        max_per_class: use at most the first N images (sorted by file name) of each class
            and split; the demo defaults to 60.
        progress: called with (done, total) while images are written and checked.

    Raises:
        DataError: a missing source, bad argument, or fewer than two usable classes.
    """
    # Every option is checked before anything is scanned, extracted or downloaded.
    val_fraction = _check_fraction(val_fraction)
    seed = _check_seed(seed)
    max_per_class = _check_max_per_class(max_per_class)
    try:
        text = os.fspath(source)
    except TypeError:
        text = None
    if not isinstance(text, str):
        raise DataError(
            f"source={source!r} is not a folder, archive path or dataset name; pass e.g. a folder "
            "path, 'demo' or 'torchvision:CIFAR10'."
        )
    if not text.strip():
        # Path("") is the current folder: an empty text box must not scan wherever the kernel runs.
        raise DataError(
            f"source={source!r} is empty. Pass a folder with {_LAYOUT_HINT}; an archive; 'demo'; "
            "or a torchvision dataset such as 'torchvision:CIFAR10'."
        )
    path = Path(text).expanduser()
    is_tv = text.lower().startswith("torchvision:")
    if text.strip().lower() in ("demo", "demo:digits"):
        limit = max_per_class or sources.DEMO_MAX_PER_CLASS
        folder = sources.demo_folder(limit, progress)
        return _from_folder(folder, "demo", "demo:digits", val_fraction, seed, limit, progress)
    if is_tv or (not path.exists() and sources.torchvision_name(text)):
        name = text.split(":", 1)[1] if is_tv else text
        folder, has_val = sources.torchvision_folder(name, root, download, max_per_class, progress)
        layout = f"torchvision:{folder.name}"
        if has_val:
            return _from_split_folders(folder, text, layout, "train", "val", max_per_class, progress)
        return _from_folder(folder / "all", text, layout, val_fraction, seed, max_per_class, progress)
    if path.is_file():
        if not sources.is_archive(path):
            raise DataError(
                f"{path} is a file, not a folder or a supported archive "
                f"({', '.join(sources.ARCHIVE_SUFFIXES)})."
            )
        folder = sources.extract_archive(path)
        return _load_folder(folder, text, "archive", val_fraction, seed, max_per_class, progress,
                            shown=f"The archive {path}")
    _refuse_special(path)
    if not path.is_dir():
        raise DataError(
            f"Folder not found: {path}. Pass a folder with {_LAYOUT_HINT}; an archive "
            "(.zip, .tar, .tar.gz, .tgz, .tar.bz2); 'demo'; or a torchvision dataset such as "
            "'torchvision:CIFAR10'."
        )
    return _load_folder(path, text, "folder", val_fraction, seed, max_per_class, progress)


def _refuse_special(path: Path) -> None:
    """A named pipe, socket or device is neither a folder nor an archive; reading it could block."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        raise DataError(f"{path} is {file_kind(mode)}, not a folder or an archive file. Pass a folder "
                        f"with {_LAYOUT_HINT}, or a .zip or .tar archive.")


def _check_seed(seed: Any) -> int:
    """The split seed as an int in 0 .. 2**32 - 1 (what numpy's RandomState takes)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise DataError(
            f"seed={seed!r} must be a whole number from 0 to {2**32 - 1} (2**32 - 1); the same seed "
            "gives the same split."
        )
    return int(seed)


def _check_max_per_class(max_per_class: Any) -> int | None:
    if max_per_class is None:
        return None
    if (isinstance(max_per_class, (bool, np.bool_)) or not isinstance(max_per_class, (int, np.integer))
            or max_per_class < 1):
        raise DataError(
            f"max_per_class={max_per_class!r} must be a positive whole number (at most that many "
            "images per class), or None for all images."
        )
    return int(max_per_class)


def _check_fraction(val_fraction: Any) -> float:
    try:
        value = float(val_fraction)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(val_fraction, bool) or not 0.0 <= value < 1.0:
        raise DataError(
            f"val_fraction={val_fraction!r} must be a number from 0 (no validation split) up to, "
            "but not including, 1; 0.2 holds out a fifth of each class."
        )
    return value


def _load_folder(
    folder: Path, source: str, kind: str, val_fraction: float, seed: int,
    max_per_class: int | None, progress: Progress | None, shown: str | None = None,
) -> DataBundle:
    split = _find_split_folders(folder)
    if split is not None:
        layout = "train/val folders" if kind == "folder" else f"{kind} (train/val folders)"
        return _from_split_folders(folder, source, layout, *split, max_per_class, progress, shown)
    return _from_folder(folder, source, kind, val_fraction, seed, max_per_class, progress, shown)


def _find_split_folders(folder: Path) -> tuple[str, str] | None:
    """``(train, val)`` sub-folder names when ``folder`` uses the train/val layout."""
    names = {e.name.lower(): e.name for e in folder.iterdir() if e.is_dir() and not is_hidden(e.name)}
    if "train" not in names or not set(names) <= {"train", *_VAL_NAMES}:
        return None
    val = next((names[v] for v in _VAL_NAMES if v in names), None)
    train = folder / names["train"]
    if val is None or not any(e.is_dir() and not is_hidden(e.name) for e in train.iterdir()):
        return None
    return names["train"], val


def _from_folder(
    folder: Path, source: str, layout: str, val_fraction: float, seed: int,
    max_per_class: int | None, progress: Progress | None, shown: str | None = None,
) -> DataBundle:
    scan = _scan(folder, max_per_class, progress)
    _require_classes(scan, shown or str(folder))
    train, val, notes = _split(scan.samples, scan.classes, val_fraction, seed)
    return _bundle(source, layout, scan.classes, train, val, scan.skipped, scan.sizes, notes)


def _from_split_folders(
    folder: Path, source: str, layout: str, train_name: str, val_name: str,
    max_per_class: int | None, progress: Progress | None, shown: str | None = None,
) -> DataBundle:
    train_scan = _scan(folder / train_name, max_per_class, progress)
    _require_classes(train_scan, f"{shown}: its {train_name}/ folder" if shown else str(folder / train_name))
    val_scan = _scan(folder / val_name, max_per_class, progress, class_names=train_scan.classes)
    skipped = train_scan.skipped + val_scan.skipped
    for entry in sorted(folder.iterdir()):
        if entry.name not in (train_name, val_name):
            if is_hidden(entry.name):
                reason = "hidden folder" if entry.is_dir() else "hidden file"
            elif entry.is_dir():
                reason = f"split folder not used ({val_name}/ is the validation split)"
            else:
                reason = "not inside a class folder"
            skipped.append((str(entry), reason))
    notes = [f"Validation images come from {val_name}/ as given."]
    have_val = {s.label for s in val_scan.samples}
    lacking = [name for i, name in enumerate(train_scan.classes) if i not in have_val]
    if lacking:
        listed = ", ".join(lacking[:10]) + (f" and {len(lacking) - 10} more" if len(lacking) > 10 else "")
        notes.append(f"No validation images for {len(lacking)} of {len(train_scan.classes)} classes: {listed}.")
    return _bundle(source, layout, train_scan.classes, train_scan.samples, val_scan.samples,
                   sorted(skipped), train_scan.sizes + val_scan.sizes, notes)


def _require_classes(scan: _Scan, folder: str) -> None:
    """At least two classes; ``folder`` names the folder (or the archive) for people."""
    if len(scan.classes) >= 2:
        return
    found = f"only {scan.classes[0]!r}" if scan.classes else "none"
    loose = (f" {scan.stray_images} image(s) lie directly in the folder; move them into class "
             "sub-folders.") if scan.stray_images else ""
    bad = f" {len(scan.skipped)} files or folders were skipped (see their reasons)." if scan.skipped else ""
    raise DataError(
        f"{folder} has fewer than two class folders with usable images ({found}).{loose}{bad} "
        f"Expected {_LAYOUT_HINT}; or train/ and val/ folders laid out that way."
    )


def _split(
    samples: list[Sample], classes: list[str], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], list[str]]:
    """Stratified seeded split: each class gives round(f * n) images, at least 1, never all."""
    from sklearn.model_selection import train_test_split

    rng = np.random.RandomState(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    single: list[str] = []
    for label, name in enumerate(classes):
        members = [s for s in samples if s.label == label]
        n_val = 0
        if val_fraction > 0 and len(members) >= 2:
            n_val = min(max(math.floor(val_fraction * len(members) + 0.5), 1), len(members) - 1)
        elif val_fraction > 0 and members:
            single.append(name)
        if n_val == 0:
            train.extend(members)
            continue
        tr, va = train_test_split(members, test_size=n_val, random_state=rng, shuffle=True)
        train.extend(sorted(tr, key=lambda s: s.path))
        val.extend(sorted(va, key=lambda s: s.path))
    notes = ([f"Stratified split: {val_fraction:.0%} of each class for validation, seed {seed}."]
             if val_fraction > 0 else ["No validation split (val_fraction=0)."])
    if single:
        notes.append(f"Only one image, so training only (no validation image): {', '.join(single)}.")
    return train, val, notes


def _bundle(
    source: str, layout: str, classes: list[str], train: list[Sample], val: list[Sample],
    skipped: list[tuple[str, str]], sizes: list[tuple[int, int]], notes: list[str],
) -> DataBundle:
    n = len(classes)
    tr = np.bincount(np.asarray([s.label for s in train], dtype=np.int64), minlength=n)[:n]
    va = np.bincount(np.asarray([s.label for s in val], dtype=np.int64), minlength=n)[:n]
    counts = pd.DataFrame({"train": tr, "val": va, "total": tr + va},
                          index=pd.Index(classes, name="class")).astype("int64")
    wh = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    stats = [wh.min(0), np.rint(np.median(wh, 0)), wh.max(0)] if len(wh) else []
    image_sizes = pd.DataFrame(stats, index=["min", "median", "max"][: len(stats)],
                               columns=["width", "height"]).astype("int64")
    skipped_df = pd.DataFrame(skipped, columns=["path", "reason"])
    report = ScanReport(str(source), layout, list(classes), counts, image_sizes, skipped_df, notes)
    return DataBundle(list(classes), train, val, report)


# ---------------------------------------------------------------------------- held-out data
def holdout_samples(folder: str | os.PathLike[str], classes: Sequence[str]) -> list[Sample]:
    """Samples of a held-out folder (or archive), labelled with the training classes' indices.

    Its class folders must be among ``classes``; classes it lacks are allowed.

    Raises:
        DataError: listing class folders unknown to training (and those missing), or when
            the folder holds no usable image.
    """
    path = shown = Path(folder).expanduser()
    if path.is_file() and sources.is_archive(path):
        path = sources.extract_archive(path)
    else:
        _refuse_special(path)
    scan = _scan(path)
    unknown = sorted(set(scan.classes) - set(classes))
    missing = [c for c in classes if c not in scan.classes]
    if unknown:
        lacking = f" It also lacks: {', '.join(missing)}." if missing else ""
        raise DataError(
            f"{shown} has class folders the model was not trained on: {', '.join(unknown)}. "
            f"Training classes: {', '.join(classes)}.{lacking} Rename or remove those folders."
        )
    if not scan.samples:
        raise DataError(f"{shown} holds no usable images; expected {_LAYOUT_HINT}.")
    index = {name: i for i, name in enumerate(classes)}
    return [Sample(s.path, index[scan.classes[s.label]]) for s in scan.samples]
