"""Reading images and archives never hangs, never fills the disk, and names the user's file.

Named pipes swapped in for images after the scan, every kind of in-memory image handed
to ``predict``, archive bombs and oddly built archives, and bad ``load_data`` options.
Every call that could block runs under a time limit, so a hang fails instead of
stopping the test run; every test that writes checks the exact files left behind.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

from tests.conftest import make_image_folder
from tlwidgets import Session
from tlwidgets.core import data as D
from tlwidgets.core import archives as A
from tlwidgets.core import data_sources as S
from tlwidgets.core import folder_scan
from tlwidgets.core import images as I
from tlwidgets.core.errors import DataError
from tlwidgets.core.evaluation import predict

MIB = 2**20
GIB = 2**30
ACCEPTED = ("file path", "PIL image", "numpy array", "tensor", "list of those")


# ---------------------------------------------------------------------------- helpers
@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own cache folder, with the archives folder the loader extracts into."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("TLWIDGETS_CACHE_DIR", str(folder))
    (folder / "archives").mkdir(parents=True)
    return folder


def _tree(folder: Path) -> set[str]:
    """Every file and folder under ``folder``, relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _unblock(fifo: Path) -> None:
    """Release a reader stuck opening ``fifo`` by opening it for writing, then closing it."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def _within(seconds: float, call: Callable[[], Any], fifos: tuple[Path, ...] = ()) -> Any:
    """``call()``'s result or exception; a test failure when it still runs after ``seconds``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        for fifo in fifos:
            _unblock(fifo)
        worker.join(10)
        pytest.fail(f"still blocked after {seconds} s (reading a named pipe?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _png(colour: tuple[int, int, int] = (200, 30, 30), size: int = 12, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _folder(root: Path, per_class: int = 3) -> Path:
    for c, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{i}.png").write_bytes(_png(colour, seed=i))
    return root


def _swap_for_fifo(path: str | Path) -> Path:
    os.remove(path)
    os.mkfifo(path)
    return Path(path)


def _images_zip(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for c in "ab":
            for i in range(2):
                zf.writestr(f"{c}/{i}.png", _png(seed=i))
        for name, body in (extra or {}).items():
            zf.writestr(zipfile.ZipInfo(name), body)
    return path


def _assert_refused(
    call: Callable[[], Any], archive: Path, cache: Path, *needles: str, names_cache: bool = False
) -> str:
    """``call()`` raises a DataError naming ``archive`` (not the cache) and writes nothing."""
    before_cache, before_dir = _tree(cache), _tree(archive.parent)
    with pytest.raises(DataError) as err:
        _within(60, call)
    message = str(err.value)
    assert str(archive) in message
    assert (str(cache) in message) == names_cache
    for needle in needles:
        assert needle in message, (needle, message)
    assert _tree(cache) == before_cache
    assert _tree(archive.parent) == before_dir
    return message


# ---------------------------------------------------------------------------- named pipes
def test_open_regular_file_refuses_pipes_devices_and_folders_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    real = tmp_path / "real.png"
    real.write_bytes(_png())
    before = _tree(tmp_path)
    cases = [(fifo, "a named pipe"), (tmp_path, "a folder")]
    cases += [(Path(d), "a device") for d in ("/dev/null", "/dev/zero") if os.path.exists(d)]
    for path, kind in cases:
        with pytest.raises(I.NotRegularFileError, match=kind):
            _within(10, lambda p=path: I.open_regular_file(p), (fifo,))
    with I.open_regular_file(real) as fp:
        assert fp.read() == real.read_bytes() and str(fp) == str(real)
    with pytest.raises(FileNotFoundError):
        I.open_regular_file(tmp_path / "missing.png")
    assert _tree(tmp_path) == before


def test_image_replaced_by_a_pipe_during_the_scan_is_skipped_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _folder(tmp_path / "imgs")
    swapped = root / "b" / "1.png"
    listed = folder_scan._skip_reason_by_name
    calls: list[str] = []

    def swap_after_listing(name: str) -> str | None:
        # Runs between listing a file and decoding it: the window a swapped file slips through.
        calls.append(name)
        if len(calls) == 6:  # b/2.png: b/1.png is already listed as a regular file
            _swap_for_fifo(swapped)
        return listed(name)

    monkeypatch.setattr(folder_scan, "_skip_reason_by_name", swap_after_listing)
    classes, samples, skipped = _within(30, lambda: D.scan_folder(root), (swapped,))
    assert classes == ["a", "b"] and len(samples) == 5
    assert dict(skipped)[str(swapped)] == "not a regular file (a named pipe)"
    assert I._inspect(str(swapped)) == "not a regular file (a named pipe)"
    assert _tree(tmp_path) == {"imgs", *(f"imgs/{c}" for c in "ab"), *(f"imgs/{c}/{i}.png" for c in "ab" for i in range(3))}


@pytest.mark.parametrize("cached", [False, True])
def test_dataset_image_replaced_by_a_pipe_raises_a_data_error_naming_it(tmp_path: Path, cached: bool) -> None:
    bundle = D.load_data(_folder(tmp_path / "imgs"), val_fraction=0)
    train, _ = bundle.datasets(cache=cached)
    fifo = _swap_for_fifo(train.samples[0].path)
    before = _tree(tmp_path)
    with pytest.raises(DataError, match=f"{fifo}: it is a named pipe, not a regular file"):
        _within(30, lambda: train[0], (fifo,))
    assert train[1][1] == 0  # the other images still load
    assert _tree(tmp_path) == before


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("pipes") / "images", classes=2, per_class=4, size=32)


@pytest.mark.parametrize("workers", [0, 1])
def test_fit_with_an_image_replaced_by_a_pipe_fails_naming_it_instead_of_hanging(
    trained_folder: Path, tmp_path: Path, workers: int
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    for folder in trained_folder.iterdir():
        (root / folder.name).mkdir()
        for f in folder.iterdir():
            (root / folder.name / f.name).write_bytes(f.read_bytes())
    s = Session(device="cpu", image_size=32)
    s.load_model("mobilenet_v3_small", pretrained=False)
    s.load_data(root, val_fraction=0.25, seed=0)
    s.replace_head()
    fifo = _swap_for_fifo(s.data.train[0].path)
    before = _tree(root)
    with pytest.raises(DataError) as err:
        _within(120, lambda: s.fit(epochs=1, batch_size=4, num_workers=workers), (fifo,))
    # A loader worker's error reads like the error itself, not like the worker's traceback.
    assert str(err.value) == (f"Cannot read the image {fifo}: it is a named pipe, not a regular file. "
                              "Pass an image file, or rescan the folder.")
    assert s.status == "idle"
    assert _tree(root) == before


# ---------------------------------------------------------------------------- predict inputs
NAMES = ["red", "green", "blue"]
TRANSFORM = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_predict_on_a_pipe_raises_a_data_error_naming_it(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    for call in (lambda: predict(_classifier(), str(fifo), TRANSFORM, NAMES),
                 lambda: predict(_classifier(), [fifo], TRANSFORM, NAMES),
                 lambda: D.load_image(fifo)):
        with pytest.raises(DataError, match=f"{fifo}: it is a named pipe"):
            _within(30, call, (fifo,))
    assert _tree(tmp_path) == {"pipe.jpg"}


@pytest.mark.parametrize("images,where", [
    (None, "images=None"),
    (3, "the int 3"),
    ({"path": "a.jpg"}, "the dict"),
    (b"a.jpg", "the bytes"),
    ("", "path is empty"),
    ("   ", "path is empty"),
    ([Image.new("RGB", (8, 8)), None], "images[1]: Cannot use None"),
])
def test_predict_on_values_that_are_not_images_says_what_is_accepted(images: Any, where: str) -> None:
    with pytest.raises(DataError) as err:
        predict(_classifier(), images, TRANSFORM, NAMES)
    assert where in str(err.value)
    for accepted in ACCEPTED:
        assert accepted in str(err.value)


def test_predict_takes_numpy_arrays_and_tensors_like_the_same_pil_image() -> None:
    model = _classifier()
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    grey = rgb[..., 0].copy()
    expected = predict(model, [Image.fromarray(rgb), Image.fromarray(grey)], TRANSFORM, NAMES)
    same_rgb = [
        rgb, rgb / 255.0, rgb.astype(np.float32) / 255, rgb.astype(np.int64),
        torch.from_numpy(rgb), torch.from_numpy(rgb).permute(2, 0, 1),
        torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, torch.from_numpy(rgb).permute(2, 0, 1)[None],
    ]
    same_grey = [grey, grey / 255.0, grey[..., None], torch.from_numpy(grey)[None]]
    for item in same_rgb:
        got = predict(model, item, TRANSFORM, NAMES)
        assert got["image"].tolist() == [0, 0, 0]
        assert got["probability"].tolist() == pytest.approx(expected["probability"][:3].tolist(), rel=1e-6)
    for item in same_grey:
        got = predict(model, [item], TRANSFORM, NAMES)
        assert got["probability"].tolist() == pytest.approx(expected["probability"][3:].tolist(), rel=1e-6)
    listed = predict(model, [rgb, torch.from_numpy(grey)], TRANSFORM, NAMES)
    assert listed["image"].tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("array,why", [
    (np.zeros((2, 8, 8, 3), np.uint8), "it holds 2 images; pass them as a list"),
    (np.zeros((8, 8, 2), np.uint8), "1, 3 or 4 colour channels"),
    (torch.randn(3, 8, 8), "float values must lie in 0-1"),
    (np.full((8, 8, 3), 200.0), "float values must lie in 0-1"),
    (np.full((8, 8), np.nan), "NaN"),
    (np.full((8, 8, 3), 1000), "integer values must lie in 0-255"),
    (np.zeros((8, 8), np.complex64), "neither integers nor floats"),
    (np.zeros(8, np.uint8), "2 dimensions"),
    (np.zeros((0, 8, 3), np.uint8), "no pixels"),
])
def test_predict_refuses_arrays_that_are_not_images(array: Any, why: str) -> None:
    with pytest.raises(DataError) as err:
        predict(_classifier(), [array], TRANSFORM, NAMES)
    message = str(err.value)
    assert message.startswith("images[0]: Cannot use a ") and why in message
    for accepted in ACCEPTED:
        assert accepted in message


# ---------------------------------------------------------------------------- archive bombs
def _zeros_deflate(mib: int, head: bytes = b"", tail_zeros: int = 0) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``head`` then ``mib`` MiB (+ ``tail_zeros`` bytes) of zeros.

    One compressed MiB ends on a full flush, so it can simply be repeated: a 1 GiB
    stream is built in a fraction of a second. Returns (stream, crc32, length).
    """
    def part(data: bytes, final: bool) -> bytes:
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        return comp.compress(data) + comp.flush(zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH)

    zeros = bytes(MIB)
    crc = zlib.crc32(head)
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(tail_zeros), crc)
    stream = part(head, False) + part(zeros, False) * mib + part(bytes(tail_zeros), True)
    return stream, crc, len(head) + mib * MIB + tail_zeros


def _zip_bomb(path: Path, mib: int) -> Path:
    """A zip whose one member inflates to ``mib`` MiB of zeros, written byte by byte."""
    name = b"a/zeros.png"
    data, crc, size = _zeros_deflate(mib)
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                          len(name), 0, 0, 0, 0, 0, 0)
    offset = len(local) + len(name) + len(data)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), offset, 0)
    path.write_bytes(local + name + data + central + name + end)
    return path


def _tar_gz_bomb(path: Path, mib: int) -> Path:
    """A .tar.gz whose one member is ``mib`` MiB of zeros, written byte by byte."""
    info = tarfile.TarInfo("a/zeros.png")
    info.size = mib * MIB
    data, crc, size = _zeros_deflate(mib, head=info.tobuf(tarfile.USTAR_FORMAT), tail_zeros=2 * 512)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    path.write_bytes(header + data + struct.pack("<2L", crc, size % 2**32))
    return path


def test_one_gib_zip_bomb_is_refused_by_the_default_limits_before_writing(tmp_path: Path, cache: Path) -> None:
    bomb = _zip_bomb(tmp_path / "photos.zip", 1024)
    assert bomb.stat().st_size < 1.1 * MIB
    with zipfile.ZipFile(bomb) as zf:  # a well-formed zip: it would really inflate to 1 GiB
        (info,) = zf.infolist()
        assert info.file_size == GIB
        with zf.open(info) as member:
            assert member.read(MIB) == bytes(MIB)
    start = time.perf_counter()
    _assert_refused(lambda: D.load_data(bomb), bomb, cache,
                    "'a/zeros.png' would unpack", "1.0 GiB", "MAX_COMPRESSION_RATIO", "100 to 1")
    assert time.perf_counter() - start < 5


def test_one_gib_tar_gz_bomb_is_refused_from_its_first_header(tmp_path: Path, cache: Path) -> None:
    bomb = _tar_gz_bomb(tmp_path / "photos.tar.gz", 1024)
    assert bomb.stat().st_size < 1.1 * MIB
    with tarfile.open(bomb) as tf:
        assert tf.next().size == GIB
    start = time.perf_counter()
    _assert_refused(lambda: D.load_data(bomb), bomb, cache, "would unpack to more than 1.0 GiB",
                    "MAX_COMPRESSION_RATIO")
    assert time.perf_counter() - start < 5  # refused without inflating the gigabyte


def test_small_bombs_are_refused_under_lowered_limits(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(A, "RATIO_CHECK_BYTES", 64 * 1024)
    zip_bomb = _zip_bomb(tmp_path / "small.zip", 1)
    _assert_refused(lambda: D.load_data(zip_bomb), zip_bomb, cache, "'a/zeros.png'", "MAX_COMPRESSION_RATIO")
    tar_bomb = _tar_gz_bomb(tmp_path / "small.tgz", 1)
    _assert_refused(lambda: D.load_data(tar_bomb), tar_bomb, cache, "MAX_COMPRESSION_RATIO")


def _stored_zip(path: Path, members: int, size: int) -> Path:
    """A zip of ``members`` stored, incompressible members of ``size`` bytes named like images."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(members):
            zf.writestr(f"{'ab'[i % 2]}/{i}.png", rng.bytes(size))
    return path


def test_archive_beyond_the_total_size_limit_is_refused(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _stored_zip(tmp_path / "big.zip", 3, MIB)
    monkeypatch.setattr(A, "MAX_ARCHIVE_BYTES", 2 * MIB + 1)
    _assert_refused(lambda: D.load_data(archive), archive, cache, "more than 2.0 MiB", "MAX_ARCHIVE_BYTES")
    tar = tmp_path / "big.tar"
    with tarfile.open(tar, "w") as tf:
        for i in range(3):
            info = tarfile.TarInfo(f"{'ab'[i % 2]}/{i}.png")
            info.size = MIB
            tf.addfile(info, io.BytesIO(bytes(MIB)))
    _assert_refused(lambda: D.load_data(tar), tar, cache, "MAX_ARCHIVE_BYTES")


def test_archive_with_too_many_members_is_refused(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _stored_zip(tmp_path / "many.zip", 6, 16)
    monkeypatch.setattr(A, "MAX_ARCHIVE_MEMBERS", 5)
    _assert_refused(lambda: D.load_data(archive), archive, cache, "more than 5 members", "MAX_ARCHIVE_MEMBERS")


def test_archive_too_large_for_the_free_disk_space_is_refused(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _images_zip(tmp_path / "photos.zip")
    monkeypatch.setattr(A, "MAX_ARCHIVE_DISK_SHARE", 1e-12)
    message = _assert_refused(lambda: D.load_data(archive), archive, cache, f"free in {cache / 'archives'}",
                              "TLWIDGETS_CACHE_DIR", "MAX_ARCHIVE_DISK_SHARE", names_cache=True)
    assert "50%" not in message  # the share shown is the one in force


def test_zip_member_longer_than_its_header_says_is_stopped_and_cleaned_up(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _images_zip(tmp_path / "photos.zip")
    real_open = zipfile.ZipFile.open

    def endless(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        info = name if isinstance(name, zipfile.ZipInfo) else self.getinfo(name)
        if info.filename == "b/1.png":  # the last member: the others are already written
            return io.BytesIO(bytes(info.file_size + 10 * MIB))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", endless)
    _assert_refused(lambda: D.load_data(archive), archive, cache,
                    "'b/1.png' holds more than the", "its header declares")


def test_zip_whose_header_understates_a_member_is_refused_and_cleaned_up(tmp_path: Path, cache: Path) -> None:
    archive = _images_zip(tmp_path / "photos.zip")
    with zipfile.ZipFile(archive) as zf:
        size = zf.getinfo("b/1.png").file_size
    body = bytearray(archive.read_bytes())
    last = body.rindex(b"PK\x01\x02")  # the central directory entry of the last member
    assert body[last + 46:last + 53] == b"b/1.png"
    struct.pack_into("<L", body, last + 24, size // 2)  # its declared uncompressed size
    archive.write_bytes(bytes(body))
    _assert_refused(lambda: D.load_data(archive), archive, cache, "'b/1.png'")


# ---------------------------------------------------------------------------- odd archives
def test_zip_holding_only_another_zip_names_both(tmp_path: Path, cache: Path) -> None:
    inner = _images_zip(tmp_path / "inner.zip")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "photos/inner.zip")
        zf.writestr("__MACOSX/._inner.zip", b"x")
    inner.unlink()
    _assert_refused(lambda: D.load_data(outer), outer, cache,
                    "holds no images, only the archive 'photos/inner.zip'", "pass the path of inner.zip")


def test_archive_with_no_images_names_the_archive(tmp_path: Path, cache: Path) -> None:
    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/readme.txt", "hello")
    _assert_refused(lambda: D.load_data(archive), archive, cache, "holds no image files")


def test_archive_without_two_classes_names_the_archive_not_the_cache(tmp_path: Path, cache: Path) -> None:
    archive = tmp_path / "one.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("only/1.png", _png())
        zf.writestr("loose.png", _png())
    with pytest.raises(DataError) as err:
        D.load_data(archive)
    assert str(err.value).startswith(f"The archive {archive} has fewer than two class folders")
    assert str(cache) not in str(err.value)


@pytest.mark.parametrize("order", [("a", "a/b.png"), ("a/b.png", "a"), ("a/b.png", "a/b.png/c.png")])
def test_zip_with_a_file_and_a_folder_of_the_same_name_is_refused(
    tmp_path: Path, cache: Path, order: tuple[str, str]
) -> None:
    archive = tmp_path / "clash.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("c/1.png", _png())
        for name in order:
            zf.writestr(name, _png())
    shown = "a/b.png" if "a/b.png/c.png" in order else "a"
    _assert_refused(lambda: D.load_data(archive), archive, cache,
                    f"both a file and a folder named {shown!r}", "Rename one of them")


def test_tar_with_a_file_and_a_folder_of_the_same_name_is_refused(tmp_path: Path, cache: Path) -> None:
    archive = tmp_path / "clash.tar"
    body = _png()
    with tarfile.open(archive, "w") as tf:
        for name in ("a", "a/b.png"):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    _assert_refused(lambda: D.load_data(archive), archive, cache, "both a file and a folder named 'a'")


@pytest.mark.parametrize("target", ["missing.png", "a/later.png"])
def test_tar_hard_link_to_a_missing_member_names_the_archive(tmp_path: Path, cache: Path, target: str) -> None:
    archive = tmp_path / "links.tar"
    body = _png()
    with tarfile.open(archive, "w") as tf:
        link = tarfile.TarInfo("a/link.png")
        link.type, link.linkname = tarfile.LNKTYPE, target
        tf.addfile(link)
        info = tarfile.TarInfo("a/later.png")
        info.size = len(body)
        tf.addfile(info, io.BytesIO(body))
    _assert_refused(lambda: D.load_data(archive), archive, cache,
                    f"'a/link.png' is a hard link to {target!r}", "not a file stored before it")


@pytest.mark.parametrize("member,why", [
    ("../evil.png", "'..' component"),
    ("a/../../evil.png", "'..' component"),
    ("/tmp/evil.png", "absolute path"),
])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_members_escaping_the_folder_are_refused_naming_the_users_archive(
    tmp_path: Path, cache: Path, member: str, why: str, kind: str
) -> None:
    archive = tmp_path / f"evil.{kind}"
    if kind == "zip":
        _images_zip(archive, {member: _png()})
    else:
        with tarfile.open(archive, "w") as tf:
            body = _png()
            for name in ("a/1.png", "b/1.png", member):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tf.addfile(info, io.BytesIO(body))
    _assert_refused(lambda: D.load_data(archive), archive, cache, f"its member {member!r}", why)
    assert not (tmp_path.parent / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_encrypted_zip_member_is_refused_naming_it(tmp_path: Path, cache: Path) -> None:
    archive = tmp_path / "locked.zip"
    _images_zip(archive)
    body = bytearray(archive.read_bytes())
    last = body.rindex(b"PK\x01\x02")  # the central directory entry of the last member
    body[last + 8] |= 0x1  # zipfile cannot write encrypted members: set the flag by hand
    archive.write_bytes(bytes(body))
    _assert_refused(lambda: D.load_data(archive), archive, cache, "'b/1.png' is encrypted")


def test_archive_that_is_a_named_pipe_is_refused_without_blocking(tmp_path: Path, cache: Path) -> None:
    fifo = tmp_path / "photos.zip"
    os.mkfifo(fifo)
    for call in (lambda: D.load_data(fifo), lambda: S.extract_archive(fifo)):
        _assert_refused(lambda c=call: _within(30, c, (fifo,)), fifo, cache, "is a named pipe")
    plain = tmp_path / "pipe"
    os.mkfifo(plain)
    with pytest.raises(DataError, match=f"{plain} is a named pipe, not a folder or an archive"):
        _within(30, lambda: D.load_data(plain), (plain,))
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_held_out_archive_with_other_classes_names_the_archive(tmp_path: Path, cache: Path) -> None:
    archive = _images_zip(tmp_path / "holdout.zip")
    with pytest.raises(DataError) as err:
        D.holdout_samples(archive, ["a", "c"])
    assert str(err.value).startswith(f"{archive} has class folders the model was not trained on: b.")
    assert str(cache) not in str(err.value)
    assert [s.label for s in D.holdout_samples(archive, ["b", "a"])] == [1, 1, 0, 0]


def test_good_archive_still_loads_after_all_checks(tmp_path: Path, cache: Path) -> None:
    archive = _images_zip(tmp_path / "photos.zip", {"a/sub/": b"", "a\\win.png": _png(seed=5)})
    bundle = D.load_data(archive, val_fraction=0)
    assert bundle.classes == ["a", "b"] and len(bundle.train) == 5
    (key,) = (cache / "archives").iterdir()
    assert _tree(cache / "archives" / key) == {"a", "a/sub", "a/0.png", "a/1.png", "a/win.png", "b", "b/0.png", "b/1.png"}


# ---------------------------------------------------------------------------- load_data options
@pytest.fixture
def no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("scanned a folder before checking the options")

    monkeypatch.setattr(D, "_scan", refuse)


@pytest.mark.parametrize("source", ["", "   ", "\t\n", b"", None])
def test_empty_source_is_refused_without_scanning_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_scan: None, source: Any
) -> None:
    monkeypatch.chdir(_folder(tmp_path / "here"))
    before = _tree(tmp_path)
    with pytest.raises(DataError) as err:
        D.load_data(source)
    assert str(err.value).startswith(f"source={source!r} is ")
    assert "Pass a folder with one sub-folder per class" in str(err.value) or "pass e.g. a folder" in str(err.value)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("options,name,allowed", [
    ({"seed": -1}, "seed=-1", "from 0 to 4294967295"),
    ({"seed": 2**32}, "seed=4294967296", "from 0 to 4294967295"),
    ({"seed": 1.5}, "seed=1.5", "whole number"),
    ({"seed": "0"}, "seed='0'", "whole number"),
    ({"seed": True}, "seed=True", "whole number"),
    ({"seed": None}, "seed=None", "whole number"),
    ({"val_fraction": 1}, "val_fraction=1", "up to, but not including, 1"),
    ({"val_fraction": -0.01}, "val_fraction=-0.01", "from 0"),
    ({"val_fraction": float("nan")}, "val_fraction=nan", "from 0"),
    ({"val_fraction": float("inf")}, "val_fraction=inf", "from 0"),
    ({"max_per_class": 0}, "max_per_class=0", "positive whole number"),
    ({"max_per_class": 2.5}, "max_per_class=2.5", "positive whole number"),
    ({"max_per_class": "3"}, "max_per_class='3'", "positive whole number"),
    ({"max_per_class": float("nan")}, "max_per_class=nan", "positive whole number"),
])
@pytest.mark.parametrize("source", ["folder", "demo", "missing"])
def test_bad_split_options_are_refused_before_any_scanning(
    tmp_path: Path, cache: Path, no_scan: None, options: dict, name: str, allowed: str, source: str
) -> None:
    path = {"folder": str(_folder(tmp_path / "imgs")), "demo": "demo", "missing": str(tmp_path / "nope")}[source]
    before_tmp, before_cache = _tree(tmp_path), _tree(cache)
    with pytest.raises(DataError) as err:
        D.load_data(path, **options)
    assert str(err.value).startswith(name) and allowed in str(err.value)
    assert _tree(tmp_path) == before_tmp and _tree(cache) == before_cache


def test_seeds_at_the_edges_of_the_range_are_accepted(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    splits = {seed: D.load_data(root, seed=seed).val for seed in (0, 2**32 - 1, np.int64(7))}
    assert all(len(val) == 2 for val in splits.values())
    assert D.load_data(root, seed=np.int64(7)).val == D.load_data(root, seed=7).val
