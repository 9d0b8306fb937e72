"""What the first click gives: the default ``fit()`` against a grid of settings and fastai.

Run: ``python benchmarks/bench_defaults.py`` (``--help`` for options). Uses the flower photos
in ``../shared/datasets/flowers-dev`` when present, the built-in digits demo, and an
imbalanced copy of the flowers (two classes cut to a quarter) made in a temporary folder.
fastai is optional (``pip install tlwidgets[bench]``).

For each data set (80/20 stratified split, seed 0), with the packaged pretrained
EfficientNet-Lite0, a new head and a frozen backbone — what the App does on Train:

- **default**: ``fit()`` with no option touched (``epochs="auto"``), timed from the call
  (feature extraction included) to its end; the accuracy is that of the model it leaves.
- **grid**: a new head (same seed) trained with ``fit(epochs=e, lr=lr)`` for every ``e`` in
  {5, 10, 20, 40, 80} and ``lr`` in {3e-4, 1e-3, 3e-3, 1e-2}, on the same cached features;
  the best validation accuracy of the 20 settings is the bar (picked on the validation
  set itself, so it is an optimistic bar).
- **fastai**: ``Learner(...).fine_tune(4)`` on the same split and model, in its own process.

Goals: default >= 98% of the grid's best, >= fastai's accuracy, in <= 1/20 of fastai's time.
For the imbalanced set the balanced accuracy (mean recall over classes) is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
FLOWERS = ROOT.parent / "shared" / "datasets" / "flowers-dev"
MODEL = "efficientnet_lite0"
GRID_EPOCHS = (5, 10, 20, 40, 80)
GRID_LRS = (3e-4, 1e-3, 3e-3, 1e-2)


def cpu_facts() -> str:
    """The CPU's name and the flags that decide the speed of this code."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("unknown CPU", "x86_64", ""):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    return f"{name}; flags: {' '.join(f for f in wanted if f in flags) or 'none of ' + ', '.join(wanted)}"


def imbalanced_copy(target: Path, seed: int = 0) -> Path:
    """The flowers with the first two classes (alphabetically) cut to a quarter, as a new folder."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in FLOWERS.iterdir() if p.is_dir() and not p.name.startswith("."))
    for i, name in enumerate(classes):
        files = sorted(p for p in (FLOWERS / name).iterdir() if p.is_file())
        if i < 2:
            files = rng.sample(files, max(len(files) // 4, 2))
        (target / name).mkdir(parents=True)
        for f in files:
            shutil.copy2(f, target / name / f.name)
    return target


def _accuracies(session) -> tuple[float, float]:
    result = session.evaluate()
    recall = result.per_class["recall"].mean() if "recall" in result.per_class else float("nan")
    return float(result.accuracy), float(recall)


def default_fit(source: str, device: str | None = None) -> tuple[Any, Any, float]:
    """What the App does on Train with no option touched: Lite0, new head, frozen backbone,
    default ``fit()``; returns the session, its history and the fit's wall time (s)."""
    import torch

    from tlwidgets import Session

    s = Session(device=device)
    s.load_model(MODEL)
    s.load_data(source, val_fraction=0.2, seed=0)
    torch.manual_seed(0)
    s.replace_head()
    s.freeze_backbone()
    start = time.perf_counter()
    history = s.fit()
    return s, history, time.perf_counter() - start


def run_tlwidgets(source: str) -> dict:
    """The default fit, then the grid on the same cached features."""
    import torch

    s, history, wall = default_fit(source)
    acc, balanced = _accuracies(s)
    out = {"default": {"acc": acc, "balanced": balanced, "wall_s": wall, "epochs": len(history.epochs),
                       "best_epoch": history.best_epoch, "notes": history.notes, "message": s.message},
           "n_train": len(s.data.train), "n_val": len(s.data.val), "grid": []}
    for epochs in GRID_EPOCHS:
        for lr in GRID_LRS:
            torch.manual_seed(0)
            s.replace_head()
            start = time.perf_counter()
            s.fit(epochs=epochs, lr=lr)
            acc, balanced = _accuracies(s)
            out["grid"].append({"epochs": epochs, "lr": lr, "acc": acc, "balanced": balanced,
                                "wall_s": time.perf_counter() - start})
    out["feature_passes"] = s.feature_cache.stats["builds"]
    return out


