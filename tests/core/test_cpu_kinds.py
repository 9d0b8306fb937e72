"""The suite must hold on CPUs with native bf16 (AMX, AVX512-BF16) and on those without
(AVX2 laptops). ``TLWIDGETS_CPU_BF16`` forces either path, so this machine checks both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tlwidgets.core.device import autocast_dtype, cpu_has_amx, cpu_has_bf16, describe

ROOT = Path(__file__).resolve().parents[2]
# Tests whose expectation depends on the automatic precision.
PRECISION_SENSITIVE = [
    "tests/core/test_features.py::test_session_reuses_features_until_something_changes",
    "tests/core/test_features.py::test_new_model_or_data_frees_the_features_at_once",
    "tests/core/test_recipes.py::test_lr_find_on_a_diverging_sweep_stops_early",
    "tests/core/test_auto_recipe.py::test_the_feature_cache_survives_a_new_head_and_is_rebuilt_when_the_prefix_changes",
]


@pytest.mark.parametrize("forced", ["0", "1"])
def test_the_override_decides_the_automatic_cpu_precision(monkeypatch: pytest.MonkeyPatch, forced: str) -> None:
    monkeypatch.setenv("TLWIDGETS_CPU_BF16", forced)
    assert cpu_has_bf16() is (forced == "1")
    assert autocast_dtype("cpu") == (torch.bfloat16 if forced == "1" else None)
    assert ("bf16" in describe("cpu")) is (forced == "1")
    assert autocast_dtype("cpu", "fp32") is None and autocast_dtype("cpu", "bf16") == torch.bfloat16


def test_amx_is_read_from_the_cpu_flags_and_off_with_the_bf16_path(monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.is_file() else ""
    monkeypatch.delenv("TLWIDGETS_CPU_BF16", raising=False)
    assert cpu_has_amx() is ("amx_bf16" in flags)
    assert not cpu_has_amx() or cpu_has_bf16()  # AMX implies bf16
    monkeypatch.setenv("TLWIDGETS_CPU_BF16", "0")
    assert cpu_has_amx() is False


@pytest.mark.slow
@pytest.mark.parametrize("forced", ["0", "1"], ids=["cpu-without-bf16", "cpu-with-bf16"])
def test_precision_sensitive_tests_hold_on_both_kinds_of_cpu(forced: str) -> None:
    env = dict(os.environ, TLWIDGETS_CPU_BF16=forced)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PRECISION_SENSITIVE],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"{len(PRECISION_SENSITIVE) + 1} passed" in proc.stdout  # the recipe test runs twice
