"""Hostile input files: broken and malicious images, traversal archives, code-running checkpoints.

Every bad file must end up in the scan report with a plain reason, every good file must
be used, and nothing may raise, hang, write outside its folder or run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from tlwidgets.core import catalog, data as D, images as I, weights
from tlwidgets.core._cache import cache_dir
from tlwidgets.core.errors import DataError, ModelError

PACKAGE = Path(__file__).resolve().parents[2] / "tlwidgets"
# Pillow warns before the scan refuses an oversized image; the refusal is what is tested.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")


# ---------------------------------------------------------------------------- file makers
def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr)


def _save(image: Image.Image, path: Path, fmt: str | None = None, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **options)
    return path


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _huge_jpeg(path: Path, size: tuple[int, int] = (6000, 4000)) -> Path:
    """A smooth (so small and quick to write) photo-sized JPEG."""
    w, h = size
    x = np.broadcast_to(np.linspace(0, 255, w, dtype=np.float32)[None, :], (h, w))
    y = np.broadcast_to(np.linspace(0, 255, h, dtype=np.float32)[:, None], (h, w))
    arr = np.stack([x, y, np.full((h, w), 90, np.float32)], axis=2).astype(np.uint8)
    return _save(Image.fromarray(arr), path, "JPEG", quality=80)


def _hostile_folder(root: Path) -> tuple[set[str], dict[str, str]]:
    """Two real classes plus every kind of bad file and folder.

    Returns:
        good image paths, and ``{path: reason prefix}`` of everything that must be skipped.
    """
    good: set[str] = set()
    bad: dict[str, str] = {}
    cats, dogs = root / "cats", root / "Grüne Äpfel 苹果"  # spaces and non-ASCII in a class name

    def ok(path: Path) -> None:
        good.add(str(path))

    for i in range(4):
        ok(_save(_noise((48, 40), i), cats / f"cat_{i}.jpg", "JPEG"))
        ok(_save(_noise((40, 48), 10 + i), dogs / f"dog {i} ünïcødé 犬.png"))
    ok(_huge_jpeg(cats / "huge 6000x4000.jpg"))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    ok(_save(_noise((40, 20), 5), cats / "rotated.jpg", "JPEG", exif=exif))
    ok(_save(_noise((2, 3000), 6), cats / "thin strip.png"))
    ok(_save(_noise((1, 1), 7), cats / "one pixel.png"))
    (cats / "png named jpg.jpg").write_bytes(_encoded(_noise((30, 30), 8), "PNG"))
    ok(cats / "png named jpg.jpg")
    (cats / "trailing bytes.jpg").write_bytes(_encoded(_noise((30, 30), 9), "JPEG") + b"\0garbage" * 50)
    ok(cats / "trailing bytes.jpg")
    frames = [_noise((20, 20), s) for s in range(3)]
    frames[0].save(dogs / "animated.gif", save_all=True, append_images=frames[1:])
    ok(dogs / "animated.gif")
    raw = os.fsencode(str(dogs)) + b"/latin1-\xe9t\xe9.png"  # a name that is not valid UTF-8
    _noise((20, 20), 11).save(raw, "PNG")
    ok(Path(os.fsdecode(raw)))

    def skip(path: Path, reason: str) -> None:
        bad[str(path)] = reason

    whole_jpeg = _encoded(_noise((256, 256), 20), "JPEG")
    whole_png = _encoded(_noise((256, 256), 21), "PNG")
    (cats / "random bytes.jpg").write_bytes(np.random.default_rng(1).bytes(3000))
    skip(cats / "random bytes.jpg", "cannot be decoded")
    (cats / "truncated.jpg").write_bytes(whole_jpeg[: len(whole_jpeg) // 2])
    skip(cats / "truncated.jpg", "truncated image")
    (cats / "truncated.png").write_bytes(whole_png[: len(whole_png) // 2])
    skip(cats / "truncated.png", "truncated image")
    (cats / "header only.jpg").write_bytes(whole_jpeg[:200])
    skip(cats / "header only.jpg", "cannot be decoded: Truncated File Read")
    (cats / "zero.jpg").write_bytes(b"")
    skip(cats / "zero.jpg", "empty file (0 bytes)")
    (cats / "text.png").write_text("just some words, no pixels")
    skip(cats / "text.png", "cannot be decoded: not a recognised image format")
    (cats / "error page.jpg").write_text("<html><body>404 Not Found</body></html>")
    skip(cats / "error page.jpg", "cannot be decoded: not a recognised image format")
    (cats / "bomb.png").write_bytes(_png_claiming(50_000, 50_000))  # Pillow refuses: > 2x the limit
    skip(cats / "bomb.png", "too large to decode safely")
    (cats / "bomb 100mp.png").write_bytes(_png_claiming(10_000, 10_000))  # Pillow only warns: 1-2x
    skip(cats / "bomb 100mp.png", "too large to decode safely")
    text = PngImagePlugin.PngInfo()
    text.add_text("comment", "x" * (8 << 20), zip=True)  # 8 MB of text in a 8 kB chunk
    _save(Image.new("RGB", (8, 8)), cats / "text bomb.png", pnginfo=text)
    skip(cats / "text bomb.png", "cannot be decoded: Decompressed data too large")
    (cats / "notes.txt").write_text("not a picture")
    skip(cats / "notes.txt", "not an image (extension .txt)")
    (cats / "README").write_text("no extension")
    skip(cats / "README", "not an image (no file extension)")
    (cats / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic")
    skip(cats / "phone.heic", "unsupported image format (extension .heic")
    (cats / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    skip(cats / ".DS_Store", "hidden file")
    (cats / "._cat_0.jpg").write_bytes(b"\0\5\26\7AppleDouble")
    skip(cats / "._cat_0.jpg", "hidden file")
    _save(_noise((10, 10)), cats / ".ipynb_checkpoints" / "cat_0-checkpoint.jpg", "JPEG")
    skip(cats / ".ipynb_checkpoints", "hidden folder")
    _save(_noise((10, 10)), root / ".ipynb_checkpoints" / "cats" / "x.jpg", "JPEG")
    skip(root / ".ipynb_checkpoints", "hidden folder")
    _save(_noise((10, 10)), root / "__MACOSX" / "cats" / "x.jpg", "JPEG")
    skip(root / "__MACOSX", "hidden folder")
    os.symlink(cats, cats / "loop")
    skip(cats / "loop", "folder already scanned (symbolic link loop)")
    os.symlink(root, dogs / "up")  # back to the root: must not pull the cats in
    skip(dogs / "up", "folder already scanned (symbolic link loop)")
    os.symlink(root / "gone.jpg", dogs / "dangling.jpg")
    skip(dogs / "dangling.jpg", "broken symbolic link")
    os.mkfifo(dogs / "pipe.jpg")  # opening it would block for ever
    skip(dogs / "pipe.jpg", "not a regular file")
    os.symlink("/dev/zero", dogs / "endless.jpg")  # reading it would never end
    skip(dogs / "endless.jpg", "not a regular file")
    _save(_noise((10, 10)), root / "stray.jpg", "JPEG")
    skip(root / "stray.jpg", "not inside a class folder")
    (root / "empty class").mkdir()
    skip(root / "empty class", "no usable images in class folder")
    (root / "only junk").mkdir()
    (root / "only junk" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    skip(root / "only junk" / "broken.jpg", "cannot be decoded")
    skip(root / "only junk", "no usable images in class folder")
    _save(_noise((16, 16)), root / "single" / "lonely.png")
    ok(root / "single" / "lonely.png")
    return good, bad


# ---------------------------------------------------------------------------- the whole zoo
def test_every_bad_file_is_reported_with_its_reason_and_every_good_file_is_used(tmp_path: Path) -> None:
    good, bad = _hostile_folder(tmp_path / "zoo")
    assert len(bad) >= 25

    start = time.perf_counter()
    bundle = D.load_data(tmp_path / "zoo", val_fraction=0.25, seed=0)
    assert time.perf_counter() - start < 20  # no hang on pipes, devices, bombs or loops

    assert bundle.classes == ["Grüne Äpfel 苹果", "cats", "single"]
    used = {s.path for s in bundle.train + bundle.val}
    assert used == good
    report = bundle.report.skipped
    reasons = dict(zip(report["path"], report["reason"]))
    for path, reason in bad.items():
        assert path in reasons, f"{path} is not in the report"
        assert reasons[path].startswith(reason), (path, reasons[path])
    assert not good & set(reasons)
    assert report["reason"].str.len().min() > 5
    # Nothing under hidden folders is listed one by one, and a looped folder's images are not doubled.
    assert not any(p.startswith(str(tmp_path / "zoo" / ".ipynb_checkpoints") + os.sep) for p in reasons)
    assert len(used) == len(bundle.train) + len(bundle.val)
    assert f"Skipped {len(report)}" in bundle.report.summary()
    assert "Only one image, so training only" in bundle.report.summary()
    assert [s.path for s in bundle.train if s.label == 2] == [str(tmp_path / "zoo" / "single" / "lonely.png")]

    bundle.train_tf, bundle.eval_tf = D.make_transforms(catalog.get_spec("resnet18"), image_size=32)
    for dataset in bundle.datasets():
        for i in range(len(dataset)):
            x, label = dataset[i]
            assert x.shape == (3, 32, 32) and torch.isfinite(x).all(), dataset.samples[i].path
            assert 0 <= label < 3


def test_exif_rotation_is_respected_by_scan_and_loading(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees clockwise
    rotated = _save(_noise((40, 20)), tmp_path / "cats" / "rotated.jpg", "JPEG", exif=exif)
    assert Image.open(rotated).size == (40, 20)
    assert D.load_image(rotated).size == (20, 40)
    assert I._inspect(str(rotated)) == (20, 40)


def test_huge_photo_loads_in_full_but_scans_at_reduced_size(tmp_path: Path) -> None:
    path = str(_huge_jpeg(tmp_path / "a" / "huge.jpg"))

    def best_of_three(fn) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    assert I._inspect(path) == (6000, 4000)
    assert D.load_image(path).size == (6000, 4000)
    scan = best_of_three(lambda: I._inspect(path))
    full = best_of_three(lambda: D.load_image(path))
    assert scan < full / 3, (scan, full)


def test_thin_strip_does_not_blow_up_when_resized(tmp_path: Path) -> None:
    path = _save(_noise((2, 6000)), tmp_path / "strip.png")
    train_tf, eval_tf = D.make_transforms(catalog.get_spec("resnet18"))
    resized = eval_tf.transforms[0](D.load_image(path))
    assert max(resized.size) <= 8 * 256  # not 256 x 768000
    assert eval_tf(D.load_image(path)).shape == train_tf(D.load_image(path)).shape == (3, 224, 224)


def test_bomb_between_one_and_two_times_the_pixel_limit_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(_noise((120, 100)), tmp_path / "c" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 12,000 pixels: Pillow alone only warns
    reason = I._inspect(str(path))
    assert reason.startswith("too large to decode safely") and "MAX_IMAGE_PIXELS" in reason
    with pytest.raises(DataError, match=r"big\.png: too large to decode safely"):
        D.load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the user's way to trust big files
    assert I._inspect(str(path)) == (120, 100)


def test_unreadable_file_is_skipped_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "imgs"
    for c in "ab":
        for i in range(2):
            _save(_noise((16, 16), i), root / c / f"{i}.png")
    locked = _save(_noise((16, 16)), root / "a" / "locked.png")
    real_open = Image.open

    def guarded_open(fp: object, *args: object, **kwargs: object) -> Image.Image:
        if str(fp) == str(locked):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded_open)
    _, samples, skipped = D.scan_folder(root)
    assert dict(skipped)[str(locked)] == "cannot be read (permission denied)"
    assert len(samples) == 4
    with pytest.raises(DataError, match=r"locked\.png: cannot be read \(permission denied\)"):
        D.load_image(locked)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_chmod_000_file_and_folder_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for c in "ab":
        for i in range(2):
            _save(_noise((16, 16), i), root / c / f"{i}.png")
    locked = _save(_noise((16, 16)), root / "a" / "locked.png")
    closed = root / "b" / "closed"
    _save(_noise((16, 16)), closed / "x.png")
    locked.chmod(0)
    closed.chmod(0)
    try:
        _, samples, skipped = D.scan_folder(root)
    finally:
        closed.chmod(stat.S_IRWXU)
        locked.chmod(stat.S_IRUSR | stat.S_IWUSR)
    reasons = dict(skipped)
    assert reasons[str(locked)] == "cannot be read (permission denied)"
    assert reasons[str(closed)] == "folder cannot be read (permission denied)"
    assert len(samples) == 4


def test_a_thousand_classes_scan_and_split_fast(tmp_path: Path) -> None:
    root = tmp_path / "many"
    tiny = _encoded(Image.new("RGB", (8, 8), (200, 30, 30)), "PNG")
    for c in range(1000):
        folder = root / f"species {c:04d}"
        folder.mkdir(parents=True)
        (folder / "a.png").write_bytes(tiny)
        (folder / "b.png").write_bytes(tiny)
    start = time.perf_counter()
    bundle = D.load_data(root, val_fraction=0.5, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 20, elapsed
    assert len(bundle.classes) == 1000 and bundle.classes[0] == "species 0000"
    assert len(bundle.train) == len(bundle.val) == 1000
    assert bundle.report.counts["train"].eq(1).all() and bundle.report.counts["val"].eq(1).all()
    assert {s.label for s in bundle.val} == set(range(1000))


def test_validation_folder_with_other_classes_is_explained(tmp_path: Path) -> None:
    root = tmp_path / "split"
    for split, classes in {"train": ["cats", "dogs", "owls"], "val": ["Cats", "dogs", "zebras"]}.items():
        for c in classes:
            for i in range(2):
                _save(_noise((16, 16), i), root / split / c / f"{i}.png")
    bundle = D.load_data(root)
    assert bundle.classes == ["cats", "dogs", "owls"]
    assert [Path(s.path).parent.name for s in bundle.val] == ["dogs", "dogs"]
    reasons = dict(zip(bundle.report.skipped["path"], bundle.report.skipped["reason"]))
    assert reasons[str(root / "val" / "Cats")] == "class not among the training classes (did you mean 'cats'?)"
    assert reasons[str(root / "val" / "zebras")] == "class not among the training classes"
    assert "No validation images for 2 of 3 classes: cats, owls." in bundle.report.summary()


def test_file_gone_after_the_scan_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for c in "ab":
        for i in range(2):
            _save(_noise((16, 16), i), root / c / f"{i}.png")
    bundle = D.load_data(root, val_fraction=0)
    os.remove(bundle.train[0].path)
    train, _ = bundle.datasets()
    with pytest.raises(DataError, match=re.escape(bundle.train[0].path) + ".*rescan"):
        train[0]
    assert train[1][1] == 0


# ---------------------------------------------------------------------------- archives
def _tree(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")}


def _assert_refused(archive: Path, tmp_path: Path, why: str) -> None:
    """Loading ``archive`` is refused with ``why`` and writes nothing anywhere."""
    cache = cache_dir()
    cache_dir("archives")
    before_tmp, before_cache = _tree(tmp_path), _tree(cache)
    with pytest.raises(DataError) as err:
        D.load_data(archive)
    assert str(archive) in str(err.value) and why in str(err.value)
    assert _tree(tmp_path) == before_tmp
    assert _tree(cache) == before_cache
    assert not list(Path("/tmp").glob("evil*.txt"))


def _zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok/a/1.png", _encoded(_noise((8, 8)), "PNG"))
        for name, body in members.items():
            zf.writestr(zipfile.ZipInfo(name), body)
    return path


@pytest.mark.parametrize("member,why", [
    ("..\\..\\evil.txt", "'..' component"),
    ("ok\\..\\..\\evil.txt", "'..' component"),
    ("C:\\evil.txt", "absolute path"),
    ("C:/evil.txt", "absolute path"),
    ("\\\\server\\share\\evil.txt", "absolute path"),
    ("//server/share/evil.txt", "absolute path"),
])
def test_zip_with_backslash_or_drive_paths_is_refused(tmp_path: Path, member: str, why: str) -> None:
    archive = _zip_with(tmp_path / "evil.zip", {member: b"evil"})
    _assert_refused(archive, tmp_path, why)


def test_zip_symlink_member_is_extracted_as_a_plain_file(tmp_path: Path) -> None:
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for c in "ab":
            for i in range(2):
                zf.writestr(f"{c}/{i}.png", _encoded(_noise((8, 8), i), "PNG"))
        link = zipfile.ZipInfo("a/passwd.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    bundle = D.load_data(archive, val_fraction=0)
    extracted = Path(bundle.train[0].path).parents[1]
    assert not any(p.is_symlink() for p in extracted.rglob("*"))
    assert (extracted / "a" / "passwd.png").read_bytes() == b"/etc/passwd"
    reasons = dict(zip(bundle.report.skipped["path"], bundle.report.skipped["reason"]))
    assert reasons[str(extracted / "a" / "passwd.png")].startswith("cannot be decoded")
    assert len(bundle.train) == 4


def _tar_with(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w") as tf:
        body = _encoded(_noise((8, 8)), "PNG")
        ok = tarfile.TarInfo("ok/a/1.png")
        ok.size = len(body)
        tf.addfile(ok, io.BytesIO(body))
        for info in members:
            tf.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 4 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("members,why", [
    # A link out of the folder, then a file written through it.
    ([_info("ok/up", tarfile.SYMTYPE, "../.."), _info("ok/up/evil.txt")], "outside the archive"),
    ([_info("ok/tmp", tarfile.SYMTYPE, "/tmp"), _info("ok/tmp/evil.txt")], "absolute path"),
    ([_info("ok/a/x.png", tarfile.SYMTYPE, "../../../../../../etc/passwd")], "outside the archive"),
    ([_info("ok/dev", tarfile.CHRTYPE)], "device or other special file"),
    ([_info("ok/fifo", tarfile.FIFOTYPE)], "device or other special file"),
    ([_info("./../evil.txt")], "'..' component"),
])
def test_tar_links_out_of_the_folder_and_special_files_are_refused(
    tmp_path: Path, members: list[tarfile.TarInfo], why: str
) -> None:
    archive = _tar_with(tmp_path / "evil.tar", members)
    _assert_refused(archive, tmp_path, why)


# ---------------------------------------------------------------------------- untrusted checkpoints
class _RunsCode:
    """Unpickling this object runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _evil_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    marker = tmp_path / "code-ran.txt"
    state = {"fc.weight": torch.zeros(2, 512), "fc.bias": _RunsCode(marker)}
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"arch": "resnet18", "state_dict": state}, wrapped)
    bare = tmp_path / "bare.pth"
    torch.save(_RunsCode(marker), bare)
    legacy = tmp_path / "legacy.pt"
    torch.save({"state_dict": _RunsCode(marker)}, legacy, _use_new_zipfile_serialization=False)
    # Prove the files do run code when unpickled without protection.
    torch.load(bare, weights_only=False)
    assert marker.read_text() == "ran"
    marker.unlink()
    return marker, [wrapped, bare, legacy]


