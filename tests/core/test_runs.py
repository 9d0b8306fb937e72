"""Run records: every fit lands in Session.runs, and runs_frame() tabulates them."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import ready_session
from tlwidgets.core.errors import ModelError, TLWidgetsError
from tlwidgets.core.runs import RUN_COLUMNS, Run
from tlwidgets.core.session import Session
from tlwidgets.core.training import LambdaCallback

FAST = {"max_batches_per_epoch": 1, "batch_size": 8}


@pytest.fixture
def session(image_folder: Path) -> Session:
    return ready_session(image_folder, "mobilenet_v3_small", image_size=64)


def test_a_fit_is_recorded_with_what_was_trained_and_how(session: Session) -> None:
    changes = []
    session.observe(lambda c: changes.append(c["new"]), names="runs")
    history = session.fit(epochs=2, lr=2e-3, **FAST)
    assert len(changes) == 1 and len(session.runs) == 1
    run = session.runs[0]
    assert isinstance(run, Run)
    assert (run.id, run.model, run.pretrained, run.trained) == (1, "mobilenet_v3_small", False, "head only")
    assert run.tag == ""
    assert run.frozen == session.frozen and len(run.frozen) > 0
    assert run.head["num_classes"] == 3 and run.head["path"] == session.head.path
    assert run.options["epochs"] == 2 and run.options["lr"] == 2e-3
    assert run.history is history and len(run.epochs) == 2
    assert run.final("val_acc") == history.epochs[-1]["val_acc"]
    assert run.wall_time_s > 0 and run.image_size == 64
    assert 0 < run.trainable_params < run.total_params
    assert not run.stopped and not run.failed and run.continues is None
    assert run.label == "#1 mobilenet_v3_small (random, head only)"


def test_continued_fit_points_at_the_run_it_continues(session: Session) -> None:
    session.fit(epochs=1, **FAST)
    session.unfreeze_all()
    session.fit(epochs=2, **FAST)
    first, second = session.runs
    assert second.continues == first.id and second.first_epoch == 1
    assert second.trained == "all layers" and second.trainable_params == second.total_params
    session.replace_head()  # a new head starts a new history: not a continuation
    session.fit(epochs=1, **FAST)
    assert session.runs[2].continues is None and session.runs[2].first_epoch == 0


def test_pretrained_flag_comes_from_load_model(image_folder: Path) -> None:
    s = Session(device="cpu", image_size=64)
    s.load_model("efficientnet_lite0")  # packaged weights: offline
    s.load_data(image_folder, val_fraction=0.25)
    s.replace_head()
    s.freeze_backbone()
    s.fit(epochs=1, **FAST)
    assert s.pretrained is True and s.runs[0].pretrained is True
    assert "pretrained" in s.runs[0].label


def test_stopped_and_failed_runs_are_recorded(session: Session) -> None:
    session.fit(epochs=3, callbacks=[LambdaCallback(on_batch_end=lambda t, b, logs: t.request_stop())], **FAST)
    stopped = session.runs[-1]
    assert stopped.stopped and not stopped.failed and len(stopped.epochs) == 0
    assert math.isnan(stopped.final("val_acc"))

    def explode(trainer, batch, logs):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        session.fit(epochs=1, callbacks=[LambdaCallback(on_batch_end=explode)], **FAST)
    failed = session.runs[-1]
    assert failed.failed and "boom" in failed.error and not failed.stopped
    assert len(session.runs) == 2


def test_a_refused_fit_records_nothing(image_folder: Path) -> None:
    s = Session(device="cpu", image_size=64)
    s.load_model("mobilenet_v3_small", pretrained=False)
    s.load_data(image_folder)
    with pytest.raises(ModelError):
        s.fit(epochs=1)  # head still has 1000 classes
    assert s.runs == () and len(s.runs_frame()) == 0
    assert list(s.runs_frame().columns) == list(RUN_COLUMNS)


def test_runs_frame_annotate_and_remove(session: Session) -> None:
    session.fit(epochs=1, **FAST)
    session.fit(epochs=1, **FAST)
    frame = session.runs_frame()
    assert isinstance(frame, pd.DataFrame) and list(frame["run"]) == [1, 2]
    assert list(frame.columns[: len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    assert frame.loc[0, "epochs"] == 1 and frame.loc[0, "trained"] == "head only"
    session.recorder.annotate(2, ms_per_image=3.5)
    frame = session.runs_frame()
    assert frame.loc[1, "ms_per_image"] == 3.5 and math.isnan(frame.loc[0, "ms_per_image"])
    session.recorder.remove([1])
    assert [r.id for r in session.runs] == [2]
    with pytest.raises(TLWidgetsError, match="No run #7"):
        session.recorder.get(7)
    session.fit(epochs=1, **FAST)
    assert [r.id for r in session.runs] == [2, 3]  # ids are never reused


def test_fits_of_an_attached_session_are_filed_with_a_tag(session: Session, image_folder: Path) -> None:
    other = Session(device="cpu", image_size=64)
    other.load_model("squeezenet1_1", pretrained=False)
    other.load_data(image_folder)
    other.replace_head()
    other.freeze_backbone()
    with session.recorder.attached(other, tag="compare"):
        other.fit(epochs=1, **FAST)
    other.fit(epochs=1, **FAST)  # detached: filed only in its own session
    assert [(r.model, r.tag) for r in session.runs] == [("squeezenet1_1", "compare")]
    assert [r.tag for r in other.runs] == ["", ""]  # its own record keeps both fits
