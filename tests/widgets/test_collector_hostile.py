"""DataCollector on hostile input: no class name, path or upload name reaches outside its folder.

Every test lays out the same ground in ``tmp_path``: the collector's folder ``my_images``
and, next to it, a ``victim`` folder (pictures, a hidden sub-folder, a text file) and a few
other folders a bad name could point at. Each test records every file, folder and link
(hidden ones included) outside and inside the collector's folder before the call, and
checks after it that outside nothing changed and inside exactly the expected change happened.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from tlwidgets.core.errors import DataError
from tlwidgets.core.session import Session
from tlwidgets.widgets._image_folder import ImageFolderStore, check_class_name, safe_file_name
from tlwidgets.widgets.data_collector import DataCollector

ROOT = "my_images"


def _png(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="PNG")
    return buf.getvalue()


def _tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``, hidden ones included, links not followed.

    Keys are paths relative to ``folder`` (folders end in ``/``, links in ``@``); values
    are a content hash for files, the target for links, ``"dir"`` for folders.
    """
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                out[rel + "@"] = os.readlink(path)
            elif path.is_dir():
                out[rel + "/"] = "dir"
            else:
                out[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def _outside(tmp_path: Path) -> dict[str, str]:
    return {k: v for k, v in _tree(tmp_path).items() if k != ROOT + "/" and not k.startswith(ROOT + "/")}


class Ground:
    """The collector, its folder and the snapshots taken before the hostile call."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        root = tmp_path / ROOT
        (root / "cats" / ".thumbnails").mkdir(parents=True)
        (root / "cats" / "c1.png").write_bytes(_png())
        (root / "cats" / "c2.png").write_bytes(_png((10, 10, 200)))
        (root / "cats" / "notes.txt").write_text("my notes")
        (root / "cats" / ".thumbnails" / "c1.png").write_bytes(_png())
        (root / "dogs").mkdir()
        (root / "dogs" / "d1.png").write_bytes(_png((10, 200, 10)))
        (root / ".cache").mkdir()
        (root / ".cache" / "x.png").write_bytes(_png())

        victim = tmp_path / "victim"
        (victim / ".hidden").mkdir(parents=True)
        (victim / "a.png").write_bytes(_png())
        (victim / "b.jpg").write_bytes(_png())
        (victim / "readme.txt").write_text("keep me")
        (victim / ".hidden" / "h.png").write_bytes(_png())
        (tmp_path / "outside").mkdir()
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "e.png").write_bytes(_png())
        self.root = root
        self.victim = victim

    def open(self) -> DataCollector:
        self.dc = DataCollector(Session(device="cpu"), folder=self.root, camera=False)
        assert self.dc.last_error == ""
        self.before_outside = _outside(self.tmp)
        self.before_inside = _tree(self.root)
        return self.dc

    def assert_outside_unchanged(self) -> None:
        assert _outside(self.tmp) == self.before_outside

    def assert_inside(self, expected: set[str] | None = None) -> None:
        """Inside is exactly ``expected`` (default: as before the call, contents included)."""
        if expected is None:
            assert _tree(self.root) == self.before_inside
        else:
            assert set(_tree(self.root)) == expected


BEFORE_INSIDE = {
    ".cache/", ".cache/x.png",
    "cats/", "cats/.thumbnails/", "cats/.thumbnails/c1.png", "cats/c1.png", "cats/c2.png", "cats/notes.txt",
    "dogs/", "dogs/d1.png",
}  # fmt: skip


@pytest.fixture
def ground(tmp_path: Path) -> Ground:
    g = Ground(tmp_path)
    yield g
    if hasattr(g, "dc"):
        g.dc.close()


def _refused(dc: DataCollector, *words: str) -> None:
    """The last call failed with a DataError (a plain message, not a crash) naming ``words``."""
    assert dc.last_error, "the call was not refused"
    assert not dc.last_error.split(":")[0].endswith("Error"), dc.last_error  # no exception type: a DataError
    for word in words:
        assert word in dc.last_error, dc.last_error


# ---------------------------------------------------------------------------- add_images
@pytest.mark.parametrize("bad", ["../outside", "../victim", "cats/../../victim", "..", ".", "cats/.thumbnails"])
def test_add_images_to_relative_path_class_is_refused(ground: Ground, bad: str) -> None:
    dc = ground.open()
    assert dc.add_images([("new.png", _png())], class_name=bad) is None
    _refused(dc, repr(bad), "Choose another name")
    ground.assert_outside_unchanged()
    ground.assert_inside()


def test_add_images_to_absolute_class_is_refused(ground: Ground) -> None:
    dc = ground.open()
    for bad in (str(ground.victim), str(ground.tmp / "outside"), os.path.join(os.sep, "tmp")):
        assert dc.add_images([("new.png", _png())], class_name=bad) is None
        _refused(dc, repr(bad), "not allowed")
    ground.assert_outside_unchanged()
    ground.assert_inside()


def test_add_images_to_hidden_or_unknown_class_is_refused(ground: Ground) -> None:
    dc = ground.open()
    dc.add_images([("new.png", _png())], class_name=".cache")  # a real, but hidden, sub-folder
    _refused(dc, "'.cache'", "hidden")
    dc.add_images([("new.png", _png())], class_name="birds")  # no such class: not created on the fly
    _refused(dc, "'birds'", "cats, dogs")
    dc.add_images([("new.png", _png())], class_name="")
    _refused(dc, "class name")
    ground.assert_outside_unchanged()
    ground.assert_inside()


def test_symlinked_class_folder_is_not_a_class(ground: Ground) -> None:
    (ground.root / "link").symlink_to(ground.victim, target_is_directory=True)
    (ground.root / "dogs" / "dlink.png").symlink_to(ground.victim / "a.png")
    dc = ground.open()
    assert dc.classes == ["cats", "dogs"]  # neither listed nor read
    assert dc.shown_files() == {"cats": ["c1.png", "c2.png"], "dogs": ["d1.png"]}
    dc.add_images([("new.png", _png())], class_name="link")
    _refused(dc, "'link'", "link")
    dc.delete_class("link", confirm=True)
    _refused(dc, "'link'")
    dc.rename_class("link", "moved")
    _refused(dc, "'link'")
    dc.delete_image(ground.root / "link" / "a.png")
    _refused(dc, "a.png")
    dc.delete_image(ground.root / "dogs" / "dlink.png")
    _refused(dc, "dlink.png")
    ground.assert_outside_unchanged()
    ground.assert_inside(BEFORE_INSIDE | {"link@", "dogs/dlink.png@"})


# ---------------------------------------------------------------------------- upload names
def test_upload_file_names_are_reduced_to_safe_base_names(ground: Ground) -> None:
    dc = ground.open()
    names = ["../../x.png", "/etc/passwd", "..\\..\\y.png", "C:\\Windows\\win.png", ".hidden.png", "",
             "...", "cats/..", "\x00evil.png", "\U00020000" * 100 + ".png", "../victim/a.png"]  # fmt: skip
    saved = dc.add_images([(n, _png()) for n in names], class_name="cats")
    assert dc.last_error == "" and len(saved) == len(names)
    assert all(p.parent == ground.root / "cats" for p in saved)
    ground.assert_outside_unchanged()
    new = {"x.png", "passwd.png", "y.png", "win.png", "hidden.png", "image.png", "image_1.png", "image_2.png",
           "evil.png", "\U00020000" * 50 + ".png", "a.png"}  # fmt: skip
    ground.assert_inside(BEFORE_INSIDE | {f"cats/{n}" for n in new})
    for name in new:
        assert len(os.fsencode(name)) <= 255


@pytest.mark.parametrize("name", ["../../x.jpg", "/etc/passwd", "a/.b", "..", "", "\\\\server\\share\\z.png",
                                  "\U00020000" * 300])  # fmt: skip
def test_safe_file_name_is_one_visible_component(name: str) -> None:
    clean = safe_file_name(name, ".png")
    assert clean == os.path.basename(clean) and "\\" not in clean and "\x00" not in clean
    assert clean and not clean.startswith(".") and len(os.fsencode(clean)) <= 255


def test_upload_never_writes_through_a_link_in_the_class_folder(ground: Ground) -> None:
    (ground.root / "cats" / "trap.png").symlink_to(ground.victim / "a.png")
    dc = ground.open()
    saved = dc.add_images([("trap.png", _png((1, 2, 3)))], class_name="cats")
    assert dc.last_error == "" and [p.name for p in saved] == ["trap_1.png"]
    ground.assert_outside_unchanged()
    ground.assert_inside(BEFORE_INSIDE | {"cats/trap.png@", "cats/trap_1.png"})


# ---------------------------------------------------------------------------- delete_class
@pytest.mark.parametrize("bad", ["../victim", "cats/../../victim", "..", "cats/.thumbnails", ".cache"])
def test_delete_class_outside_or_hidden_is_refused(ground: Ground, bad: str) -> None:
    dc = ground.open()
    assert dc.delete_class(bad, confirm=True) is None
    _refused(dc, repr(bad))
    ground.assert_outside_unchanged()
    ground.assert_inside()


def test_delete_class_by_absolute_path_is_refused(ground: Ground) -> None:
    dc = ground.open()
    for bad in (str(ground.victim), str(ground.root / "cats")):
        assert dc.delete_class(bad, confirm=True) is None
        _refused(dc, repr(bad), "not allowed")
    ground.assert_outside_unchanged()
    ground.assert_inside()


def test_delete_class_keeps_hidden_and_other_files(ground: Ground) -> None:
    dc = ground.open()
    assert dc.delete_class("cats", confirm=True) == 2
    assert dc.last_error == ""
    assert "kept 2 other files in 'cats': .thumbnails/, notes.txt" in html.unescape(dc.status.value)
    ground.assert_outside_unchanged()
    ground.assert_inside(BEFORE_INSIDE - {"cats/c1.png", "cats/c2.png"})  # the folder stays: not empty


def test_delete_class_removes_the_folder_when_only_pictures_were_in_it(ground: Ground) -> None:
    dc = ground.open()
    assert dc.delete_class("dogs", confirm=True) == 1
    assert dc.last_error == "" and "kept" not in dc.status.value and dc.classes == ["cats"]
    ground.assert_outside_unchanged()
    ground.assert_inside(BEFORE_INSIDE - {"dogs/", "dogs/d1.png"})


def test_delete_class_with_a_link_inside_deletes_neither_link_nor_target(ground: Ground) -> None:
    (ground.root / "dogs" / "dlink.png").symlink_to(ground.victim / "a.png")
    (ground.root / "dogs" / "dir_link").symlink_to(ground.victim, target_is_directory=True)
    dc = ground.open()
    assert dc.delete_class("dogs", confirm=True) == 1
    assert "kept 2 other files in 'dogs': dir_link, dlink.png" in html.unescape(dc.status.value)
    ground.assert_outside_unchanged()
    ground.assert_inside(BEFORE_INSIDE - {"dogs/d1.png"} | {"dogs/dlink.png@", "dogs/dir_link@"})


# ---------------------------------------------------------------------------- rename_class
@pytest.mark.parametrize("bad", ["../elsewhere", str(Path("..") / "victim"), "..", ".cache"])
def test_rename_class_from_outside_or_hidden_is_refused(ground: Ground, bad: str) -> None:
    dc = ground.open()
    assert dc.rename_class(bad, "x") is None
    _refused(dc, repr(bad))
    ground.assert_outside_unchanged()
    ground.assert_inside()


def test_rename_class_from_absolute_path_is_refused(ground: Ground) -> None:
    dc = ground.open()
    assert dc.rename_class(str(ground.tmp / "elsewhere"), "x") is None
    _refused(dc, "elsewhere", "not allowed")
    ground.assert_outside_unchanged()
    ground.assert_inside()


@pytest.mark.parametrize("bad", ["../moved", "/tmp/moved", "sub/moved", ".moved", "..", "a\x00b", "\U00020000" * 70])
def test_rename_class_to_a_bad_name_is_refused(ground: Ground, bad: str) -> None:
    dc = ground.open()
    assert dc.rename_class("cats", bad) is None
    _refused(dc, "Choose another name")
    ground.assert_outside_unchanged()
    ground.assert_inside()


def test_rename_class_onto_a_file_or_link_is_refused(ground: Ground) -> None:
    (ground.root / "taken.txt").write_text("a file, not a class")
    (ground.root / "link").symlink_to(ground.tmp / "outside", target_is_directory=True)
    dc = ground.open()
    for target in ("taken.txt", "link"):
        dc.rename_class("cats", target)
        _refused(dc, repr(target), "already")
    ground.assert_outside_unchanged()
    ground.assert_inside(BEFORE_INSIDE | {"taken.txt", "link@"})


# ---------------------------------------------------------------------------- create_class, refresh
@pytest.mark.parametrize("bad", ["../outside", "/tmp/newclass", "a\\b", "a\x00b", ".hidden", "\U00020000" * 70,
                                 "C:evil"])  # fmt: skip
def test_create_class_with_a_bad_name_is_refused(ground: Ground, bad: str) -> None:
    dc = ground.open()
    assert dc.create_class(bad) is None
    _refused(dc, "Choose another name")
    ground.assert_outside_unchanged()
    ground.assert_inside()


def test_create_class_over_a_file_or_link_is_refused(ground: Ground) -> None:
    (ground.root / "taken").write_text("a file")
    (ground.root / "link").symlink_to(ground.victim, target_is_directory=True)
    dc = ground.open()
    for name in ("taken", "link"):
        dc.create_class(name)
        _refused(dc, repr(name), "already")
    ground.assert_outside_unchanged()
    ground.assert_inside(BEFORE_INSIDE | {"taken", "link@"})


def test_refresh_select_goes_through_the_class_check(ground: Ground) -> None:
    dc = ground.open()
    dc.class_choice.value = "dogs"
    dc.refresh(select="../victim")
    _refused(dc, "'../victim'")
    assert dc.class_choice.value == "dogs"
    dc.refresh(select="cats")
    assert dc.class_choice.value == "cats"
    ground.assert_outside_unchanged()
    ground.assert_inside()


# ---------------------------------------------------------------------------- delete_image
def test_delete_image_outside_a_class_is_refused(ground: Ground) -> None:
    dc = ground.open()
    (ground.root / "stray.png").write_bytes(_png())
    ground.before_inside = _tree(ground.root)
    bad = [
        ground.victim / "a.png",  # outside
        ground.root / "cats" / ".." / ".." / "victim" / "a.png",  # escapes with '..'
        ground.root / "cats" / "notes.txt",  # not a picture
        ground.root / "cats" / ".thumbnails" / "c1.png",  # in a hidden sub-folder
        ground.root / ".cache" / "x.png",  # in a hidden folder of the root
        ground.root / "stray.png",  # in no class
        ground.root / "cats",  # a class, not a picture
        Path(os.path.relpath(ground.victim / "a.png")),  # relative to the working folder
    ]
    for path in bad:
        dc.delete_image(path)
        _refused(dc, "nothing deleted")
    ground.assert_outside_unchanged()
    ground.assert_inside()
    dc.delete_image(ground.root / "cats" / "c1.png")
    assert dc.last_error == ""
    ground.assert_inside(set(ground.before_inside) - {"cats/c1.png"})


# ---------------------------------------------------------------------------- the one check
def test_store_methods_share_one_class_check(tmp_path: Path) -> None:
    store = ImageFolderStore(tmp_path / ROOT)
    store.add_class("cats")
    for bad in ("../x", "/abs", "a/b", "a\\b", "", "  ", ".", "..", ".h", "a\x00b", "x" * 256):
        with pytest.raises(DataError):
            check_class_name(bad)
        calls = [(store.images, (bad,)), (store.add_image, (bad, _png())), (store.remove_class, (bad, True)),
                 (store.rename_class, (bad, "y")), (store.rename_class, ("cats", bad)),
                 (store.add_class, (bad,))]  # fmt: skip
        for method, args in calls:
            with pytest.raises(DataError):
                method(*args)
    assert check_class_name(" cats ") == "cats"
    assert set(_tree(tmp_path)) == {f"{ROOT}/", f"{ROOT}/cats/"}
