"""Bundles: a saved session opens again identically, and never runs code from its files."""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tlwidgets import Session
from tlwidgets.core import bundle
from tlwidgets.core.errors import BusyError, ModelError


class _Payload:
    """Unpickling this writes a marker file: what a malicious weights file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (pathlib.Path.write_text, (pathlib.Path(self.marker), "code ran"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Session, Path]:
    from tests.conftest import make_image_folder

    root = make_image_folder(tmp_path_factory.mktemp("bundle") / "images")
    s = Session(device="cpu", image_size=64)
    s.load_model("mobilenet_v3_small", pretrained=False)
    s.load_data(root, val_fraction=0.25, seed=0)
    s.set_augment(flip=True, rotation=5)
    s.replace_head(dropout=0.2, hidden=16)
    s.freeze_up_to("features.3")
    s.set_lr_factor("features.6", 0.5)
    s.fit(epochs=1, batch_size=8, optimizer="adamw", schedule="cosine", label_smoothing=0.1)
    s.fit(epochs=1, batch_size=8)  # a continued history: two fits, epochs 1 and 2
    return s, root


@contextlib.contextmanager
def _edited_meta(path: Path) -> Iterator[dict]:
    """The bundle's ``tlwidgets.json`` as a dict; what the block changes in it is written back."""
    meta = json.loads((path / "tlwidgets.json").read_text())
    yield meta
    (path / "tlwidgets.json").write_text(json.dumps(meta))


def _images(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*.jpg"))


def test_round_trip_predicts_bit_for_bit_and_keeps_metadata(trained, tmp_path: Path) -> None:
    s, root = trained
    path = s.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "split.json", "tlwidgets.json"]
    loaded = Session.load(path, device="cpu")
    images = _images(root)
    a, b = s.predict(images, k=3), loaded.predict(images, k=3)
    assert a["class"].tolist() == b["class"].tolist()
    assert (a["probability"].to_numpy() == b["probability"].to_numpy()).all()  # bit for bit
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(s.model.eval()(x), loaded.model.eval()(x))
    assert loaded.classes == s.classes == ("class_0", "class_1", "class_2")
    assert loaded.head == s.head and loaded.head.hidden == 16 and loaded.head.dropout == 0.2
    assert loaded.frozen == s.frozen and "features.3.block.0.0" in loaded.frozen
    assert loaded.lr_factors == {"features.6": 0.5}
    assert loaded.config == s.config
    assert loaded.augment == s.augment and loaded.image_size == 64
    assert loaded.spec.name == "mobilenet_v3_small" and loaded.pretrained is False
    assert [e["epoch"] for e in loaded.history.epochs] == [1, 2]
    assert loaded.history.epochs == s.history.epochs
    assert loaded.history.batches == s.history.batches
    assert loaded.trainable_params() == s.trainable_params()
    assert [sm.path for sm in loaded.data.val] == [sm.path for sm in s.data.val]
    assert [sm.path for sm in loaded.data.train] == [sm.path for sm in s.data.train]
    assert loaded.continues_history


def test_loaded_session_keeps_training_and_evaluates(trained, tmp_path: Path) -> None:
    s, _ = trained
    loaded = Session.load(s.save(tmp_path / "model"), device="cpu")
    assert loaded.evaluate().accuracy == pytest.approx(s.evaluate().accuracy)
    history = loaded.fit(epochs=1, batch_size=8)
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3]


def test_zip_bundle_round_trip_and_overwrite(trained, tmp_path: Path) -> None:
    s, root = trained
    path = s.save(tmp_path / "model.zip")
    assert path.is_file()
    path = s.save(tmp_path / "model.zip")  # replacing a bundle is fine
    loaded = Session.load(path, device="cpu")
    images = _images(root)[:4]
    assert s.predict(images).equals(loaded.predict(images))
    meta = bundle.read_metadata(path)
    assert meta["format"] == "tlwidgets-bundle" and meta["format_version"] == 1
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["model"]["memory_format"] in ("channels_last", "contiguous")


