"""Inference timing and its JSON cache."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from tlwidgets.core import device as _device
from tlwidgets.core.catalog import list_models
from tlwidgets.core.speed import cached_speed, measure_speed


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A speed cache of this test alone, so earlier measurements cannot leak in."""
    monkeypatch.setenv("TLWIDGETS_CACHE_DIR", str(tmp_path / "cache"))


def test_measure_speed_caches_and_shows_in_the_table() -> None:
    assert cached_speed("squeezenet1_1", "cpu") is None

    result = measure_speed("mobilenet_v3_small", "cpu", batch_size=2, repeats=2, precision="fp32")
    assert set(result) == {"name", "device", "batch_size", "ms_per_image", "peak_mem_mb", "precision", "runtime"}
    assert result["runtime"] in ("torch", "onnxruntime")
    assert result["name"] == "mobilenet_v3_small"
    assert result["device"] == _device.describe("cpu")
    assert result["batch_size"] == 2 and result["precision"] == "fp32"
    assert result["peak_mem_mb"] is None
    assert result["ms_per_image"] > 0

    cache = Path(os.environ["TLWIDGETS_CACHE_DIR"]) / "speed.json"
    entries = json.loads(cache.read_text())
    key = f"{result['device']}|mobilenet_v3_small|2"
    assert entries[key]["ms_per_image"] == result["ms_per_image"]

    assert cached_speed("mobilenet_v3_small", "cpu") == result["ms_per_image"]
    if _device.best_device().type == "cpu":
        row = list_models().set_index("name").loc["mobilenet_v3_small"]
        assert row["ms_per_image"] == pytest.approx(result["ms_per_image"])
    assert math.isnan(list_models().set_index("name").loc["squeezenet1_1", "ms_per_image"])


def test_auto_precision_is_reported() -> None:
    result = measure_speed("squeezenet1_1", "cpu", batch_size=1, repeats=1)
    expected = "bf16" if _device.autocast_dtype("cpu") is not None else "fp32"
    assert result["precision"] == expected
    assert cached_speed("squeezenet1_1", "cpu") == result["ms_per_image"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        measure_speed("mobilenet_v3_small", "cpu", batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        measure_speed("mobilenet_v3_small", "cpu", precision="fp8")
