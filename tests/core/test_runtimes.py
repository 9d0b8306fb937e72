"""The runtime of the frozen layers: eager PyTorch, torch.compile or ONNX Runtime, chosen by measurement."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.helpers import ready_session
from tlwidgets import Session
from tlwidgets.core import features, ort_function, runtimes
from tlwidgets.core.catalog import build_model
from tlwidgets.core.data import load_image
from tlwidgets.core.errors import ConfigError
from tlwidgets.core.heads import find_head
from tlwidgets.core.speed import measure_speed
from tlwidgets.core.splits import Split, find_split

needs_ort = pytest.mark.skipif(not runtimes.onnxruntime_available(), reason="onnxruntime is not installed")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remembered choices and exported files of this test alone; the runtime not forced."""
    monkeypatch.setenv("TLWIDGETS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(runtimes.ENV, raising=False)


def _frozen_split(model: nn.Module, probe: torch.Tensor) -> Split:
    model.eval()
    head = find_head(model)[0]
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(head + ".")
    split = find_split(model, head, probe)
    assert isinstance(split, Split)
    split.prefix_eval()
    return split


def _select(split: Split, x: torch.Tensor, amp: torch.dtype | None, **kw) -> runtimes.Runner:
    def eager(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=amp) if amp is not None else contextlib.nullcontext():
            return split.prefix(batch)

    return runtimes.select(split.prefix, eager, torch.device("cpu"), amp, data=x, where=split.where, **kw)


def _assert_matches(runner: runtimes.Runner, split: Split, x: torch.Tensor, amp: torch.dtype | None) -> None:
    """Features within the stated tolerance of PyTorch's fp32 ones (bf16: relative norm)."""
    with torch.no_grad():
        got, want = runner(x), split.prefix(x).float()
    if amp is not None:  # ONNX Runtime computes in fp32; its features are kept in PyTorch's bf16
        assert got.dtype == torch.bfloat16
        assert float((got.float() - want).norm() / want.norm()) <= runtimes.BF16_TOLERANCE
        got = runner.fn.fp32(x)
    assert float((got - want).abs().max()) <= runtimes.FP32_TOLERANCE * float(want.abs().max())


# ---------------------------------------------------------------------------- features match
@needs_ort
@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_onnx_runtime_features_match_pytorch_on_generated_images(amp: torch.dtype | None) -> None:
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=False)
    x = torch.rand(12, 3, 64, 64) * 4 - 2
    split = _frozen_split(model, x[:1])
    runner = _select(split, x, amp, force="onnxruntime")
    assert runner.choice.name == "onnxruntime" and runner.choice.source == "forced", runner.choice
    _assert_matches(runner, split, x, amp)
    _assert_matches(runner, split, x[:5], amp)  # a last, smaller batch (padded inside)
    _assert_matches(runner, split, torch.cat([x, x]), amp)  # larger than the batch it was built for


@needs_ort
@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_onnx_runtime_features_match_pytorch_on_real_photos(flowers_dir: Path, name: str) -> None:
    s = Session(device="cpu", image_size=128)
    s.load_model(name, pretrained=name == "efficientnet_lite0")  # Lite0's weights ship with the package
    s.load_data(flowers_dir, val_fraction=0.2, seed=0)
    x = torch.stack([s.data.eval_tf(load_image(item.path)) for item in s.data.train[:16]])
    split = _frozen_split(s.model, x[:1])
    runner = _select(split, x, None, force="onnxruntime")
    assert runner.choice.name == "onnxruntime", runner.choice
    _assert_matches(runner, split, x, None)


