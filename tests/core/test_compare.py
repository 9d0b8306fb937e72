"""compare_models: one row per model, recorded runs, stop, keep the best, bad inputs."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from tests.helpers import loaded_session
from tlwidgets.core import compare as compare_mod
from tlwidgets.core.compare import COMPARE_COLUMNS, classic_small_models, compare_models
from tlwidgets.core.errors import DataError, ModelError
from tlwidgets.core.session import Session

SMALL = ["squeezenet1_1", "shufflenet_v2_x0_5", "mobilenet_v3_small"]
FAST = {"max_batches_per_epoch": 2, "batch_size": 8}


@pytest.fixture
def session(image_folder: Path) -> Session:
    return loaded_session(image_folder, "mobilenet_v3_small", image_size=64)


@pytest.fixture(autouse=True)
def _quick_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Time predictions with one small repeat: the numbers are checked, not their precision."""
    real = compare_mod.speed.measure_speed
    monkeypatch.setattr(compare_mod.speed, "measure_speed",
                        lambda name, device=None, batch_size=8, **kw: real(name, device, batch_size=2, repeats=1))


def test_three_small_models_give_one_row_each_and_leave_the_session_alone(session: Session) -> None:
    model, config, spec = session.model, session.config, session.spec
    seen = []
    rows = []
    frame = compare_models(session, SMALL, epochs=1, pretrained=False, progress=lambda *a: seen.append(a),
                           on_result=rows.append, **FAST)
    assert list(frame.columns) == list(COMPARE_COLUMNS)
    assert list(frame["name"]) == SMALL and [r["name"] for r in rows] == SMALL
    assert frame["val_acc"].between(0, 1).all()
    assert (frame["ms_per_image"] > 0).all() and (frame["train_time_s"] > 0).all()
    assert (frame["size_mb"] > 0).all() and (frame["params_m"] > 0).all()
    assert (frame["epochs"] == 1).all() and not frame["pretrained"].any() and (frame["note"] == "").all()
    # squeezenet1_1 adapted to 3 classes is far smaller than its 1000-class ImageNet file
    assert frame.loc[0, "size_mb"] < 3.0
    # the user's model, options and history are untouched; the fits are filed as runs
    assert session.model is model and session.spec is spec and session.config == config
    assert session.history is None and session.head.num_classes == 1000
    runs = session.runs_frame()
    assert list(runs["model"]) == SMALL and set(runs["tag"]) == {"compare"}
    assert list(runs["run"]) == list(frame["run"])
    assert list(runs["ms_per_image"]) == list(frame["ms_per_image"])
    assert set(runs["trained"]) == {"head only"}
    assert seen[0][:2] == (0, 3) and seen[-1][:2] == (3, 3)
    assert [text.split()[0] for _, _, text in seen[:3]] == ["Loading", "Training", "Timing"]


def test_stop_within_training_ends_the_comparison(session: Session) -> None:
    stop = threading.Event()

    def progress(done: int, total: int, text: str) -> None:
        if text.startswith("Training") and done == 1:
            stop.set()  # while the second model trains

    frame = compare_models(session, SMALL, epochs=3, stop_event=stop, progress=progress, pretrained=False, **FAST)
    assert list(frame["name"]) == SMALL[:2]
    assert frame.loc[1, "note"] == "stopped" and frame.loc[1, "epochs"] == 0
    assert math.isnan(frame.loc[1, "ms_per_image"])
    assert session.runs[-1].stopped and len(session.runs) == 2


def test_stop_before_start_trains_nothing(session: Session) -> None:
    stop = threading.Event()
    stop.set()
    frame = compare_models(session, SMALL, stop_event=stop, pretrained=False, **FAST)
    assert len(frame) == 0 and list(frame.columns) == list(COMPARE_COLUMNS) and session.runs == ()


def test_keep_best_installs_the_trained_winner(session: Session) -> None:
    frame = compare_models(session, SMALL[:2], epochs=1, pretrained=False, keep="best", **FAST)
    winner = frame.loc[frame["val_acc"].idxmax(), "name"]
    assert session.spec.name == winner and session.head.num_classes == 3
    assert tuple(session.classes) == tuple(session.data.classes)
    assert session.history is not None and len(session.history.epochs) == 1
    assert session.pretrained is False and winner in session.message
    session.fit(epochs=1, **FAST)  # the installed model trains on, continuing its history
    assert len(session.history.epochs) == 2


def test_pretrained_falls_back_to_random_weights_when_offline(session: Session, monkeypatch) -> None:
    from tlwidgets.core.errors import WeightsUnavailableError

    def offline(name, pretrained=True, progress=None):
        raise WeightsUnavailableError(f"no network for {name}")

    real = compare_mod.catalog.build_model
    monkeypatch.setattr("tlwidgets.core.catalog.build_model",
                        lambda name, pretrained=True, progress=None: offline(name) if pretrained else real(name, False))
    frame = compare_models(session, ["mobilenet_v3_small"], epochs=1, **FAST)
    assert not frame.loc[0, "pretrained"]
    assert "random weights" in frame.loc[0, "note"] and frame.loc[0, "val_acc"] >= 0


def test_one_failing_model_does_not_end_the_comparison(session: Session, monkeypatch) -> None:
    def measure(name, device=None, batch_size=8, **kw):
        if name == SMALL[0]:
            raise RuntimeError("timer broke")
        return {"ms_per_image": 1.5}

    monkeypatch.setattr(compare_mod.speed, "measure_speed", measure)
    monkeypatch.setattr(compare_mod.speed, "cached_speed", lambda name, device=None: None)
    frame = compare_models(session, SMALL[:2], epochs=1, pretrained=False, **FAST)
    assert "failed: RuntimeError: timer broke" in frame.loc[0, "note"]
    assert frame.loc[1, "ms_per_image"] == 1.5 and frame.loc[1, "note"] == ""


def test_bad_inputs_fail_before_training(session: Session, image_folder: Path) -> None:
    with pytest.raises(ModelError, match="resnet1800"):
        compare_models(session, ["resnet18", "resnet1800"])
    with pytest.raises(ModelError, match="at least one"):
        compare_models(session, [])
    with pytest.raises(ValueError, match="keep="):
        compare_models(session, ["resnet18"], keep="worst")
    with pytest.raises(ValueError, match="Unknown training option"):
        compare_models(session, ["resnet18"], learning_rate=0.1)
    with pytest.raises(ValueError, match="lr"):
        compare_models(session, ["resnet18"], lr=-1)
    empty = Session(device="cpu")
    with pytest.raises(DataError, match="load data"):
        compare_models(empty, ["resnet18"])
    assert session.runs == ()


def test_classic_small_models_are_the_five_classics() -> None:
    assert classic_small_models() == ["squeezenet1_1", "shufflenet_v2_x1_0", "mobilenet_v2", "resnet18", "googlenet"]
