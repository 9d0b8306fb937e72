"""Peak memory of a notebook kernel that runs the quickstart and trains, against Binder's limit.

Run: ``python benchmarks/bench_memory.py [--epochs 2] [--image-size N] [--limit-mb 1536]``

It executes ``examples/quickstart.ipynb`` in a fresh Python kernel (nbclient), as a student
opening it would: the App on the offline defaults (EfficientNet-Lite0, the demo digits, a new
head, the backbone frozen). An added last cell trains with those defaults for ``--epochs``
epochs and evaluates. Then it reads the kernel process's peak resident memory (``VmHWM`` in
``/proc/<pid>/status``, Linux) and reports whether it stays under ``--limit-mb`` (1.5 GB by
default: mybinder gives 1-2 GB to the whole container, the notebook server included).

The exit status is 0 under the limit and 1 over it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def status_mb(pid: int, field: str = "VmHWM") -> float:
    """A memory field of ``/proc/<pid>/status`` in MB (1 MB = 2**20 bytes).

    ``VmHWM`` is the peak resident set size; ``VmRSS`` the current one, which splits into
    ``RssAnon`` (the process's own memory) and ``RssFile`` (pages of mapped libraries).
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status (Linux only)")


def peak_rss_mb(pid: int) -> float:
    """``VmHWM`` (peak resident set size) of process ``pid`` in MB."""
    return status_mb(pid, "VmHWM")


def training_cell(epochs: int) -> str:
    return (
        f"history = session.fit(epochs={epochs})\n"
        "result = session.evaluate()\n"
        "print(f'trained {len(history.epochs)} epochs; validation accuracy {result.accuracy:.1%}')"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="Session(image_size=...) in the notebook (default: the model's own, 224)",
    )
    parser.add_argument("--limit-mb", type=float, default=1536.0)
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    args = parser.parse_args(argv)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    if args.image_size:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.source = cell.source.replace(
                    "tlwidgets.Session()", f"tlwidgets.Session(image_size={args.image_size})"
                )
    nb.cells.append(nbformat.v4.new_code_cell(training_cell(args.epochs)))
    # Measured first, on its own: how much of the peak is torch itself. A CUDA build of torch
    # (PyPI's default on Linux) maps far more than the CPU-only wheels Binder installs.
    probe = nbformat.v4.new_code_cell(
        "import torch, torchvision\nprint(torch.__version__, torch.version.cuda or 'cpu')"
    )

    # The kernel inherits this environment: a private cache, and sleeping idle OpenMP threads.
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    with tempfile.TemporaryDirectory(prefix="tlwidgets-bench-memory-") as cache:
        os.environ["TLWIDGETS_CACHE_DIR"] = cache
        client = NotebookClient(
            nb, timeout=args.timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        )
        start = time.perf_counter()
        with client.setup_kernel():
            pid = client.km.provisioner.pid
            client.execute_cell(probe, 0)
            torch_mb = status_mb(pid, "VmRSS")
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
            elapsed = time.perf_counter() - start
            peak = peak_rss_mb(pid)
            anon, file_mb = status_mb(pid, "RssAnon"), status_mb(pid, "RssFile")

    outputs = [o.get("text", "") for o in nb.cells[-1].get("outputs", []) if o.get("output_type") == "stream"]
    under = peak < args.limit_mb
    print(
        f"notebook: {NOTEBOOK.relative_to(ROOT)} + {args.epochs} epochs, "
        f"image size {args.image_size or 'model default'}"
    )
    print("last cell: " + ("".join(outputs).strip() or "(no output)"))
    build = "".join(o.get("text", "") for o in probe.get("outputs", [])).strip()
    print(f"torch {build}: {torch_mb:,.0f} MB resident right after importing torch and torchvision")
    print(
        f"kernel pid {pid}: peak RSS (VmHWM) {peak:,.0f} MB, {peak - torch_mb:,.0f} MB above that; "
        f"at the end {anon:,.0f} MB own + {file_mb:,.0f} MB library pages; run took {elapsed:.0f} s"
    )
    print(f"under {args.limit_mb:,.0f} MB: {'yes' if under else 'NO'}")
    return 0 if under else 1


if __name__ == "__main__":
    sys.exit(main())
