"""The Session ties the engine together; observers see every change."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from tests.conftest import make_image_folder
from tests.helpers import loaded_session
from tlwidgets import Session
from tlwidgets.core.errors import BusyError, DataError, ModelError


@pytest.fixture
def session(image_folder: Path) -> Session:
    return loaded_session(image_folder, "mobilenet_v3_small", image_size=64)


def _record(s: Session) -> list[str]:
    seen: list[str] = []
    s.observe(lambda change: seen.append(change["name"]), names=traitlets_all(s))
    return seen


def traitlets_all(s: Session) -> list[str]:
    return [
        "spec", "model", "model_version", "data", "data_version", "classes", "frozen", "lr_factors",
        "head", "config", "augment", "history", "last_eval", "status",
    ]


def test_observers_fire_on_every_change(image_folder: Path) -> None:
    s = Session(device="cpu", image_size=64)
    seen = _record(s)
    s.load_model("mobilenet_v3_small", pretrained=False)
    assert {"spec", "model", "model_version", "head"} <= set(seen)
    seen.clear()
    s.load_data(image_folder)
    assert {"data", "data_version"} <= set(seen)
    seen.clear()
    s.replace_head()
    assert {"head", "classes", "model_version"} <= set(seen)
    seen.clear()
    s.freeze_backbone()
    assert "frozen" in seen
    seen.clear()
    s.set_augment(flip=True)
    assert "augment" in seen
    seen.clear()
    s.fit(epochs=1, batch_size=8)
    assert {"status", "history", "model_version"} <= set(seen)
    assert seen.count("status") == 2  # training, then idle


def test_replace_head_takes_classes_from_data(session: Session) -> None:
    spec = session.replace_head()
    assert spec.num_classes == 3
    assert session.classes == ("class_0", "class_1", "class_2")
    out = session.model.eval()(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 3)


def test_fit_requires_matching_head(session: Session) -> None:
    with pytest.raises(ModelError, match="replace_head"):
        session.fit(epochs=1)
    assert session.history is None and session.status == "idle"


def test_readiness_names_what_is_missing_for_the_data_or_given_classes(image_folder: Path) -> None:
    s = Session(device="cpu", image_size=64)
    assert s.readiness() == "Load a model first."
    assert s.readiness(classes=["a", "b"]) == "Load a model first."
    s.load_model("mobilenet_v3_small", pretrained=False)
    assert s.readiness() == "Load images first."
    mismatch = s.readiness(classes=["a", "b"])  # no data needed when the classes are given
    assert mismatch.startswith("The head predicts 1000 classes but there are 2 (a, b)")
    s.load_data(image_folder)
    assert "but the data has 3 (class_0, class_1, class_2)" in s.readiness()
    s.replace_head()
    assert s.readiness() is None and s.readiness(classes=["class_0", "class_1", "class_2"]) is None
    assert "not these classes" in s.readiness(classes=["x", "y", "z"])
    s.freeze_backbone()
    s.freeze(s.head.path)
    assert "Every layer is frozen" in s.readiness()
    assert s.readiness(require_trainable=False) is None


def test_fit_continues_history_and_evaluate_predict(session: Session, image_folder: Path) -> None:
    session.replace_head()
    session.freeze_backbone()
    trainable, total = session.trainable_params()
    assert 0 < trainable < total
    first = session.fit(epochs=1, batch_size=8)
    assert len(first.epochs) == 1
    again = session.fit(epochs=2, batch_size=8)
    assert [e["epoch"] for e in again.epochs] == [1, 2, 3]
    result = session.evaluate()
    assert result.confusion.to_numpy().sum() == len(session.data.val)
    held_out = session.evaluate(image_folder)  # a folder with the same class names
    assert held_out.confusion.to_numpy().sum() == 24
    preds = session.predict(sorted(image_folder.glob("class_0/*.jpg"))[:2], k=2)
    assert len(preds) == 4 and set(preds["class"]) <= set(session.classes)


def test_new_head_resets_history(session: Session) -> None:
    session.replace_head()
    session.fit(epochs=1, batch_size=8)
    assert session.history is not None
    session.replace_head(dropout=0.2)
    assert session.history is None


def test_bad_inputs_keep_what_the_user_had(session: Session, tmp_path: Path) -> None:
    session.replace_head()
    model, data = session.model, session.data
    with pytest.raises(ModelError, match="resnet18"):
        session.load_model("resnt18")
    one_class = make_image_folder(tmp_path / "one", classes=1)
    with pytest.raises(DataError):
        session.load_data(one_class)
    with pytest.raises(ModelError, match="num_classes=1"):
        session.replace_head(num_classes=1)
    assert session.model is model and session.data is data and session.head.num_classes == 3


def test_changes_refused_while_training(session: Session) -> None:
    session.replace_head()
    started, release = threading.Event(), threading.Event()

    def hold(logs: dict) -> None:
        started.set()
        release.wait(10)

    session.on_batch_end(hold)
    worker = threading.Thread(target=session.fit, kwargs={"epochs": 3, "batch_size": 4})
    worker.start()
    assert started.wait(30)
    with pytest.raises(BusyError, match="Stop"):
        session.load_model("resnet18", pretrained=False)
    with pytest.raises(BusyError):
        session.fit(epochs=1)
    session.request_stop()
    assert session.status == "stopping"
    release.set()
    session.on_batch_end(hold, remove=True)
    worker.join(30)
    assert session.status == "idle" and session.history.stopped
    assert session.spec.name == "mobilenet_v3_small"


@pytest.mark.slow
def test_transfer_beats_scratch_on_real_photos(flowers_dir: Path) -> None:
    """Pretrained Lite0 with a frozen backbone learns flowers; the same net from scratch does not."""
    results = {}
    for pretrained in (True, False):
        s = Session(device="cpu")
        s.load_model("efficientnet_lite0", pretrained=pretrained)
        s.load_data(flowers_dir, val_fraction=0.2, seed=0)
        s.replace_head()
        if pretrained:
            s.freeze_backbone()
        history = s.fit(epochs=5, batch_size=32, lr=1e-3 if not pretrained else 3e-3, seed=0)
        assert len(history.epochs) <= 5
        results[pretrained] = max(e["val_acc"] for e in history.epochs)
    assert results[True] >= 0.75, results
    assert results[False] <= results[True] - 0.3, results
