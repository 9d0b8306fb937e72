"""Compare the five classic small models on the real flower photos, offline.

Run: ``python benchmarks/bench_compare.py [--data ../shared/datasets/flowers-dev] [--epochs 2]
[--image-size 224] [--pretrained] [--models squeezenet1_1 ...]``

Each model (random weights unless ``--pretrained``, so it runs with no network) gets a new
head for the five flower classes and trains ``--epochs`` epochs with its backbone frozen;
then :func:`tlwidgets.core.compare.compare_models` measures its validation accuracy and its
prediction time on this machine. With random weights a frozen backbone only offers
random features, so the accuracies show what the comparison machinery reports, not what
the architectures can learn; use ``--pretrained`` (with the weights in torch's cache) for that.

Prediction times are measured afresh (in a temporary speed cache) unless ``--use-speed-cache``.
Prints the table, the time of each step and the total time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from tlwidgets.core.compare import CLASSIC_SMALL, compare_models  # noqa: E402
from tlwidgets.core.device import describe  # noqa: E402
from tlwidgets.core.session import Session  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "flowers-dev"))
    parser.add_argument("--models", nargs="+", default=list(CLASSIC_SMALL))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: each model's own)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--pretrained", action="store_true", help="pretrained weights (needs them cached)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--use-speed-cache", action="store_true",
                        help="reuse cached prediction times instead of measuring them now")
    args = parser.parse_args(argv)
    if not args.use_speed_cache:
        os.environ["TLWIDGETS_CACHE_DIR"] = tempfile.mkdtemp(prefix="tlw-bench-")
    if not Path(args.data).is_dir():
        print(f"No images at {args.data}: pass --data FOLDER (class sub-folders).", file=sys.stderr)
        return 2

    start = time.perf_counter()
    session = Session(device=args.device, image_size=args.image_size)
    session.load_data(args.data, val_fraction=0.2, seed=0)
    data = session.data
    print(f"{len(data.train)} training + {len(data.val)} validation images, {len(data.classes)} classes; "
          f"device {describe(session.device)}; {args.epochs} epochs per model, frozen backbone, "
          f"{'pretrained' if args.pretrained else 'random'} weights")

    def progress(done: int, total: int, text: str) -> None:
        print(f"  [{time.perf_counter() - start:7.1f} s] {text}", flush=True)

    frame = compare_models(session, args.models, epochs=args.epochs, progress=progress,
                           pretrained=args.pretrained, batch_size=args.batch_size, lr=args.lr)
    total = time.perf_counter() - start
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(frame.drop(columns=["run"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"total {total:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
