"""Bundles and hostile input: damaged or edited files are refused at load with a plain message,
saving never deletes or half-writes anything of the user's.

A bundle's files come from anywhere (a colleague, a download), so every value that sizes
something is bounded, every field has a type, and only plain files inside the bundle are
read. Each refusal is a :class:`ModelError` naming the file (and so the bundle) and the field.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tlwidgets import Session
from tlwidgets.core import bundle_schema
from tlwidgets.core.errors import ModelError, TLWidgetsError

META, WEIGHTS, SPLIT = "tlwidgets.json", "model.safetensors", "split.json"


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Session, Path, str]:
    """A trained session (small network, a hidden layer and dropout in its head), its images, and one image."""
    from tests.conftest import make_image_folder
    from tests.helpers import ready_session

    root = make_image_folder(tmp_path_factory.mktemp("hostile") / "images", classes=3, per_class=4, size=32)
    s = ready_session(root, "shufflenet_v2_x0_5", image_size=32, torch_seed=0)
    s.replace_head(dropout=0.2, hidden=8)
    s.fit(epochs=1, batch_size=8)
    return s, root, str(min(root.rglob("*.jpg")))


@pytest.fixture
def saved(small: tuple[Session, Path, str], tmp_path: Path) -> Path:
    """A fresh bundle folder of the small session."""
    return small[0].save(tmp_path / "bundle")


def _tree(top: Path) -> dict[str, bytes | None]:
    """Every file and folder below ``top`` (relative path -> bytes, None for a folder)."""
    return {
        str(p.relative_to(top)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(top.rglob("*"))
    }


@contextlib.contextmanager
def _edited(path: Path, name: str = META) -> Iterator[Any]:
    """The bundle's ``name`` as parsed JSON; the block's changes are written back (NaN allowed)."""
    holder = [json.loads((path / name).read_text())]
    yield holder
    (path / name).write_text(json.dumps(holder[0]))


def assert_refused(path: Path, *words: str, name: str = META, **load: Any) -> str:
    """Load ``path``; it must fail with a ModelError naming ``path/name`` and every word."""
    with pytest.raises(ModelError) as info:
        Session.load(path, device="cpu", **load)
    message = str(info.value)
    assert f"{path / name}" in message, message
    for word in words:
        assert word in message, message
    return message


@contextlib.contextmanager
def _no_hang(seconds: int = 20) -> Iterator[None]:
    """Fail instead of blocking forever (opening a FIFO blocks until a writer comes)."""

    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------- saving over a bundle
def test_saving_over_a_bundle_keeps_every_other_file_in_and_around_it(small, tmp_path: Path) -> None:
    s, _, image = small
    path = s.save(tmp_path / "bundle")
    (path / "my_notes.txt").write_text("do not lose me")
    (path / "photos" / "sub").mkdir(parents=True)
    (path / "photos" / "a.jpg").write_bytes(b"\xff\xd8 not really a photo")
    (path / "photos" / "sub" / "b.txt").write_text("deeper")
    (tmp_path / "beside.txt").write_text("next to the bundle")
    before = _tree(tmp_path)

    assert s.save(tmp_path / "bundle") == path
    after = _tree(tmp_path)
    assert set(after) == set(before)  # same files and folders, no temporary files left
    own = {f"bundle/{name}" for name in (META, WEIGHTS, SPLIT)}
    assert {k: v for k, v in after.items() if k not in own} == {k: v for k, v in before.items() if k not in own}
    loaded = Session.load(path, device="cpu")
    assert loaded.predict([image])["class"].tolist() == s.predict([image])["class"].tolist()


def test_saving_without_data_over_a_bundle_removes_only_its_old_split(saved: Path, tmp_path: Path) -> None:
    (saved / "my_notes.txt").write_text("mine")
    model_only = Session.load(saved, device="cpu", data=False)
    assert model_only.data is None
    model_only.save(saved)
    assert sorted(p.name for p in saved.iterdir()) == sorted([META, WEIGHTS, "my_notes.txt"])
    assert Session.load(saved, device="cpu").data is None


def test_a_failed_save_leaves_the_old_bundle_whole_and_no_temporary_files(
    small, saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    before = _tree(tmp_path)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(ModelError, match=re.escape(str(saved)) + ".*No space left on device"):
        small[0].save(saved)
    assert _tree(tmp_path) == before
    Session.load(saved, device="cpu")


# ---------------------------------------------------------------------------- unusable save targets
@pytest.mark.parametrize("where", ["proc", "proc-zip", "under-a-file", "deep-under-a-file", "zip-under-a-file"])
def test_saving_where_nothing_can_be_written_is_refused_and_leaves_nothing(small, tmp_path: Path, where: str) -> None:
    (tmp_path / "afile").write_text("a file, not a folder")
    target = {
        "proc": Path("/proc/x"), "proc-zip": Path("/proc/x/model.zip"),
        "under-a-file": tmp_path / "afile" / "sub", "deep-under-a-file": tmp_path / "afile" / "sub" / "deeper",
        "zip-under-a-file": tmp_path / "afile" / "model.zip",
    }[where]
    before = _tree(tmp_path)
    with pytest.raises(ModelError) as info:
        small[0].save(target)
    message = str(info.value)
    assert str(target) in message and "Nothing was written" in message
    if "file" in where:
        assert f"{tmp_path / 'afile'} is a file, not a folder" in message
    else:
        assert "the folder /proc does not accept new files" in message
    assert _tree(tmp_path) == before
    assert not os.path.exists("/proc/x")


def test_saving_into_a_folder_that_refuses_new_files_leaves_nothing(
    small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only folder (simulated: the tests may run as root, which ignores permissions)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    real_open = os.open

    def read_only(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT and str(file).startswith(str(folder)):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    for target in (folder / "model", folder / "model.zip"):
        with pytest.raises(ModelError, match=re.escape(str(target)) + ".*Permission denied.*Nothing was written"):
            small[0].save(target)
    monkeypatch.undo()
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_saving_into_a_read_only_folder_is_refused(small, tmp_path: Path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(ModelError, match="Nothing was written"):
            small[0].save(folder / "model")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(stat.S_IRWXU)


# ---------------------------------------------------------------------------- bounded sizes
def _set(*keys: Any, value: Any) -> Callable[[Any], None]:
    def edit(doc: Any) -> None:
        for key in keys[:-1]:
            doc = doc[key]
        doc[keys[-1]] = value
    return edit


def _drop(*keys: Any) -> Callable[[Any], None]:
    def edit(doc: Any) -> None:
        for key in keys[:-1]:
            doc = doc[key]
        del doc[keys[-1]]
    return edit


def _more_classes(doc: dict) -> None:
    doc["classes"].append("class_3")
    doc["head"]["num_classes"] = 4


META_EDITS = {  # name: (edit, words the message must hold)
    "image size of a million": (_set("transforms", "image_size", value=1_000_000),
                                ["transforms.image_size 1000000 is out of range (32 to 1024)", "save the session again"]),
    "image size 0": (_set("transforms", "image_size", value=0), ["transforms.image_size 0 is out of range"]),
    "image size as text": (_set("transforms", "image_size", value="64"), ["transforms.image_size", "whole number"]),
    "resize of a billion": (_set("transforms", "resize_size", value=10**9), ["transforms.resize_size"]),
    "crop of a billion": (_set("transforms", "input_size", value=10**9), ["transforms.input_size"]),
    "stored spec crop": (_set("model", "spec", "input_size", value=10**9), ["model.spec.input_size"]),
    "num_classes as text": (_set("head", "num_classes", value="abc"), ["head.num_classes", '"abc"']),
    "num_classes 10**12": (_set("head", "num_classes", value=10**12), ["head.num_classes", "out of range (2 to 100000)"]),
    "hidden of a million": (_set("head", "hidden", value=10**6), ["head.hidden", "(1 to 65536)"]),
    "dropout 1": (_set("head", "dropout", value=1.0), ["head.dropout"]),
    "dropout NaN": (_set("head", "dropout", value=float("nan")), ["head.dropout"]),
    "missing classes": (_drop("classes"), ["classes", "missing"]),
    "classes as text": (_set("classes", value="abc"), ["classes"]),
    "a class that is a number": (_set("classes", 0, value=7), ["classes[0]"]),
    "a class name of 100000 letters": (_set("classes", 0, value="x" * 100_000), ["classes[0]", "characters"]),
    "two classes of one name": (_set("classes", 1, value="class_0"), ["classes", "twice"]),
    "classes longer than the head": (_set("classes", value=["a", "b", "c", "d"]), ["classes", "head.num_classes"]),
    "mean as text": (_set("transforms", "mean", value="abc"), ["transforms.mean"]),
    "mean of two": (_set("transforms", "mean", value=[0.5, 0.5]), ["transforms.mean", "3 numbers"]),
    "infinite mean": (_set("transforms", "mean", value=[0.5, float("inf"), 0.5]), ["transforms.mean[1]"]),
    "std of zero": (_set("transforms", "std", value=[0.2, 0.0, 0.2]), ["transforms.std[1]"]),
    "unknown interpolation": (_set("transforms", "interpolation", value="lanczos9"), ["transforms.interpolation"]),
    "history as text": (_set("history", value="abc"), ["history", "table"]),
    "history of strings": (_set("history", "epochs", value=["a", "b"]), ["history.epochs[0]"]),
    "history epoch without number": (_drop("history", "epochs", 0, "epoch"), ["history.epochs[0].epoch"]),
    "history metric as text": (_set("history", "epochs", 0, "val_acc", value="good"), ["history.epochs[0].val_acc"]),
    "history metric 10**400": (_set("history", "batches", 0, "loss", value=10**400), ["history.batches[0].loss"]),
    "runs as text": (_set("runs", value="abc"), ["runs"]),
    "runs of numbers": (_set("runs", value=[1, 2]), ["runs[0]"]),
    "run without id": (_drop("runs", 0, "id"), ["runs[0].id", "missing"]),
    "run without pretrained": (_drop("runs", 0, "pretrained"), ["runs[0].pretrained", "missing"]),
    "run pretrained as a list": (_set("runs", 0, "pretrained", value=[1]), ["runs[0].pretrained"]),
    "run time as text": (_set("runs", 0, "wall_time_s", value="long"), ["runs[0].wall_time_s"]),
    "too many runs": (_set("runs", value=[{}] * 10_001), ["runs", "10001", "10000"]),
    "format_version as text": (_set("format_version", value="1"), ["format_version", "whole number"]),
    "format_version 0": (_set("format_version", value=0), ["format_version"]),
    "model name as a list": (_set("model", "name", value=["resnet18"]), ["model.name"]),
    "model source unknown": (_set("model", "source", value="internet"), ["model.source"]),
    "rotation as text": (_set("augment", "rotation", value="abc"), ["augment.rotation"]),
    "frozen as a number": (_set("frozen", value=3), ["frozen"]),
    "frozen layer unknown": (_set("frozen", value=["no.such.layer"]), ["frozen", "no.such.layer"]),
    "lr factor NaN": (_set("lr_factors", value={"fc": float("nan")}), ["lr_factors"]),
    "config epochs 10**12": (_set("config", "epochs", value=10**12), ["config", "epochs"]),
    "config lr as text": (_set("config", "lr", value="fast"), ["config", "lr"]),
    "config as a list": (_set("config", value=[1]), ["config"]),
    "weights checksum as a number": (_set("weights", "sha256", value=5), ["weights.sha256"]),
    "memory format unknown": (_set("model", "memory_format", value="sideways"), ["model.memory_format"]),
    "head at another place": (_set("head", "path", value="classifier"), ["head"]),
}


@pytest.mark.parametrize("case", list(META_EDITS))
def test_an_edited_metadata_field_is_refused_at_load_naming_file_and_field(saved: Path, case: str) -> None:
    edit, words = META_EDITS[case]
    with _edited(saved) as doc:
        edit(doc[0])
    assert_refused(saved, *words)


def test_classes_and_head_that_agree_but_not_with_the_weights_are_refused_at_load(saved: Path) -> None:
    with _edited(saved) as doc:
        _more_classes(doc[0])
    assert_refused(saved, "head.num_classes 4", "3 outputs")


def test_a_model_name_far_bigger_than_the_weights_is_refused_before_it_is_built(saved: Path) -> None:
    with _edited(saved) as doc:
        doc[0]["model"].update(name="vit_h_14", arch="vit_h_14")  # 632M parameters: 2.5 GB to build
    assert_refused(saved, "vit_h_14", "model.name")


def test_metadata_nested_100000_deep_is_refused(saved: Path) -> None:
    (saved / META).write_text('{"format": "tlwidgets-bundle", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert_refused(saved, "nested")


def test_bundle_zip_with_an_edited_field_is_refused_naming_the_zip(small, tmp_path: Path) -> None:
    path = small[0].save(tmp_path / "model.zip")
    with zipfile.ZipFile(path) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    meta = json.loads(files[META])
    meta["transforms"]["image_size"] = 1_000_000
    files[META] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    assert_refused(path, "transforms.image_size 1000000")


# ---------------------------------------------------------------------------- split.json
SPLIT_EDITS = {
    "a list": (lambda doc: doc.__setitem__(0, [1, 2]), ["split.json", "JSON object"]),
    "no classes": (_drop("classes"), ["classes", "missing"]),
    "train as text": (_set("train", value="abc"), ["train"]),
    "entry not a pair": (_set("train", 0, value="class_0/img_0.jpg"), ["train[0]", "[path, label]"]),
    "entry of three": (_set("train", 0, value=["class_0/img_0.jpg", 0, 1]), ["train[0]"]),
    "label as text": (_set("train", 0, 1, value="0"), ["train[0]"]),
    "label out of range": (_set("val", 0, 1, value=5), ["val[0]", "label 5", "3 classes"]),
    "negative label": (_set("val", 0, 1, value=-1), ["val[0]"]),
    "absolute path": (_set("train", 0, 0, value="/etc/passwd"), ["train[0]", "inside the data folder"]),
    "path up and out": (_set("train", 0, 0, value="../../etc/passwd"), ["train[0]", "inside the data folder"]),
    "path up in the middle": (_set("val", 0, 0, value="class_0/../../x.jpg"), ["val[0]", "inside the data folder"]),
    "windows drive": (_set("val", 0, 0, value="C:\\Windows\\x.jpg"), ["val[0]", "inside the data folder"]),
    "root as a number": (_set("root", value=5), ["root"]),
}


@pytest.mark.parametrize("case", list(SPLIT_EDITS))
def test_an_edited_split_is_refused_at_load_naming_file_and_field(saved: Path, case: str) -> None:
    edit, words = SPLIT_EDITS[case]
    with _edited(saved, SPLIT) as doc:
        edit(doc if case == "a list" else doc[0])
    assert_refused(saved, *words, name=SPLIT)
    assert Session.load(saved, device="cpu", data=False).data is None  # the model alone still opens


def test_a_split_with_more_files_than_allowed_is_refused(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_schema, "MAX_SPLIT_FILES", 5)
    assert_refused(saved, "12 files", "more than 5", name=SPLIT)


# ---------------------------------------------------------------------------- only plain files, of bounded size
def test_metadata_larger_than_the_bound_is_refused_unread(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_schema, "MAX_JSON_BYTES", 1000)
    assert_refused(saved, "more than")


def test_weights_larger_than_the_bound_are_refused_unread(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_schema, "MAX_WEIGHTS_BYTES", 1000)
    assert_refused(saved, "more than", name=WEIGHTS)


def test_zip_members_larger_than_the_bound_are_refused_unread(
    small, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = small[0].save(tmp_path / "model.zip")
    monkeypatch.setattr(bundle_schema, "MAX_JSON_BYTES", 1000)
    assert_refused(path, "more than")


def test_a_zip_listing_many_entries_is_refused_before_they_are_listed(small, tmp_path: Path) -> None:
    path = small[0].save(tmp_path / "model.zip")
    with zipfile.ZipFile(path, "a") as zf:
        for i in range(100):
            zf.writestr(f"extra/{i}.txt", b"")
    with pytest.raises(ModelError, match=re.escape(str(path)) + ".* lists 103 entries"):
        Session.load(path, device="cpu")


def test_saving_a_zip_over_a_folder_of_that_name_is_refused(small, tmp_path: Path) -> None:
    (tmp_path / "model.zip").mkdir()
    with pytest.raises(ModelError, match="is a folder, so a .zip bundle cannot be written there"):
        small[0].save(tmp_path / "model.zip")
    assert list((tmp_path / "model.zip").iterdir()) == []


@pytest.mark.parametrize("name", [META, WEIGHTS, SPLIT])
def test_a_fifo_in_place_of_a_bundle_file_is_refused_without_blocking(saved: Path, name: str) -> None:
    (saved / name).unlink()
    os.mkfifo(saved / name)
    with _no_hang():
        assert_refused(saved, "not a regular file", name=name)


@pytest.mark.parametrize("name", [META, WEIGHTS, SPLIT])
def test_a_link_out_of_the_bundle_is_refused(saved: Path, tmp_path: Path, name: str) -> None:
    outside = tmp_path / f"outside-{name}"
    shutil.move(saved / name, outside)
    (saved / name).symlink_to(outside)
    assert_refused(saved, "outside the bundle", name=name)


def test_a_link_to_a_device_is_refused(saved: Path) -> None:
    (saved / WEIGHTS).unlink()
    (saved / WEIGHTS).symlink_to("/dev/zero")
    with _no_hang():
        assert_refused(saved, name=WEIGHTS)


def test_a_link_inside_the_bundle_is_followed(saved: Path, small) -> None:
    (saved / "real.safetensors").write_bytes((saved / WEIGHTS).read_bytes())
    (saved / WEIGHTS).unlink()
    (saved / WEIGHTS).symlink_to("real.safetensors")
    frame = Session.load(saved, device="cpu").predict([small[2]])
    assert len(frame) > 0 and frame["probability"].between(0, 1).all()


# ---------------------------------------------------------------------------- fuzz
_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, -1, 16, 1024, 10**6, 10**12, 2**63, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 0.5, 1.0, 0.0]),
    st.text(max_size=20),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "", "abc", "../x.jpg", "/etc/passwd", "fc", "bilinear",
                     "channels_last", "resnet18", "vit_h_14", "squeezenet1_1", "packaged", "checkpoint"]),
)
_VALUES = st.recursive(
    _LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def _random_edit(draw: Callable[..., Any], doc: Any) -> Any:
    """``doc`` with one value deleted or replaced, at a path chosen level by level."""
    holder = [doc]
    parent: Any = holder
    key: Any = 0
    while isinstance(parent[key], (dict, list)) and parent[key] and (parent is holder or draw(st.booleans())):
        node = parent[key]
        parent, key = node, draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
    if parent is not holder and draw(st.booleans()):
        del parent[key]
    else:
        parent[key] = draw(_VALUES)
    return holder[0]


@pytest.fixture(scope="module")
def fuzz_bundle(small, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    path = small[0].save(tmp_path_factory.mktemp("fuzz") / "bundle")
    return path, json.loads((path / META).read_text()), json.loads((path / SPLIT).read_text())


@settings(max_examples=int(os.environ.get("TLWIDGETS_FUZZ_EXAMPLES", "80")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_edited_bundles_load_and_predict_or_are_refused_naming_the_bundle(fuzz_bundle, small, data) -> None:
    path, meta, split = fuzz_bundle
    meta, split = json.loads(json.dumps(meta)), json.loads(json.dumps(split))
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        if data.draw(st.integers(0, 4), label="file") == 0:
            split = _random_edit(data.draw, split)
        else:
            meta = _random_edit(data.draw, meta)
    (path / META).write_text(json.dumps(meta))
    (path / SPLIT).write_text(json.dumps(split))
    try:
        loaded = Session.load(path, device="cpu")
    except TLWidgetsError as exc:
        assert str(path) in str(exc), str(exc)
        return
    table = loaded.predict([small[2]])
    assert set(table["class"]) <= set(loaded.classes)