def test_missing_data_folder_still_predicts(trained, tmp_path: Path) -> None:
    _, root = trained
    data = tmp_path / "data"
    shutil.copytree(root, data)
    copy = Session(device="cpu", image_size=64)
    copy.load_model("mobilenet_v3_small", pretrained=False)
    copy.load_data(data, val_fraction=0.25)
    copy.replace_head()
    path = copy.save(tmp_path / "model")
    shutil.rmtree(data)
    loaded = Session.load(path, device="cpu")
    assert loaded.data is None
    assert "not found" in loaded.message
    images = _images(root)[:3]
    assert copy_predictions_equal(copy, loaded, images)
    assert set(loaded.predict(images)["class"]) <= set(loaded.classes)
    moved = Session.load(path, device="cpu", data=root)  # the data's new place
    assert len(moved.data.val) == len(copy.data.val)
    assert [Path(p.path).name for p in moved.data.val] == [Path(p.path).name for p in copy.data.val]


def copy_predictions_equal(a: Session, b: Session, images: list[str]) -> bool:
    pa, pb = a.predict(images), b.predict(images)
    return pa["class"].tolist() == pb["class"].tolist() and (pa["probability"] == pb["probability"]).all()


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickled_weights_are_refused_and_never_run(trained, tmp_path: Path, how: str) -> None:
    s, _ = trained
    path = s.save(tmp_path / "model")
    marker = tmp_path / "marker.txt"
    probe = tmp_path / "probe.txt"
    pickle.loads(pickle.dumps(_Payload(probe)))  # the payload is live: unpickling runs it
    assert probe.read_text() == "code ran"
    weights = path / "model.safetensors"
    if how == "pickle":
        weights.write_bytes(pickle.dumps({"classifier.3.out.weight": _Payload(marker)}))
    else:
        torch.save({"state_dict": _Payload(marker)}, weights)
    with pytest.raises(ModelError, match="SHA-256"):
        Session.load(path, device="cpu")
    with _edited_meta(path) as meta:
        meta["weights"].pop("sha256")  # an attacker can rewrite the checksum too
    with pytest.raises(ModelError, match="not a safetensors file.*never opened"):
        Session.load(path, device="cpu")
    assert not marker.exists()


def test_weights_file_must_be_safetensors_inside_the_bundle(trained, tmp_path: Path) -> None:
    s, _ = trained
    path = s.save(tmp_path / "model")
    marker = tmp_path / "marker.txt"
    (path / "model.pt").write_bytes(pickle.dumps(_Payload(marker)))
    for name in ("model.pt", "../model.safetensors"):
        with _edited_meta(path) as meta:
            meta["weights"]["file"] = name
        with pytest.raises(ModelError, match="only as a .safetensors file"):
            Session.load(path, device="cpu")
    assert not marker.exists()


