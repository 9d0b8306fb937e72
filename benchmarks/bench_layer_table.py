"""How long the LayerTable takes to build for big layer lists, and how many widgets it makes.

Run: ``python benchmarks/bench_layer_table.py [--models resnet50 efficientnet_b0] [--device cpu]``

For each model (random weights, 224 px input) it reports, as the median of ``--repeats`` runs:

* ``layers()``: ``session.layers()`` alone (one forward pass with shape hooks);
* ``panel``: ``LayerTable(session)`` in total (it calls ``layers()`` once, then builds the
  stage headers and the rows of the head's stage), and the widget construction part of it;
* ``open all``: building the rows of every stage as well (what opening all of them costs);
* the number of widget models created, and whether the panel is ready in under 1 s:
  the widget part (the panel's own work; the exit status follows it) and the total
  with ``layers()`` (which depends on the model's forward pass and the CPU).

Python-side construction time only; drawing in the browser is separate (see the design notes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from ipywidgets.widgets.widget import _instances  # noqa: E402

from tlwidgets.core.session import Session  # noqa: E402
from tlwidgets.widgets.layer_table import LayerTable  # noqa: E402

LIMIT_S = 1.0


def _measure(session: Session) -> dict[str, float]:
    t0 = time.perf_counter()
    table = session.layers()
    t_layers = time.perf_counter() - t0

    inner: list[float] = []
    layers = session.layers

    def timed_layers():  # the panel's own call to layers(), timed apart from the widgets
        t = time.perf_counter()
        try:
            return layers()
        finally:
            inner.append(time.perf_counter() - t)

    session.layers = timed_layers  # type: ignore[method-assign]
    before = len(_instances)
    t0 = time.perf_counter()
    try:
        panel = LayerTable(session)
    finally:
        del session.layers
    t_panel = time.perf_counter() - t0
    made = len(_instances) - before

    t0 = time.perf_counter()
    for group in panel.groups:
        panel.expand(group)
    t_open = time.perf_counter() - t0
    made_all = len(_instances) - before
    panel.close()
    leaked = len(_instances) - before
    return {
        "rows": len(table), "groups": len(panel.groups) if panel.groups else table["group"].nunique(),
        "layers_s": t_layers, "panel_s": t_panel, "widgets_s": t_panel - sum(inner), "open_s": t_open,
        "widgets": made, "widgets_all": made_all, "leaked": leaked,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_b0"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own); 1 is steadier on a busy machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}")

    # Warm up imports and ipywidgets' first-widget costs on a small model.
    warm = Session(device=args.device, image_size=64)
    warm.load_model("resnet18", pretrained=False)
    LayerTable(warm).close()

    ok = True
    for name in args.models:
        session = Session(device=args.device, image_size=args.size)
        t0 = time.perf_counter()
        session.load_model(name, pretrained=False)
        t_load = time.perf_counter() - t0
        runs = [_measure(session) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("layers_s", "panel_s", "widgets_s", "open_s")}
        r = runs[0]
        passed = med["panel_s"] < LIMIT_S
        widgets_passed = med["widgets_s"] < LIMIT_S
        ok &= widgets_passed
        print(
            f"{name}: {r['rows']} rows in {r['groups']} stages (model load {t_load:.2f} s, not counted)\n"
            f"  layers()           {med['layers_s'] * 1000:7.1f} ms  "
            f"(forward pass at {args.size} px on {args.device})\n"
            f"  LayerTable(session) {med['panel_s'] * 1000:6.1f} ms  (widgets: {med['widgets_s'] * 1000:.1f} ms), "
            f"{r['widgets']} widget models\n"
            f"  + open all stages  {med['open_s'] * 1000:7.1f} ms  -> {r['widgets_all']} widget models in all; "
            f"after close(): {r['leaked']} left\n"
            f"  under {LIMIT_S:g} s (median of {args.repeats}): widgets {'PASS' if widgets_passed else 'FAIL'}, "
            f"with layers() {'PASS' if passed else 'FAIL'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
