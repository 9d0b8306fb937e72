"""Archives (and their safety checks), the demo digits and torchvision datasets."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torchvision
from PIL import Image

from tlwidgets.core import data as D
from tlwidgets.core import data_sources as S
from tlwidgets.core._cache import cache_dir
from tlwidgets.core.errors import DataError


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------- archives
def test_zip_with_one_top_folder_loads_and_is_extracted_once(image_folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(_files_under(image_folder)):
            zf.write(f, f"pets/{f.relative_to(image_folder)}")
        zf.writestr("__MACOSX/pets/._class_0", b"junk")
    bundle = D.load_data(archive, val_fraction=0.25)
    assert bundle.report.layout == "archive"
    assert bundle.classes == ["class_0", "class_1", "class_2"]
    assert bundle.report.counts["total"].tolist() == [8, 8, 8]
    folder = Path(bundle.train[0].path).parents[1]
    assert folder.name == "pets" and folder.is_relative_to(cache_dir("archives"))
    mtime = os.stat(bundle.train[0].path).st_mtime_ns
    again = D.load_data(archive, val_fraction=0.25)
    assert [s.path for s in again.val] == [s.path for s in bundle.val]
    assert os.stat(bundle.train[0].path).st_mtime_ns == mtime  # not extracted a second time


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar.bz2", "w:bz2"), (".tar", "w")])
def test_tar_archives_load(image_folder: Path, tmp_path: Path, suffix: str, mode: str) -> None:
    archive = tmp_path / f"images{suffix}"
    with tarfile.open(archive, mode) as tf:
        for f in sorted(_files_under(image_folder)):
            tf.add(f, str(f.relative_to(image_folder)))
    bundle = D.load_data(archive, val_fraction=0.25, seed=1)
    assert bundle.classes == ["class_0", "class_1", "class_2"]
    assert bundle.report.counts["val"].tolist() == [2, 2, 2]
    assert bundle.report.source == str(archive)


def _evil_zip(path: Path, member: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok/a/1.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(member), b"evil")
    return path


def _evil_tar(path: Path, member: str, link: str | None = None, kind: bytes = tarfile.SYMTYPE) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        good = tarfile.TarInfo("ok/a/1.txt")
        good.size = 4
        tf.addfile(good, io.BytesIO(b"fine"))
        info = tarfile.TarInfo(member)
        if link is None:
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
        else:
            info.type, info.linkname = kind, link
            tf.addfile(info)
    return path


@pytest.mark.parametrize("make,member,why", [
    (lambda p: _evil_zip(p / "dotdot.zip", "../evil.txt"), "../evil.txt", "'..' component"),
    (lambda p: _evil_zip(p / "deep.zip", "a/../../evil.txt"), "a/../../evil.txt", "'..' component"),
    (lambda p: _evil_zip(p / "abs.zip", str(p / "evil.txt")), None, "absolute path"),
    (lambda p: _evil_tar(p / "dotdot.tar.gz", "../evil.txt"), "../evil.txt", "'..' component"),
    (lambda p: _evil_tar(p / "abs.tar.gz", str(p / "evil.txt")), None, "absolute path"),
    (lambda p: _evil_tar(p / "sym.tar.gz", "ok/link", "../../../evil.txt"), "ok/link", "outside the archive"),
    (lambda p: _evil_tar(p / "abslink.tar.gz", "ok/link", "/etc/passwd"), "ok/link", "absolute path"),
    (lambda p: _evil_tar(p / "hard.tar.gz", "ok/hard", "../evil.txt", tarfile.LNKTYPE), "ok/hard", "outside"),
])
def test_unsafe_archives_are_refused_and_write_nothing(tmp_path: Path, make, member, why) -> None:
    archives = cache_dir("archives")
    before = _files_under(archives)
    archive = make(tmp_path)
    with pytest.raises(DataError) as err:
        D.load_data(archive)
    message = str(err.value)
    assert str(archive) in message and why in message
    assert (member or str(tmp_path / "evil.txt").lstrip("/")) in message
    assert not list(tmp_path.rglob("evil.txt")) and not list(archives.parent.rglob("evil.txt"))
    assert _files_under(archives) == before  # not even the safe member was written
    assert not [p for p in archives.iterdir() if p.name.startswith(".")]


def test_corrupt_archive_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="Cannot read the archive .*broken.zip"):
        D.load_data(archive)


def test_archive_with_train_val_folders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for split, n in (("train", 4), ("valid", 2)):
        for c in ("x", "y"):
            (src / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(src / split / c / f"{i}.png")
    archive = tmp_path / "split.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(_files_under(src)):
            zf.write(f, str(f.relative_to(src)))
    bundle = D.load_data(archive)
    assert bundle.report.layout == "archive (train/val folders)"
    assert bundle.report.counts["train"].tolist() == [4, 4] and bundle.report.counts["val"].tolist() == [2, 2]


# ---------------------------------------------------------------------------- demo
def test_demo_digits_are_real_png_files_written_once() -> None:
    bundle = D.load_data("demo", val_fraction=0.2, seed=0)
    assert bundle.report.layout == "demo:digits"
    assert bundle.classes == [str(d) for d in range(10)]
    assert bundle.report.counts["total"].tolist() == [60] * 10
    assert bundle.report.counts["val"].tolist() == [12] * 10
    assert bundle.report.skipped.empty
    first = bundle.train[0].path
    with Image.open(first) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (32, 32)
        assert len(np.unique(np.asarray(im))) > 2  # a rendered digit, not a blank square
    mtime = os.stat(first).st_mtime_ns
    small = D.load_data("demo", val_fraction=0, max_per_class=5)
    assert small.report.counts["total"].tolist() == [5] * 10
    assert os.stat(first).st_mtime_ns == mtime
    firsts = sorted(Path(s.path).name for s in small.train if s.label == 3)
    assert firsts == sorted(Path(s.path).name for s in bundle.train + bundle.val if s.label == 3)[:5]


# ---------------------------------------------------------------------------- torchvision
def test_torchvision_dataset_not_downloaded_says_how_to_get_it() -> None:
    with pytest.raises(DataError) as err:
        D.load_data("CIFAR10")
    message = str(err.value)
    assert "download=True" in message and "internet" in message
    assert str(cache_dir("torchvision")) in message
    with pytest.raises(DataError, match="download=True"):
        D.load_data("torchvision:flowers102", root=Path(cache_dir("elsewhere")))


def test_unknown_torchvision_dataset_suggests_names() -> None:
    with pytest.raises(DataError, match="Did you mean CIFAR10"):
        D.load_data("torchvision:CIFAR11")
    assert "CIFAR10" in D.torchvision_names() and "EuroSAT" in D.torchvision_names()


def test_dataset_to_folder_writes_first_images_per_class(tmp_path: Path) -> None:
    ds = torchvision.datasets.FakeData(size=40, image_size=(3, 16, 12), num_classes=3)
    counts = S._dataset_to_folder(ds, tmp_path / "out", ["a", "b", "c"], max_per_class=4)
    assert counts == {"a": 4, "b": 4, "c": 4}
    labels = [int(ds[i][1]) for i in range(len(ds))]
    for k, name in enumerate("abc"):
        files = sorted((tmp_path / "out" / name).iterdir())
        assert [int(f.stem) for f in files] == [i for i, y in enumerate(labels) if y == k][:4]
        with Image.open(files[0]) as im:
            assert im.format == "PNG" and im.size == (12, 16)
    again = S._dataset_to_folder(ds, tmp_path / "out", ["a", "b", "c"], max_per_class=4)
    assert again == counts and len(_files_under(tmp_path / "out")) == 12


def test_file_backed_dataset_is_copied_not_reencoded(image_folder: Path, tmp_path: Path) -> None:
    ds = torchvision.datasets.ImageFolder(str(image_folder))
    counts = S._dataset_to_folder(ds, tmp_path / "copy", ds.classes, max_per_class=2)
    assert counts == {"class_0": 2, "class_1": 2, "class_2": 2}
    copied = sorted((tmp_path / "copy" / "class_1").iterdir())
    assert [f.suffix for f in copied] == [".jpg", ".jpg"]
    assert copied[0].read_bytes() == Path(ds.samples[8][0]).read_bytes()


def test_torchvision_fakedata_end_to_end() -> None:
    bundle = D.load_data("torchvision:FakeData", max_per_class=5)
    assert bundle.report.layout == "torchvision:FakeData"
    assert bundle.classes == ["0", "1", "2", "3"]
    assert bundle.report.counts["train"].tolist() == [5] * 4
    assert 0 < bundle.report.counts["val"].sum() <= 20
    assert all(f"{os.sep}val{os.sep}" in s.path for s in bundle.val)
    again = D.load_data("FakeData", max_per_class=3)
    assert again.report.counts["train"].tolist() == [3] * 4
