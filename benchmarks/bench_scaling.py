"""How loading and a default fit scale with the number of images: 1,000 to 50,000 photos.

Run: ``python benchmarks/bench_scaling.py`` (``--sizes 1000 10000`` for a quicker run;
``--help`` for options). Needs the packaged EfficientNet-Lite0 weights (offline). Set
``OMP_WAIT_POLICY=PASSIVE`` when other processes share the cores.

For each size, folders of small generated JPEGs (10 classes, 160x120 pixels, a class
colour under random shapes and noise) are written into a temporary folder (in parallel,
removed afterwards). Then, in a child process per size: ``Session()``,
``load_model("efficientnet_lite0")`` (pretrained), ``load_data(folder)``,
``replace_head()``, ``freeze_backbone()`` and ``fit()`` with every option at its default.
It prints the time of ``load_data`` and of ``fit``, the child's peak resident set size
(``ru_maxrss`` from ``os.wait4``: libraries, model, data and caches included) and images/s,
then whether the time per image grows no faster than linearly (largest size at most 1.2x
the smallest's) and whether memory stays under the bound: the smallest size's peak plus
the decoded-image cache's bound (``data.decoded_cache_bound()``: a quarter of the
available memory, at most 2 GiB) plus the cached features of the larger size, plus
``RUNTIME_MB`` when only the larger fit timed runtimes for its frozen layers (a long
feature pass does: ONNX export and ``torch.compile``, measured at 640-700 MB of peak
memory whatever the number of images), plus ``LIST_KB`` per image beyond the smallest size
(the file list, labels and split that ``load_data`` keeps: 2.9 KB an image measured after
``load_data`` of 20,000 files). "Other" is the peak less the decoded images and features
held: libraries, model, runtimes and that list.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = "efficientnet_lite0"
CLASSES = 10
WIDTH, HEIGHT = 160, 120
LINEAR_SLACK = 1.2  # largest size's time per image at most this multiple of the smallest's
RUNTIME_MB = 800  # peak memory of timing the frozen layers' runtimes (ONNX export, torch.compile)
LIST_KB = 3  # per image: the file list, labels and split load_data keeps


# ---------------------------------------------------------------------------- data
def _write(job: tuple[str, int, int]) -> None:
    """Write the images ``start .. stop - 1`` of one folder (image i is in class i % CLASSES)."""
    import numpy as np
    from PIL import Image

    folder, start, stop = job
    for i in range(start, stop):
        label = i % CLASSES
        rng = np.random.default_rng(i)
        hue = np.array([np.sin(label * 0.63), np.sin(label * 0.63 + 2.1), np.sin(label * 0.63 + 4.2)])
        image = np.empty((HEIGHT, WIDTH, 3), np.float32)
        image[:] = 128 + 90 * hue
        for _ in range(3):  # shapes of random colours: the class is the dominant colour, not every pixel
            x, y = rng.integers(0, WIDTH), rng.integers(0, HEIGHT)
            w, h = rng.integers(10, 60), rng.integers(10, 50)
            image[y:y + h, x:x + w] = rng.uniform(0, 255, 3)
        image += rng.normal(0, 20, image.shape)
        path = Path(folder) / f"class_{label}" / f"img_{i:06d}.jpg"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=85)


def make_folder(root: Path, n: int, processes: int) -> float:
    """Write ``n`` images into ``root``; seconds taken."""
    start = time.perf_counter()
    for c in range(CLASSES):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    chunk = 500
    jobs = [(str(root), s, min(s + chunk, n)) for s in range(0, n, chunk)]
    with Pool(processes) as pool:
        pool.map(_write, jobs)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------- child
def run_size(folder: str) -> dict:
    import torch

    from tlwidgets import Session
    from tlwidgets.core import data

    s = Session(device="cpu")
    s.load_model(MODEL)
    start = time.perf_counter()
    s.load_data(folder)
    load_s = time.perf_counter() - start
    torch.manual_seed(0)
    s.replace_head()
    s.freeze_backbone()
    start = time.perf_counter()
    history = s.fit()
    fit_s = time.perf_counter() - start
    train_ds, val_ds = s._datasets()
    budget = train_ds._budget
    first = history.epochs[0]
    return {
        "images": len(s.data.train) + len(s.data.val), "load_s": load_s, "fit_s": fit_s,
        "epochs": len(history.epochs), "val_acc": history.epochs[(history.best_epoch or len(history.epochs)) - 1]["val_acc"],
        "mode": s.message.split("Batches: ")[-1].rstrip("."),
        "data_images_per_s": first["data_images_per_s"], "feature_images_per_s": first["feature_images_per_s"],
        "decoded_bytes": budget.nbytes if budget is not None else 0,
        "decoded_images": len(train_ds._cache or {}) + len(val_ds._cache or {}),
        "decoded_bound": budget.max_bytes if budget is not None else data.decoded_cache_bound(),
        "feature_bytes": s.feature_cache.nbytes,
    }


def _child(folder: Path) -> tuple[dict, float]:
    """``run_size`` in a child process: its result and peak RSS in MB."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(folder), "--out", out], env=env)
    _pid, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"the run on {folder} failed with exit status {code}")
    result = json.loads(Path(out).read_text())
    os.unlink(out)
    return result, usage.ru_maxrss / 1024  # KiB on Linux


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000],
                        help="numbers of images (default 1000 10000 50000)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="processes writing the images")
    args = parser.parse_args()
    if args.child is not None:
        Path(args.out).write_text(json.dumps(run_size(args.child)))
        return 0
    if any(n < CLASSES * 2 for n in args.sizes):
        parser.error(f"--sizes: at least {CLASSES * 2} images (two per class)")

    import torch

    print(f"{_cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"load average {os.getloadavg()[0]:.2f} at start; {MODEL}, {WIDTH}x{HEIGHT} JPEGs in {CLASSES} classes")
    rows: list[tuple[dict, float, float]] = []
    temp = Path(tempfile.mkdtemp(prefix="tlwidgets-scaling-"))
    try:
        for n in sorted(args.sizes):
            folder = temp / f"images-{n}"
            made_s = make_folder(folder, n, args.processes)
            result, rss = _child(folder)
            shutil.rmtree(folder)
            rows.append((result, rss, made_s))
            total = result["load_s"] + result["fit_s"]
            print(f"{n:>7,} images written in {made_s:.1f} s; load_data {result['load_s']:.1f} s, fit "
                  f"{result['fit_s']:.1f} s ({result['epochs']} epochs, {result['mode']}), peak RSS {rss:,.0f} MB, "
                  f"{n / total:,.0f} images/s", flush=True)
    finally:
        shutil.rmtree(temp, ignore_errors=True)

    print("\n| images | load_data (s) | fit (s) | epochs | val acc | first epoch: loading / frozen layers (images/s) "
          "| load + fit (ms per image) | decoded images kept (MB) | features (MB) | peak RSS (MB) | other (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r, rss, _made in rows:
        per_image = (r["load_s"] + r["fit_s"]) / r["images"] * 1e3
        print(f"| {r['images']:,} | {r['load_s']:.1f} | {r['fit_s']:.1f} | {r['epochs']} | {r['val_acc']:.1%} | "
              f"{r['data_images_per_s'] or 0:,.0f} / {r['feature_images_per_s'] or 0:,.0f} | {per_image:.2f} | "
              f"{r['decoded_bytes'] / 2**20:,.0f} ({r['decoded_images']:,} images) | {r['feature_bytes'] / 2**20:,.0f} "
              f"| {rss:,.0f} | {rss - (r['decoded_bytes'] + r['feature_bytes']) / 2**20:,.0f} |")
    if len(rows) < 2:
        return 0
    (small, small_rss, _), (large, large_rss, _) = rows[0], rows[-1]
    per = [(r["load_s"] + r["fit_s"]) / r["images"] for r in (small, large)]
    fit_per = [r["fit_s"] / r["images"] for r in (small, large)]
    linear = per[1] <= LINEAR_SLACK * per[0]
    print(f"\nTime per image (load_data + fit): {per[0] * 1e3:.2f} ms at {small['images']:,}, {per[1] * 1e3:.2f} ms at "
          f"{large['images']:,} ({per[1] / per[0]:.2f}x; fit alone {fit_per[1] / fit_per[0]:.2f}x): "
          f"{'no faster than linear' if linear else 'FASTER THAN LINEAR'} (bound {LINEAR_SLACK}x).")
    timed = [r["mode"].find("frozen layers:") >= 0 for r in (small, large)]
    runtime_mb = RUNTIME_MB if timed[1] and not timed[0] else 0
    list_mb = LIST_KB * (large["images"] - small["images"]) / 1024
    bound = small_rss + large["decoded_bound"] / 2**20 + large["feature_bytes"] / 2**20 + runtime_mb + list_mb
    held = large["decoded_bytes"] <= large["decoded_bound"]
    print(f"Memory: peak {large_rss:,.0f} MB at {large['images']:,} images; bound {bound:,.0f} MB (peak at "
          f"{small['images']:,} {small_rss:,.0f} + decoded-image bound {large['decoded_bound'] / 2**20:,.0f} + "
          f"features {large['feature_bytes'] / 2**20:,.0f} + timing runtimes {runtime_mb} + file list "
          f"{list_mb:,.0f}): "
          f"{'under' if large_rss <= bound else 'OVER'} the bound; decoded images held "
          f"{large['decoded_bytes'] / 2**20:,.0f} MB, {'within' if held else 'OVER'} their bound.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
