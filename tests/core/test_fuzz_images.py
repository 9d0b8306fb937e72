"""Property: any bytes named like an image give a usable RGB image or a reported skip.

Random bytes, and valid images that are truncated, extended or have bytes flipped, go
through the scan and the dataset. The scan must either list a file as skipped with a
reason, or accept it; every accepted file must then load as a 3-channel tensor. Opening
a file directly may raise only :class:`DataError` (with the file's name).
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import transforms as T

from tlwidgets.core import data as D
from tlwidgets.core.errors import DataError

_FORMATS = {".jpg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF"}
_SETTINGS = settings(
    max_examples=int(os.environ.get("TLWIDGETS_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_TO_TENSOR = T.Compose([T.Resize(16), T.CenterCrop(16), T.ToTensor()])


def _valid(ext: str, width: int, height: int, mode: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    try:
        image.save(buf, _FORMATS[ext])
    except (OSError, ValueError):  # a mode this format cannot store
        buf = io.BytesIO()
        image.convert("RGB").save(buf, _FORMATS[ext])
    return buf.getvalue()


@st.composite
def image_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, contents): random bytes, or a valid image truncated, extended or corrupted."""
    ext = draw(st.sampled_from([".jpg", ".png"] if draw(st.booleans()) else list(_FORMATS)))
    kind = draw(st.sampled_from(["random", "truncated", "appended", "flipped", "valid"]))
    if kind == "random":
        return f"random{ext}", draw(st.binary(max_size=2048))
    body = _valid(
        ext,
        draw(st.integers(1, 64)),
        draw(st.integers(1, 64)),
        draw(st.sampled_from(["RGB", "L", "RGBA", "P", "CMYK", "1"])),
        draw(st.integers(0, 2**16)),
    )
    if kind == "truncated":
        body = body[: draw(st.integers(0, len(body)))]
    elif kind == "appended":
        body += draw(st.binary(min_size=1, max_size=512))
    elif kind == "flipped":
        data = bytearray(body)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        body = bytes(data)
    return f"{kind}{ext}", body


def _assert_scan_accounts_for_every_file(files: list[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd chunks and EXIF; skips are what count
        root = Path(tmp)
        paths = []
        for i, (name, body) in enumerate(files):
            path = root / f"class_{i % 2}" / f"{i:02d}_{name}"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(body)
            paths.append(str(path))

        classes, samples, skipped = D.scan_folder(root)

        accepted = {s.path for s in samples}
        reasons = {path: reason for path, reason in skipped}
        for path in paths:
            assert (path in accepted) != (path in reasons), path
            if path in reasons:
                assert reasons[path] and isinstance(reasons[path], str)
        dataset = D.ImageDataset(samples, _TO_TENSOR)
        for i in range(len(dataset)):
            x, label = dataset[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32, samples[i].path
            assert torch.isfinite(x).all() and classes[label] == Path(samples[i].path).parent.name
        for path in paths:
            try:
                image = D.load_image(path)
            except DataError as exc:
                assert os.path.basename(path) in str(exc)
                assert path in reasons, f"{path} was accepted by the scan but cannot be loaded: {exc}"
            else:
                assert image.mode == "RGB" and min(image.size) >= 1


@_SETTINGS
@given(st.lists(image_files(), min_size=1, max_size=6))
def test_any_bytes_named_like_images_give_an_image_or_a_reported_skip(files: list[tuple[str, bytes]]) -> None:
    _assert_scan_accounts_for_every_file(files)


@_SETTINGS
@given(st.binary(max_size=4096), st.sampled_from(sorted(_FORMATS)))
def test_load_image_raises_only_data_error(body: bytes, ext: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / f"x{ext}"
        path.write_bytes(body)
        try:
            image = D.load_image(path)
        except DataError as exc:
            assert str(path) in str(exc)
        else:
            assert image.mode == "RGB"


@pytest.mark.parametrize("ext", sorted(_FORMATS))
def test_every_truncation_of_a_valid_image_is_usable_or_skipped(ext: str) -> None:
    """Exhaustive over cut points (every 7th byte) of one small image per format."""
    body = _valid(ext, 24, 16, "RGB", 0)
    cuts = list(range(0, len(body), 7)) + [len(body) - 1]
    for start in range(0, len(cuts), 12):
        _assert_scan_accounts_for_every_file([(f"cut{n}{ext}", body[:n]) for n in cuts[start : start + 12]])
