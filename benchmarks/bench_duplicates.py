"""Where the Cleaner's near-duplicate threshold comes from: cosine similarities of pooled features.

Run: ``python benchmarks/bench_duplicates.py`` (``--help`` for options). Uses the flower photos
in ``../shared/datasets/flowers-dev`` (or ``--data``) and the packaged pretrained
EfficientNet-Lite0 at its own input size, with the features the Cleaner uses (the pooled input
of the head, :func:`tlwidgets.core.cleaning.one_pass`).

It prints, for the photos as they are, how similar each photo's most similar *other* photo is
(quantiles and the top pairs), and, for ``--copies`` photos, how similar a changed copy is to
its original: a byte copy, a PNG, JPEG re-saves at quality 95 and 70, a copy shrunk to 80 %,
cropped by 5 % and by 15 % on each side, 10 % brighter, and mirrored. A threshold above the
largest "other photo" similarity and below the copies' lists copies and no look-alikes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FLOWERS = ROOT.parent / "shared" / "datasets" / "flowers-dev"

from tlwidgets import Session
from tlwidgets.core import cleaning
from tlwidgets.core.data import Sample


def _variants(path: str, folder: Path, k: int) -> dict[str, Path]:
    """Changed copies of one photo, written into ``folder``."""
    with Image.open(path) as opened:
        im = ImageOps.exif_transpose(opened).convert("RGB")
    w, h = im.size
    out = {"byte copy": folder / f"{k}_copy{Path(path).suffix}"}
    shutil.copyfile(path, out["byte copy"])
    made = {
        "PNG": (im, "png", {}),
        "JPEG quality 95": (im, "jpg", {"quality": 95}),
        "JPEG quality 70": (im, "jpg", {"quality": 70}),
        "shrunk to 80 %": (im.resize((int(w * 0.8), int(h * 0.8)), Image.Resampling.BILINEAR), "jpg", {"quality": 95}),
        "5 % cropped": (im.crop((int(w * .05), int(h * .05), int(w * .95), int(h * .95))), "jpg", {"quality": 95}),
        "15 % cropped": (im.crop((int(w * .15), int(h * .15), int(w * .85), int(h * .85))), "jpg", {"quality": 95}),
        "10 % brighter": (ImageEnhance.Brightness(im).enhance(1.1), "jpg", {"quality": 95}),
        "mirrored": (im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "jpg", {"quality": 95}),
    }
    for name, (image, ext, options) in made.items():
        out[name] = folder / f"{k}_{len(out)}.{ext}"
        image.save(out[name], **options)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(FLOWERS), help="a folder of class sub-folders (default: the flowers)")
    parser.add_argument("--copies", type=int, default=40, help="photos to make changed copies of")
    args = parser.parse_args()
    s = Session(device="cpu")
    s.load_model("efficientnet_lite0")
    s.load_data(args.data, val_fraction=0.2, seed=0)
    s.replace_head()
    s.freeze_backbone()
    photos = [*s.data.train, *s.data.val]
    picked = np.random.default_rng(0).choice(len(photos), min(args.copies, len(photos)), replace=False)
    with tempfile.TemporaryDirectory() as tmp:
        copies = [(int(i), name, path) for k, i in enumerate(picked)
                  for name, path in _variants(photos[i].path, Path(tmp), k).items()]
        _, pooled, words, _ = cleaning.one_pass(s, photos + [Sample(str(p), 0) for _, _, p in copies])
    z = torch.nn.functional.normalize(pooled, dim=1)
    n = len(photos)
    others = z[:n] @ z[:n].T
    others.fill_diagonal_(-1.0)
    best = others.max(dim=1).values.numpy()
    print(f"{n} photos from {args.data}; {words}")
    q = np.quantile(best, [0.5, 0.9, 0.99, 1.0])
    print(f"most similar other photo, per photo: median {q[0]:.3f}, 90% {q[1]:.3f}, 99% {q[2]:.3f}, max {q[3]:.3f}")
    top = torch.triu(others, diagonal=1).flatten().topk(5).values.numpy()
    print("five most similar pairs of different photos:", ", ".join(f"{v:.3f}" for v in top))
    print(f"{'changed copy':<18} {'min':>6} {'median':>7} {'share >= 0.97':>14} {'share >= 0.93':>14}")
    for name in dict.fromkeys(name for _, name, _ in copies):
        sims = np.array([float(z[i] @ z[n + j]) for j, (i, nm, _) in enumerate(copies) if nm == name])
        print(f"{name:<18} {sims.min():6.3f} {np.median(sims):7.3f} {np.mean(sims >= 0.97):14.0%} "
              f"{np.mean(sims >= 0.93):14.0%}")
    print(f"default threshold: {cleaning.DUPLICATE_THRESHOLD}")


if __name__ == "__main__":
    main()
