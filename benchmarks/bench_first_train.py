"""The first Train on the flower photos, end to end: PyTorch-only frozen layers vs the runtime
tlwidgets chooses, on this CPU's own precision path and on the fp32 path of CPUs without bf16.

Run: ``python benchmarks/bench_first_train.py``. Needs ``../shared/datasets/flowers-dev``.
Each run is a child process with a fresh cache folder (so the runtime choice is measured, not
read from an earlier run): ``Session()``, ``load_model("efficientnet_lite0")``,
``load_data(flowers, 0.2, seed 0)``, ``replace_head()``, ``freeze_backbone()``, then the default
``fit()``, timed from the call (feature extraction and the runtime choice included) to its end.
A third run in a new process reuses the second one's cache folder: a later session on the same
machine, which reads the runtime choice and the exported file instead of making them.
``TLWIDGETS_FEATURE_RUNTIME=torch`` gives the PyTorch-only path; ``TLWIDGETS_CPU_BF16=0`` makes a
bf16 CPU take the fp32 path that AVX2-only CPUs take (on the same cores, so its absolute speed
is not an AVX2 laptop's; the ratio is the point).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT.parent / "shared" / "datasets" / "flowers-dev"


def child() -> dict:
    from bench_defaults import default_fit

    s, history, wall = default_fit(str(DATA), device="cpu")
    first = history.epochs[0]
    return {"wall_s": wall, "first_epoch_s": first["time_s"], "acc": s.evaluate().accuracy,
            "epochs": len(history.epochs), "features_per_s": first["feature_images_per_s"],
            "mode": s.message.split("Batches: ")[-1].rstrip(".")}


def run(env: dict[str, str], times: int = 1) -> list[dict]:
    """``times`` child processes one after the other, sharing one fresh cache folder."""
    results = []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(times):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
                out = fh.name
            full = dict(os.environ, **env, TLWIDGETS_CACHE_DIR=cache, PYTHONWARNINGS="ignore",
                        OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
            subprocess.run([sys.executable, __file__, "--child", out], env=full, check=True)
            results.append(json.loads(Path(out).read_text()))
            os.unlink(out)
    return results


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        Path(sys.argv[2]).write_text(json.dumps(child()))
        return 0
    if not DATA.is_dir():
        print(f"Skipped: the flower photos are not at {DATA}.")
        return 0
    from bench_defaults import cpu_facts

    print(f"CPU: {cpu_facts()}")
    print("\n| CPU path | frozen layers | first Train (s) | first epoch (s) | frozen layers (img/s) | val acc | "
          "epochs | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for path, extra in (("this CPU's (bf16 where native)", {}), ("fp32, as CPUs without bf16", {"TLWIDGETS_CPU_BF16": "0"})):
        base = run({**extra, "TLWIDGETS_FEATURE_RUNTIME": "torch"})[0]
        auto, later = run({**extra, "TLWIDGETS_FEATURE_RUNTIME": "auto"}, times=2)
        chosen = ("chosen: " + auto["mode"].split("frozen layers: ")[-1].rstrip(")")
                  if "frozen layers" in auto["mode"] else "chosen: PyTorch")
        for name, r in (("PyTorch only", base), (chosen, auto),
                        ("chosen, a later session (choice and export remembered)", later)):
            print(f"| {path} | {name} | {r['wall_s']:.1f} | {r['first_epoch_s']:.1f} | "
                  f"{(r['features_per_s'] or 0):,.0f} | {r['acc']:.1%} | {r['epochs']} | "
                  f"{base['wall_s'] / r['wall_s']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