def test_code_running_checkpoints_are_refused_and_run_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker, files = _evil_files(tmp_path)
    for path in files:
        with pytest.raises(ModelError, match=re.escape(str(path))):
            catalog.register_checkpoint(path, arch="resnet18")
        spec = catalog.get_spec("resnet18")
        monkeypatch.setattr(weights, "cache_path", lambda _spec, p=path: p)
        with pytest.raises(ModelError, match=re.escape(str(path))):
            weights.load_state_dict(spec)
        assert not marker.exists(), path


def test_package_never_unpickles_untrusted_data() -> None:
    """Every torch.load in the package passes weights_only=True; nothing else unpickles."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(([^()]*(?:\([^()]*\)[^()]*)*)\)", text):
            if not re.search(r"weights_only\s*=\s*True", match.group(1)):
                offenders.append(f"{path.name}: {match.group(0)}")
        for pattern in (r"\bimport (c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b",
                        r"\bfrom (c?pickle|dill|cloudpickle|joblib|shelve|marshal) import",
                        r"allow_pickle\s*=\s*True", r"read_pickle\(", r"(?<![.\w])(eval|exec)\("):
            offenders += [f"{path.name}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not offenders, offenders



def test_bundle_whose_weights_are_a_code_running_pickle_is_refused(tmp_path: Path) -> None:
    from tlwidgets import Session

    s = Session(device="cpu", image_size=32)
    s.load_model("mobilenet_v3_small", pretrained=False)
    folder = s.save(tmp_path / "bundle")
    marker = tmp_path / "code-ran.txt"
    weights_file = next(folder.glob("*.safetensors"))
    torch.save({"state_dict": _RunsCode(marker)}, weights_file)  # a pickle under the safetensors name
    with pytest.raises(ModelError, match="do not match the SHA-256"):
        Session.load(folder, device="cpu")
    # A forger who also updates the recorded hash gets no further.
    meta_file = folder / "tlwidgets.json"
    meta = json.loads(meta_file.read_text())
    meta["weights"]["sha256"] = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not a safetensors file"):
        Session.load(folder, device="cpu")
    assert not marker.exists()
