"""Shared fixtures: tiny generated images, and the real flower photos when present."""

from __future__ import annotations

import os
import sys

# Idle OpenMP threads sleep instead of spinning: with two cores, spinning workers of one
# process (a notebook kernel, a training thread) starve the other and slow tests many-fold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TLWIDGETS_SHARED", ROOT.parent / "shared"))
FLOWERS = SHARED / "datasets" / "flowers-dev"

# Distinct base colours, so a tiny model can separate the classes in a few steps.
_COLOURS = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 200, 30), (160, 40, 200), (30, 200, 200)]


def make_image_folder(
    root: Path, classes: int = 3, per_class: int = 8, size: int = 32, seed: int = 0
) -> Path:
    """Write an ImageFolder of noisy solid-colour JPEGs: ``root/class_k/img_i.jpg``."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.array(_COLOURS[c % len(_COLOURS)], dtype=np.float32)
        for i in range(per_class):
            noise = rng.normal(0, 25, (size, size, 3))
            arr = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"img_{i}.jpg", quality=90)
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of eight 32x32 generated images."""
    return make_image_folder(tmp_path / "images")


@pytest.fixture
def tiny_size() -> int:
    """Input size used with real architectures in fast tests."""
    return 64


@pytest.fixture
def flowers_dir() -> Path:
    """The 300 real flower photos; skips when ../shared is absent (a fresh clone)."""
    if not FLOWERS.is_dir():
        pytest.skip(f"real photos not found at {FLOWERS}")
    return FLOWERS


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep speed caches and extracted data of one test run away from the user's cache."""
    cache = tmp_path_factory.getbasetemp() / "tlwidgets-cache"
    monkeypatch.setenv("TLWIDGETS_CACHE_DIR", str(cache))


@pytest.fixture(autouse=True)
def _isolated_registries() -> Iterator[None]:
    """Models a test registers (checkpoints, ``hf:`` repositories) are forgotten after it."""
    places = (("tlwidgets.core.catalog", "_CHECKPOINTS"), ("tlwidgets.core.hub_weights", "_HUB_SPECS"),
              ("tlwidgets.core.hub_weights", "_HUB_ARGS"))

    def registries() -> list[dict]:
        found = (getattr(sys.modules.get(module), name, None) for module, name in places)
        return [r for r in found if isinstance(r, dict)]

    before = [(r, dict(r)) for r in registries()]
    yield
    kept = {id(r) for r, _ in before}
    for registry, saved in before:
        registry.clear()
        registry.update(saved)
    for registry in registries():  # modules first imported by this test start empty
        if id(registry) not in kept:
            registry.clear()