# ---------------------------------------------------------------------------- falling back
def _tiny_split() -> tuple[Split, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    x = torch.randn(8, 3, 16, 16)
    return _frozen_split(model, x[:1]), x


@pytest.mark.parametrize("mode", ["auto", "onnxruntime"])
def test_a_failing_export_falls_back_to_eager_with_the_reason(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    def refuse(*_args, **_kw) -> None:
        raise RuntimeError("no exporter today")

    monkeypatch.setattr(ort_function, "export_graph", refuse)
    split, x = _tiny_split()
    runner = _select(split, x, None, force=mode)
    assert runner.choice.name == "torch"
    assert "export failed" in runner.choice.rejected["onnxruntime"]
    assert "no exporter today" in runner.choice.rejected["onnxruntime"]
    assert torch.equal(runner(x), split.prefix(x))


class _Histogram(nn.Module):
    """A conv and ``torch.histc``, which neither ONNX exporter handles."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.histc(y, bins=4).expand(y.shape[0], 4) + y.mean((2, 3))


@needs_ort
def test_an_operator_onnx_cannot_export_falls_back_to_eager() -> None:
    module = _Histogram().eval()
    x = torch.randn(4, 3, 16, 16)
    runner = runtimes.select(module, module, torch.device("cpu"), None, data=x, force="onnxruntime")
    assert runner.choice.name == "torch"
    reason = runner.choice.rejected["onnxruntime"]
    assert "export failed" in reason and "torchscript" in reason and "dynamo" in reason


def test_missing_onnxruntime_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "onnxruntime_available", lambda: False)
    split, x = _tiny_split()
    runner = _select(split, x, None, force="onnxruntime")
    assert runner.choice.name == "torch" and "pip install onnxruntime" in runner.choice.rejected["onnxruntime"]


@needs_ort
def test_features_that_do_not_match_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = runtimes.OnnxFunction.fp32
    monkeypatch.setattr(runtimes.OnnxFunction, "fp32", lambda self, x: real(self, x) * 1.01)
    split, x = _tiny_split()
    runner = _select(split, x, None, force="onnxruntime")
    assert runner.choice.name == "torch"
    assert "features differ from PyTorch's" in runner.choice.rejected["onnxruntime"]


@needs_ort
def test_an_error_at_run_time_switches_to_eager_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    split, x = _tiny_split()
    runner = _select(split, x, None, force="onnxruntime")
    assert runner.choice.name == "onnxruntime"

    def broken(self: runtimes.OnnxFunction, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("session lost")

    monkeypatch.setattr(runtimes.OnnxFunction, "fp32", broken)
    with pytest.warns(RuntimeWarning, match="session lost"):
        out = runner(x)
    assert torch.equal(out, split.prefix(x)) and runner.choice.name == "torch"
    assert "session lost" in runner.choice.rejected["onnxruntime"]


def test_gpus_keep_pytorch_without_timing() -> None:
    def no_data() -> torch.Tensor:
        raise AssertionError("a GPU must not time runtimes")

    runner = runtimes.select(nn.Identity(), nn.Identity(), torch.device("cuda"), torch.bfloat16, data=no_data)
    assert runner.choice.name == "torch" and not runner.choice.images_per_s
    assert "cuda" in runner.choice.rejected["onnxruntime"]


# ---------------------------------------------------------------------------- choosing and remembering
@pytest.mark.parametrize(("onnx_speed", "expected"), [(105.0, "torch"), (200.0, "onnxruntime")])
def test_onnx_runtime_is_chosen_only_when_clearly_faster(monkeypatch: pytest.MonkeyPatch, onnx_speed: float,
                                                         expected: str) -> None:
    """On a bf16 CPU eager bf16 is usually faster than fp32 ONNX Runtime: then eager stays."""
    if not runtimes.onnxruntime_available():
        pytest.skip("onnxruntime is not installed")
    monkeypatch.setattr(runtimes, "_time", lambda cands, x: ({"torch": 100.0, "onnxruntime": onnx_speed}, {}))
    monkeypatch.setattr(runtimes, "CLEAR", math.inf)  # never clear from the first runs: timed side by side
    split, x = _tiny_split()
    runner = _select(split, x, None)
    assert runner.choice.name == expected and runner.choice.source == "measured"
    loser = "onnxruntime" if expected == "torch" else "torch"
    assert runner.choice.rejected[loser].startswith("slower")
    assert (runner.computed is not None) == (expected == "onnxruntime")


@needs_ort
@pytest.mark.parametrize("clear", [1.0, math.inf])
def test_a_clear_first_run_decides_without_timing_side_by_side(monkeypatch: pytest.MonkeyPatch,
                                                                clear: float) -> None:
    """fp32: eager timed on the check images, ONNX Runtime on its first run; a clear ratio decides."""
    timed = []
    real = runtimes._time
    monkeypatch.setattr(runtimes, "_time", lambda cands, x: timed.append(sorted(cands)) or real(cands, x))
    monkeypatch.setattr(runtimes, "CLEAR", clear)
    split, x = _tiny_split()
    runner = _select(split, x, None)
    speeds = runner.choice.images_per_s
    assert set(speeds) == {"torch", "onnxruntime"} and runner.choice.source == "measured"
    assert runner.choice.name == max(speeds, key=speeds.get) or speeds[runner.choice.name] * runtimes.MARGIN > max(
        speeds.values())
    assert timed == ([] if clear == 1.0 else [["onnxruntime", "torch"]])
    if runner.choice.name == "onnxruntime":  # what it computed on the checked batch is kept, and right
        assert runner.computed is not None and runner.computed.shape[0] == len(x)
        assert runtimes._mismatch(runner.computed, split.prefix(x), bf16=False) is None
    else:
        assert runner.computed is None


@needs_ort
def test_the_choice_is_remembered_on_disk_and_reused_without_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = runtimes._time
    monkeypatch.setattr(runtimes, "_time", lambda cands, x: calls.append(sorted(cands)) or real(cands, x))
    monkeypatch.setattr(runtimes, "CLEAR", math.inf)  # timed side by side
    split, x = _tiny_split()
    rng = torch.get_rng_state()
    first = _select(split, x, None)
    assert torch.equal(rng, torch.get_rng_state()), "choosing must leave a seeded fit's random numbers alone"
    assert calls == [["onnxruntime", "torch"]] and first.choice.source == "measured"
    assert set(first.choice.images_per_s) == {"onnxruntime", "torch"}
    stored = json.loads((Path(os.environ["TLWIDGETS_CACHE_DIR"]) / "runtimes.json").read_text())
    assert [v["name"] for v in stored.values()] == [first.choice.name]
    second = _select(split, x, None)
    assert len(calls) == 1, "the second choice must not time again"
    assert second.choice.source == "cached" and second.choice.name == first.choice.name
    assert second.choice.images_per_s == pytest.approx(first.choice.images_per_s)


def test_short_runs_are_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "_time", lambda *a: pytest.fail("timed a short run"))
    split, x = _tiny_split()
    runner = _select(split, x, None, images=100, probe=x[:1])
    assert runner.choice.name == "torch" and "not timed" in runner.choice.rejected["onnxruntime"]
    assert not runner.choice.worth_saying  # the progress line stays as before


@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_a_run_that_looked_long_from_one_image_is_judged_again_on_the_check_images(
        monkeypatch: pytest.MonkeyPatch, amp: torch.dtype | None) -> None:
    """A batch of one runs slower per image: the warm check images decide before any export."""
    monkeypatch.setattr(runtimes._device, "cpu_has_amx", lambda: False)
    monkeypatch.setattr(runtimes, "_seconds_per_image", lambda eager, probe: 3600.0)
    monkeypatch.setattr(runtimes, "_onnx_runtime", lambda *a: pytest.fail("exported a short run"))
    split, x = _tiny_split()
    images = 50  # a tiny network: far under a second of work when run in batches
    runner = _select(split, x, amp, images=images, probe=x[:1])
    why = runner.choice.rejected["onnxruntime"]
    assert runner.choice.name == "torch" and why.startswith("not timed: about 0.")
    limit = runtimes.MIN_SECONDS if amp is None else runtimes.MIN_SECONDS_BF16
    assert float(why.split("about ")[1].split(" s")[0]) < limit


@pytest.mark.parametrize(("amx", "bf16", "expected"), [(True, True, "MIN_SECONDS_AMX"),
                                                       (False, True, "MIN_SECONDS_BF16"),
                                                       (False, False, "MIN_SECONDS")])
def test_the_work_that_pays_for_choosing_depends_on_the_cpu(monkeypatch: pytest.MonkeyPatch, amx: bool,
                                                           bf16: bool, expected: str) -> None:
    monkeypatch.setattr(runtimes._device, "cpu_has_amx", lambda: amx)
    assert runtimes.min_seconds(torch.bfloat16 if bf16 else None) == getattr(runtimes, expected)
    assert runtimes.MIN_SECONDS <= runtimes.MIN_SECONDS_BF16 < runtimes.MIN_SECONDS_AMX


@needs_ort
@pytest.mark.parametrize("forced", ["torch", "onnxruntime", "compile"])
def test_the_environment_variable_forces_each_runtime(monkeypatch: pytest.MonkeyPatch, forced: str) -> None:
    compiled = []

    def fake_compile(fn, **_kw):  # compiling takes a minute: record that it was asked for
        compiled.append(fn)
        return fn

    monkeypatch.setattr(features.torch, "compile", fake_compile)
    monkeypatch.setattr(runtimes, "_time", lambda *a: pytest.fail("a forced runtime must not be timed"))
    monkeypatch.setenv(runtimes.ENV, forced)
    split, x = _tiny_split()
    fn, is_compiled = features.prefix_function(split, torch.device("cpu"), None, "off", 8, 10**6, data=x, probe=x[:1])
    assert fn.choice.name == forced and fn.choice.source == "forced"
    assert is_compiled is (forced == "compile") and bool(compiled) is (forced == "compile")
    with torch.no_grad():
        assert float((fn(x) - split.prefix(x)).abs().max()) <= 1e-4


def test_an_unknown_value_of_the_variable_warns_and_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runtimes.ENV, "openvino")
    with pytest.warns(RuntimeWarning, match="openvino"):
        assert runtimes.requested() == "auto"


# ---------------------------------------------------------------------------- through a fit
def _fit(folder: Path, runtime: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Session, list[dict]]:
    monkeypatch.setenv(runtimes.ENV, runtime)
    s = ready_session(folder, "resnet18", image_size=64, torch_seed=0)
    history = s.fit(epochs=3, seed=0)
    return s, history.epochs


@needs_ort
@pytest.mark.parametrize("bf16", ["0", "1"], ids=["cpu-without-bf16", "cpu-with-bf16"])
def test_a_fit_names_its_runtime_and_trains_like_pytorch(image_folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                         bf16: str) -> None:
    monkeypatch.setenv("TLWIDGETS_CPU_BF16", bf16)
    s_torch, torch_epochs = _fit(image_folder, "torch", monkeypatch)
    assert "Batches: cached features (head input)." in s_torch.message
    s_ort, ort_epochs = _fit(image_folder, "onnxruntime", monkeypatch)
    assert "Batches: cached features (head input; frozen layers: ONNX Runtime)." in s_ort.message
    # The first training batch ran through ONNX Runtime while it was checked: kept, not run again.
    first = min(s_ort.config.batch_size, len(s_ort.data.train))
    assert s_ort.feature_cache.stats["images_extracted"] == s_torch.feature_cache.stats["images_extracted"]
    assert s_ort.feature_cache.stats["images_reused"] == s_torch.feature_cache.stats["images_reused"] + first
    tol = 1e-3 if bf16 == "0" else 1e-2  # fp32 features agree to 1e-6; bf16 eager ones differ from fp32 by ~1%
    for a, b in zip(torch_epochs, ort_epochs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=tol) and a["val_loss"] == pytest.approx(b["val_loss"], rel=tol)
        assert abs(a["val_acc"] - b["val_acc"]) <= 0.2  # at most one of the six validation images


@needs_ort
def test_an_automatic_fit_times_once_and_says_what_it_chose(image_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "MIN_SECONDS", 0.0)  # time even this small fit
    monkeypatch.setattr(runtimes, "MIN_SECONDS_AMX", 0.0)
    monkeypatch.setattr(runtimes, "MIN_SECONDS_BF16", 0.0)
    calls = []
    real = runtimes._time
    monkeypatch.setattr(runtimes, "_time", lambda cands, x: calls.append(1) or real(cands, x))
    s, _ = _fit(image_folder, "auto", monkeypatch)
    choice = s.feature_cache._entry.runtime
    assert choice.source == "measured" and set(choice.images_per_s) == {"torch", "onnxruntime"}
    assert f"frozen layers: {choice.label})" in s.message and "img/s" in choice.label
    timed = len(calls)  # 0 when the first runs were clear, else 1
    s.feature_cache.clear()  # a new cache: the choice comes from runtimes.json
    s.fit(epochs=1, seed=0)
    assert len(calls) == timed and s.feature_cache._entry.runtime.source == "cached"


# ---------------------------------------------------------------------------- measure_speed
def test_measure_speed_reports_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    torch_result = measure_speed("squeezenet1_1", "cpu", batch_size=2, repeats=1, runtime="torch")
    assert torch_result["runtime"] == "torch"
    auto = measure_speed("squeezenet1_1", "cpu", batch_size=2, repeats=1)
    expected = {"torch", "onnxruntime"} if runtimes.onnxruntime_available() else {"torch"}
    assert auto["runtime"] in expected and auto["ms_per_image"] > 0
    with pytest.raises(ConfigError, match="runtime"):
        measure_speed("squeezenet1_1", "cpu", runtime="openvino")


def test_small_fits_on_an_amx_cpu_keep_pytorch_bf16_untimed(image_folder: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "MIN_SECONDS", 0.0)  # the fp32 path would time this fit
    monkeypatch.setattr(runtimes, "_time", lambda *a: pytest.fail("timed a small bf16 fit"))
    monkeypatch.setenv("TLWIDGETS_CPU_BF16", "1")
    monkeypatch.setattr(runtimes._device, "cpu_has_amx", lambda: True)
    s, _ = _fit(image_folder, "auto", monkeypatch)
    choice = s.feature_cache._entry.runtime
    assert choice.name == "torch" and "not timed" in choice.rejected["onnxruntime"]


@needs_ort
@pytest.mark.parametrize("clear", [1.0, math.inf])
def test_bf16_without_amx_is_chosen_like_fp32_from_warm_eager_bf16(image_folder: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   clear: float) -> None:
    """AVX512-BF16 without AMX: the fp32 threshold, eager bf16 timed warm on the check images."""
    monkeypatch.setenv("TLWIDGETS_CPU_BF16", "1")
    monkeypatch.setattr(runtimes._device, "cpu_has_amx", lambda: False)
    monkeypatch.setattr(runtimes, "MIN_SECONDS_BF16", 0.0)  # time even this small fit
    monkeypatch.setattr(runtimes, "CLEAR", clear)
    timed = []
    real = runtimes._time
    monkeypatch.setattr(runtimes, "_time", lambda cands, x: timed.append(sorted(cands)) or real(cands, x))
    s, _ = _fit(image_folder, "auto", monkeypatch)
    choice = s.feature_cache._entry.runtime
    assert choice.source == "measured" and set(choice.images_per_s) == {"torch", "onnxruntime"}
    assert timed == ([] if clear == 1.0 else [["onnxruntime", "torch"]])
    assert s.history.epochs and all(math.isfinite(e["loss"]) for e in s.history.epochs)
