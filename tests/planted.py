"""Folders of drawn pictures with planted label errors and duplicates, and a session trained on one.

Each class is a colour: every picture holds three to five ellipses and rectangles of its
class's colour at random places on a light, noisy background tinted with it, so pictures of one class
differ from each other while a pretrained network tells the classes apart at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tlwidgets import Session

COLOURS = [(220, 40, 40), (40, 180, 40), (40, 60, 220)]
CLASSES = [f"class_{i}" for i in range(len(COLOURS))]


def drawn(label: int, seed: int, size: int = 64) -> Image.Image:
    """A picture of class ``label``: shapes of its colour on a light noisy background."""
    rng = np.random.default_rng(seed)
    tint = 0.7 * int(rng.integers(170, 256)) + 0.3 * np.array(COLOURS[label], dtype=np.float64)
    pixels = np.clip(tint + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 6))):
        x0, y0 = (int(v) for v in rng.integers(-size // 4, size - size // 4, 2))
        w, h = (int(v) for v in rng.integers(size // 4, size * 2 // 3, 2))
        colour = tuple(int(v) for v in np.clip(np.array(COLOURS[label]) + rng.normal(0, 20, 3), 0, 255))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=colour)
    return image


@dataclass
class Planted:
    """A generated folder and what was planted in it (paths relative to ``root``).

    Attributes:
        mislabelled: path -> the class its picture really shows.
        duplicates: pairs of paths holding the same bytes.
    """

    root: Path
    mislabelled: dict[str, str] = field(default_factory=dict)
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    def path(self, rel: str) -> str:
        return str(self.root / rel)


def planted_folder(root: Path, per_class: int = 20, split_folders: bool = False, val_per_class: int = 6) -> Planted:
    """Write ``root/class_k/img_i.png`` (or ``root/train|val/class_k/...``) with planted problems.

    Planted: three pictures of another class (``wrong_*.png``), the same picture in two
    classes (``copy_of_class_1.png`` in class_2), and, with ``split_folders``, the same
    picture in training and validation (``val/class_0/copy_of_train.png``).
    """
    top = root / "train" if split_folders else root
    for label, name in enumerate(CLASSES):
        (top / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            drawn(label, 1000 * label + i).save(top / name / f"img_{i}.png")
        if split_folders:
            (root / "val" / name).mkdir(parents=True, exist_ok=True)
            for i in range(val_per_class):
                drawn(label, 1000 * label + 500 + i).save(root / "val" / name / f"img_{i}.png")
    prefix = "train/" if split_folders else ""
    planted = Planted(root)
    for k, (shows, put) in enumerate([(0, 1), (1, 2), (2, 0)]):
        rel = f"{prefix}{CLASSES[put]}/wrong_{k}.png"
        drawn(shows, 9000 + k).save(root / rel)
        planted.mislabelled[rel] = CLASSES[shows]
    original, copy = f"{prefix}class_1/img_3.png", f"{prefix}class_2/copy_of_class_1.png"
    shutil.copyfile(root / original, root / copy)
    planted.mislabelled[copy] = "class_1"
    planted.duplicates.append((original, copy))
    if split_folders:
        original, copy = "train/class_0/img_5.png", "val/class_0/copy_of_train.png"
        shutil.copyfile(root / original, root / copy)
        planted.duplicates.append((original, copy))
    return planted


def trained_session(root: Path) -> Session:
    """EfficientNet-Lite0 (ImageNet weights, offline) at 64 pixels, frozen, with a default ``fit()`` on ``root``."""
    s = Session(device="cpu", image_size=64)
    s.load_model("efficientnet_lite0")
    s.load_data(root, val_fraction=0.25, seed=0)
    s.replace_head()
    s.freeze_backbone()
    s.fit()
    return s


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``, hidden ones included: relative path -> SHA-256 of a file's bytes,
    ``"<dir>"`` for a folder, ``"-> target"`` for a link."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = f"-> {os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "<dir>"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def contents(root: Path) -> Counter:
    """How many files hold each content (SHA-256) under ``root``."""
    return Counter(v for v in tree(root).values() if v != "<dir>" and not v.startswith("->"))