def test_bad_bundles_and_targets_give_clear_errors(trained, tmp_path: Path) -> None:
    s, _ = trained
    with pytest.raises(ModelError, match="does not exist"):
        Session.load(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not a tlwidgets bundle"):
        Session.load(tmp_path / "plain")
    with pytest.raises(ModelError, match="refusing to overwrite"):
        s.save(tmp_path / "plain")
    assert (tmp_path / "plain" / "notes.txt").read_text() == "mine"
    path = s.save(tmp_path / "model")
    with _edited_meta(path) as meta:
        meta["format_version"] = 99
    with pytest.raises(ModelError, match="upgrade tlwidgets"):
        Session.load(path)
    (path / "tlwidgets.json").write_text("{broken")
    with pytest.raises(ModelError, match="not valid JSON"):
        Session.load(path)
    with pytest.raises(ModelError, match="load a model"):
        Session(device="cpu").save(tmp_path / "empty")


def test_save_is_refused_while_training(trained, tmp_path: Path) -> None:
    s, _ = trained
    s.status = "training"
    try:
        with pytest.raises(BusyError):
            s.save(tmp_path / "model")
    finally:
        s.status = "idle"
    assert not (tmp_path / "model").exists()


def test_timm_model_without_validation_split(tmp_path: Path) -> None:
    from tests.conftest import make_image_folder

    root = make_image_folder(tmp_path / "images", classes=2, per_class=4)
    s = Session(device="cpu", image_size=64)
    s.load_model("efficientnet_lite0", pretrained=False)
    s.load_data(root, val_fraction=0)
    s.replace_head()
    s.freeze_backbone()
    s.fit(epochs=1, batch_size=4)
    assert math.isnan(s.history.epochs[0]["val_acc"])
    loaded = Session.load(s.save(tmp_path / "lite0"), device="cpu")
    assert math.isnan(loaded.history.epochs[0]["val_acc"])
    assert loaded.spec.source == "packaged" and loaded.head.path == s.head.path
    images = _images(root)
    assert copy_predictions_equal(s, loaded, images)


def test_non_finite_metrics_are_strict_json_and_come_back_as_floats(trained: tuple[Session, Path], tmp_path: Path) -> None:
    s, _ = trained
    kept = s.history
    history = type(kept)(
        batches=[dict(b) for b in kept.batches], epochs=[dict(e) for e in kept.epochs],
        stopped=kept.stopped, config=dict(kept.config),
    )
    history.batches[0]["loss"] = math.nan  # what a diverged step logs
    history.epochs[0]["val_loss"] = math.inf
    history.epochs[-1]["val_loss"] = -math.inf
    s.history = history
    try:
        path = s.save(tmp_path / "diverged")
    finally:
        s.history = kept

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON number {token}")

    text = (path / "tlwidgets.json").read_text()
    meta = json.loads(text, parse_constant=refuse)  # strict JSON: any JSON parser reads it
    assert meta["history"]["batches"][0]["loss"] == "NaN"
    assert [meta["history"]["epochs"][0]["val_loss"], meta["history"]["epochs"][-1]["val_loss"]] == [
        "Infinity", "-Infinity",
    ]
    back = Session.load(path, data=False).history
    assert math.isnan(back.batches[0]["loss"])
    assert back.epochs[0]["val_loss"] == math.inf and back.epochs[-1]["val_loss"] == -math.inf
    assert back.batches[1:] == history.batches[1:]
    assert [e["val_acc"] for e in back.epochs] == [e["val_acc"] for e in history.epochs]


def test_runs_survive_save_and_load_and_the_next_fit_continues_the_last(
    trained: tuple[Session, Path], tmp_path: Path
) -> None:
    s, _ = trained
    assert [r.id for r in s.runs] == [1, 2] and s.runs[1].continues == 1
    path = s.save(tmp_path / "with-runs")
    meta = json.loads((path / "tlwidgets.json").read_text())
    assert [r["id"] for r in meta["runs"]] == [1, 2]

    loaded = Session.load(path, device="cpu")
    for before, after in zip(s.runs, loaded.runs, strict=True):
        assert (after.id, after.model, after.pretrained, after.frozen, after.trained, after.continues) == (
            before.id, before.model, before.pretrained, before.frozen, before.trained, before.continues)
        assert after.options == before.options and after.head == before.head
        assert after.history.epochs == before.history.epochs and after.history.batches == before.history.batches
        assert after.wall_time_s == pytest.approx(before.wall_time_s)
        assert after.started.replace(microsecond=0) == before.started.replace(microsecond=0)
    assert list(loaded.runs_frame()["label"]) == list(s.runs_frame()["label"])

    loaded.fit(epochs=1, batch_size=8)
    third = loaded.runs[-1]
    assert third.id == 3 and third.continues == 2 and third.first_epoch == 2