def run_fastai(source: str, epochs: int) -> dict:
    from bench_finetune import fastai_fine_tune

    from tlwidgets.core import data

    bundle = data.load_data(source, val_fraction=0.2, seed=0)
    return fastai_fine_tune(list(bundle.classes), [tuple(x) for x in bundle.train], [tuple(x) for x in bundle.val],
                            epochs)


def _child(args: list[str]) -> dict:
    import subprocess

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), PYTHONWARNINGS="ignore")
    subprocess.run([sys.executable, __file__, "--child", *args, "--out", out], env=env, check=True)
    result = json.loads(Path(out).read_text())
    os.unlink(out)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--fastai-epochs", type=int, default=4)
    parser.add_argument("--skip-fastai", action="store_true")
    parser.add_argument("--only", nargs="*", choices=["flowers", "digits", "imbalanced"])
    args = parser.parse_args()
    if args.child is not None:
        kind, source, *rest = args.child
        result = run_tlwidgets(source) if kind == "tlw" else run_fastai(source, int(rest[0]))
        Path(args.out).write_text(json.dumps(result))
        return 0

    import torch

    print(f"CPU: {cpu_facts()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"digits": "demo"}
        if FLOWERS.is_dir():
            sets = {"flowers": str(FLOWERS), **sets, "imbalanced": str(imbalanced_copy(Path(tmp) / "imbalanced"))}
        else:
            print(f"The flower photos are not at {FLOWERS}: only the digits are measured.")
        if args.only:
            sets = {k: v for k, v in sets.items() if k in args.only}
        have_fastai = not args.skip_fastai
        if have_fastai:
            try:
                import fastai  # noqa: F401
            except ImportError:
                print("fastai not installed (pip install 'tlwidgets[bench]'); its column stays empty.")
                have_fastai = False
        rows = []
        for name, source in sets.items():
            t = _child(["tlw", source])
            f = _child(["fastai", source, str(args.fastai_epochs)]) if have_fastai else None
            rows.append((name, t, f))
            d = t["default"]
            print(f"{name}: default fit {d['acc']:.1%} in {d['wall_s']:.1f} s, {d['epochs']} epochs "
                  f"(kept {d['best_epoch']}); {' '.join(d['notes'])}", flush=True)

    print("\n| data (train+val) | default fit(): val acc | time (s) | epochs (kept) | grid best (epochs, lr) | "
          "default / grid best | fastai fine_tune: val acc | fastai time (s) | time vs fastai |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, t, f in rows:
        d = t["default"]
        best = max(t["grid"], key=lambda g: (g["acc"], -g["epochs"]))
        fa = f"{f['final_acc']:.1%}" if f else "–"
        ft = f"{f['wall_s']:.1f}" if f else "–"
        ratio = f"1/{f['wall_s'] / d['wall_s']:.0f}" if f else "–"
        print(f"| {name} ({t['n_train']}+{t['n_val']}) | {d['acc']:.1%} | {d['wall_s']:.1f} | {d['epochs']} "
              f"({d['best_epoch']}) | {best['acc']:.1%} ({best['epochs']}, {best['lr']:g}) | "
              f"{d['acc'] / best['acc']:.1%} | {fa} | {ft} | {ratio} |")
    for name, t, _f in rows:
        if name == "imbalanced":
            best = max(t["grid"], key=lambda g: g["balanced"])
            print(f"\nimbalanced: balanced accuracy (mean recall) default {t['default']['balanced']:.1%}, "
                  f"grid best {best['balanced']:.1%} ({best['epochs']}, {best['lr']:g}).")
    print("\nGrid (val acc), rows = epochs, columns = lr:")
    for name, t, _f in rows:
        print(f"  {name}: " + "; ".join(
            f"{e}: " + " ".join(f"{g['acc']:.0%}" for g in t["grid"] if g["epochs"] == e) for e in GRID_EPOCHS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
