"""Build tlwidgets/core/data/timm_catalog.json.gz from the installed timm, offline.

Every ``timm.list_pretrained()`` entry whose weights are an ImageNet-1k classifier
(``num_classes == 1000`` in its pretrained config, fine-tunes of larger data sets
included) and live on the Hugging Face Hub as a plain state dict becomes one row:
its id ``timm:<arch>.<tag>``, family, preprocessing, licence and Hub repository from
the pretrained config, and parameters and GFLOPs that this script computes itself.
Each architecture is built on the meta device (no memory, no weights) and its FLOPs
are counted with ``torch.utils.flop_counter.FlopCounterMode`` on a meta input of each
tag's input size; GFLOPs are multiply-accumulates / 1e9, torchvision's convention.

Usage::

    python tools/build_timm_catalog.py [--jobs 2] [--timeout 120] [--out PATH] [--work DIR]

Architectures are measured in ``--jobs`` worker processes; each finished one is appended
to ``<work>/measured.jsonl``, so an interrupted build resumes where it stopped. One
that takes longer than ``--timeout`` seconds keeps its parameter count and gets no
GFLOPs, with the reason in ``flops_note``; one that cannot be built at all is listed
under ``skipped`` with its reason.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import multiprocessing as mp
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tlwidgets.core.timm_catalog import COLUMNS, family_prefix  # after the path

DEFAULT_OUT = ROOT / "tlwidgets" / "core" / "data" / "timm_catalog.json.gz"
class _Timeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout


def _count(model: Any, h: int, w: int, torch: Any, counter_class: Any) -> float:
    """GFLOPs (multiply-accumulates / 1e9) of one forward pass on a meta input of h x w pixels."""
    x = torch.empty(1, 3, h, w, device="meta")
    try:
        counter = counter_class(display=False)
        with torch.no_grad(), counter:
            model(x)
    except AssertionError:  # some models' module tracking needs autograd on (cait, pit): count with it
        counter = counter_class(display=False)
        with counter:
            model(x)
    return counter.get_total_flops() / 2e9


def measure(job: tuple[str, list[str], list[list[int]], int]) -> dict[str, Any]:
    """Parameters of ``arch`` and GFLOPs at each input size (worker process)."""
    arch, names, sizes, timeout = job
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    start = time.perf_counter()
    out: dict[str, Any] = {"arch": arch, "gflops": {}, "note": None}
    try:
        with torch.device("meta"):
            model = timm.create_model(names[0], pretrained=False).eval()
        out["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        # distilled and multi-scale models classify with several heads, which one new head cannot replace
        out["heads"] = sum(1 for m in model.modules() if (isinstance(m, torch.nn.Linear) and m.out_features == 1000)
                           or (isinstance(m, torch.nn.Conv2d) and m.out_channels == 1000 and m.kernel_size == (1, 1)))
        for h, w in sizes:
            try:
                out["gflops"][f"{h}x{w}"] = _count(model, h, w, torch, FlopCounterMode)
            except _Timeout:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded: parameters only for this size
                out["note"] = f"FLOP count failed: {type(exc).__name__}: {str(exc)[:120]}"
    except _Timeout:
        out["note"] = f"FLOP count stopped after {timeout} s"
    except Exception as exc:  # noqa: BLE001 - recorded as a skipped architecture
        out["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
    finally:
        signal.alarm(0)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def entries() -> tuple[dict[str, list[Any]], list[dict[str, str]]]:
    """Pretrained configs to list, grouped by architecture, and the ones left out with why."""
    import timm
    from timm.models import get_pretrained_cfg

    by_arch: dict[str, list[Any]] = {}
    left_out = []
    for name in timm.list_pretrained():
        cfg = get_pretrained_cfg(name)
        if cfg is None or cfg.num_classes != 1000:
            continue
        if not cfg.hf_hub_id:
            left_out.append({"id": name, "reason": "weights not on the Hugging Face Hub"})
        elif cfg.custom_load or cfg.hf_hub_filename:
            left_out.append({"id": name, "reason": "weights in a custom format, not a safetensors state dict"})
        else:
            by_arch.setdefault(cfg.architecture, []).append(cfg)
    return by_arch, left_out




def _size(cfg: Any) -> list[int]:
    return [int(cfg.input_size[1]), int(cfg.input_size[2])]


def _row(cfg: Any, measured: dict[str, Any]) -> list[Any]:
    h, w = _size(cfg)
    gflops = measured["gflops"].get(f"{h}x{w}")
    note = measured.get("note") if gflops is None else None
    return [
        f"timm:{cfg.architecture}.{cfg.tag}", cfg.architecture, cfg.tag, family_prefix(cfg.architecture),
        [h, w], cfg.interpolation or "bicubic", round(float(cfg.crop_pct or 0.875), 4), cfg.crop_mode or "center",
        [round(float(v), 4) for v in cfg.mean], [round(float(v), 4) for v in cfg.std],
        cfg.license or "unknown", cfg.hf_hub_id, round(measured["params_m"], 4),
        None if gflops is None else round(gflops, 4), note,
    ]


def build(out: Path, work: Path, jobs: int, timeout: int) -> dict[str, Any]:
    import timm
    import torch

    by_arch, left_out = entries()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "measured.jsonl"
    done: dict[str, dict[str, Any]] = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a line cut short by an interruption
            if "heads" in item:  # measured by this version of the script
                done[item["arch"]] = item
    todo = [
        (arch, [f"{c.architecture}.{c.tag}" for c in cfgs], sorted({tuple(_size(c)) for c in cfgs}), timeout)
        for arch, cfgs in sorted(by_arch.items()) if arch not in done
    ]
    print(f"{sum(map(len, by_arch.values()))} entries, {len(by_arch)} architectures, {len(todo)} to measure")
    start = time.perf_counter()
    with open(log, "a") as fh, mp.get_context("spawn").Pool(jobs, maxtasksperchild=25) as pool:
        for i, item in enumerate(pool.imap_unordered(measure, [(a, n, [list(s) for s in z], t) for a, n, z, t in todo])):
            done[item["arch"]] = item
            fh.write(json.dumps(item) + "\n")
            fh.flush()
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(todo)} in {time.perf_counter() - start:.0f} s", flush=True)
    rows, skipped = [], list(left_out)
    for arch, cfgs in sorted(by_arch.items()):
        item = done[arch]
        for cfg in cfgs:
            if "error" in item:
                skipped.append({"id": f"{arch}.{cfg.tag}", "reason": f"does not build: {item['error']}"})
            elif item["heads"] != 1:
                skipped.append({"id": f"{arch}.{cfg.tag}", "reason": f"{item['heads']} classifier heads (distillation "
                                "or multi-scale): one new head cannot replace them"})
            else:
                rows.append(_row(cfg, item))
    rows.sort(key=lambda r: r[0])
    snapshot = {
        "built": dt.datetime.now(dt.UTC).date().isoformat(), "timm": timm.__version__, "torch": torch.__version__.split("+")[0],
        "columns": list(COLUMNS), "rows": rows, "skipped": sorted(skipped, key=lambda s: s["id"]),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(snapshot, separators=(",", ":"), sort_keys=False).encode()
    with gzip.GzipFile(out, "wb", mtime=0) as fh:  # mtime 0: the same input gives the same bytes
        fh.write(text)
    return snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=120, help="seconds per architecture")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "timm_catalog")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    snap = build(args.out, args.work, args.jobs, args.timeout)
    no_flops = sum(1 for r in snap["rows"] if r[COLUMNS.index("gflops")] is None)
    print(f"{len(snap['rows'])} models ({no_flops} without GFLOPs), {len(snap['skipped'])} left out, "
          f"{args.out.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
