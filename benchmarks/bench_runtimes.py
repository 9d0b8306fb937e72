"""Frozen feature pass per runtime: eager PyTorch (fp32, bf16), torch.compile, ONNX Runtime.

Run: ``python benchmarks/bench_runtimes.py`` (``--compile`` adds torch.compile, which takes
15-60 s per model). ``TLWIDGETS_CPU_BF16=0`` makes a CPU with bf16 take the fp32 path of
CPUs without it (the instruction set stays what it is, so ONNX Runtime's speed is not an
AVX2 laptop's, but the choice runs as it would there). Set ``OMP_WAIT_POLICY=PASSIVE``
when other processes share the cores.

Prints the CPU and its flags, the measured fp32 peak (and the bf16 peak where the CPU
has bf16: big matmuls and a big convolution, best of three rounds, measured again before
each model), then for EfficientNet-Lite0,
MobileNetV2, ResNet-18 and ResNet-50 (random weights: the speed does not depend on them)
the frozen feature pass (everything up to the head's input, batch 32, 224x224,
channels-last input as the trainer feeds it) in images/s per runtime, best of the timed
batches after a warm-up, with its share of the peak of its precision (FLOPs per image from
``torch.utils.flop_counter.FlopCounterMode``, 2 per multiply-add), and the runtime
:func:`tlwidgets.core.runtimes.select` chooses (timed afresh in a temporary cache folder).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("efficientnet_lite0", "mobilenet_v2", "resnet18", "resnet50")
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_info() -> tuple[str, set[str]]:
    name, flags = "unknown CPU", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return name, flags


def measured_peak(dtype, rounds: int = 3, seconds: float = 0.2) -> tuple[float, str]:
    """Best FLOP/s (2 per multiply-add) of big square matmuls of ``dtype`` and of a big
    channels-last 3x3 convolution (oneDNN runs it faster than a matmul on some CPUs), best
    of ``rounds``: other processes on the cores only ever slow a round down."""
    import torch
    import torch.nn.functional as F

    def mm(n: int):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        return (lambda: a @ b), 2 * n**3

    def conv():
        x = torch.randn(32, 256, 28, 28, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(256, 256, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
        return (lambda: F.conv2d(x, w, padding=1)), 2 * 32 * 256 * 28 * 28 * 256 * 9

    kernels = {"4096x4096 matmul": mm(4096), "2048x2048 matmul": mm(2048), "3x3 conv 256->256 @28x28 x32": conv()}
    best, label = 0.0, ""
    with torch.no_grad():
        for _ in range(rounds):
            for name, (fn, flops) in kernels.items():
                fn()
                t, k = time.perf_counter(), 0
                while k == 0 or time.perf_counter() - t < seconds:
                    fn()
                    k += 1
                rate = k * flops / (time.perf_counter() - t)
                if rate > best:
                    best, label = rate, name
    return best, label


def _rate(fn, x, batches: int) -> float:
    """Images/s of ``fn`` on ``x``: best of ``batches`` timed calls after one warm-up."""
    import torch

    with torch.no_grad():
        fn(x)
        best = float("inf")
        for _ in range(batches):
            t = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t)
    return len(x) / best


def bench_model(name: str, batch: int, batches: int, with_compile: bool) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tlwidgets.core import features, runtimes
    from tlwidgets.core.catalog import build_model
    from tlwidgets.core.device import autocast_dtype
    from tlwidgets.core.heads import find_head
    from tlwidgets.core.splits import find_split

    torch.manual_seed(0)
    model = build_model(name, pretrained=False).eval()
    head = find_head(model)[0]
    for p_name, p in model.named_parameters():
        p.requires_grad = p_name.startswith(head + ".")
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    split = find_split(model, head, x[:1])
    split.prefix_eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        split.prefix(x[:1])
    flops = float(counter.get_total_flops())
    amp = autocast_dtype("cpu")
    cpu = torch.device("cpu")
    out: dict = {"gflop": flops / 1e9, "rates": {}, "amp": amp}
    fp32_fn, _ = features.prefix_function(split, cpu, None, "off", batch)
    out["rates"]["eager fp32"] = _rate(fp32_fn, x, batches)
    if amp is not None:
        bf16_fn, _ = features.prefix_function(split, cpu, amp, "off", batch)
        out["rates"]["eager bf16"] = _rate(bf16_fn, x, batches)
    if with_compile:
        compiled, _ = features.prefix_function(split, cpu, amp, "on", batch)
        out["rates"][f"compile {'bf16' if amp is not None else 'fp32'}"] = _rate(compiled, x, batches)
    with torch.no_grad():
        like = fp32_fn(x[:1])
        onnx_fn = runtimes._onnx_runtime(split.prefix, x, like)
    out["rates"]["onnxruntime fp32"] = _rate(onnx_fn, x, batches)
    prefix_fn, _ = features.prefix_function(split, cpu, amp, "off", batch, data=x)  # auto: timed afresh
    out["choice"] = prefix_fn.choice
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (15-60 s per model)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="timed batches per runtime (after one warm-up)")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    os.environ["TLWIDGETS_CACHE_DIR"] = tempfile.mkdtemp(prefix="tlwidgets-bench-runtimes-")
    os.environ.pop("TLWIDGETS_FEATURE_RUNTIME", None)

    import torch

    from tlwidgets.core.device import cpu_has_bf16, describe

    name, flags = cpu_info()
    print(f"CPU: {name}; {describe('cpu')}; torch {torch.__version__}")
    print("flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS)
          + f"; TLWIDGETS_CPU_BF16={os.environ.get('TLWIDGETS_CPU_BF16', '(unset)')}")
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if cpu_has_bf16() else {})}
    results, best = {}, {}
    for m in args.models:
        # The peak is measured again before each model: where other processes share the cores,
        # a share of a peak measured minutes earlier would mean little.
        peaks = {k: measured_peak(d) for k, d in dtypes.items()}
        results[m] = {**bench_model(m, args.batch, args.batches, args.compile), "peaks": peaks}
        best = {k: max(best.get(k, (0.0, "")), v) for k, v in peaks.items()}
    print("measured peak (best of the measurements before each model): "
          + ", ".join(f"{k} {rate / 1e9:,.0f} GFLOP/s ({kernel})" for k, (rate, kernel) in best.items()) + "\n")
    print(f"Frozen feature pass (prefix up to the head input), batch {args.batch}, 224x224, images/s "
          "(share of the peak of its precision measured just before):\n")
    columns = list(dict.fromkeys(c for r in results.values() for c in r["rates"]))
    print("| model | GFLOP/image | peak " + "/".join(dtypes) + " GFLOP/s | " + " | ".join(columns) + " | chosen |")
    print("|---|---|---|" + "---|" * len(columns) + "---|")
    for model_name, r in results.items():
        cells = []
        for c in columns:
            rate = r["rates"].get(c)
            peak = r["peaks"].get(c.rsplit(" ", 1)[-1], r["peaks"]["fp32"])[0]
            cells.append("–" if rate is None else f"{rate:.0f} ({rate * r['gflop'] * 1e9 / peak:.0%})")
        choice = r["choice"]
        peak_now = "/".join(f"{rate / 1e9:.0f}" for rate, _ in r["peaks"].values())
        print(f"| {model_name} | {r['gflop']:.2f} | {peak_now} | " + " | ".join(cells) + f" | {choice.label} |")
    print("\nWhy the others were not chosen:")
    for model_name, r in results.items():
        reasons = "; ".join(f"{k}: {v}" for k, v in r["choice"].rejected.items()) or "-"
        print(f"  {model_name}: {reasons}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
