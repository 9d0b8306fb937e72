"""TrainingPanel: options bound to the config, background Train, Stop, errors, results, predictions."""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ready_session
from tlwidgets import Session
from tlwidgets.core.errors import DataError
from tlwidgets.widgets.live_curves import VAL_ACC, VAL_LOSS
from tlwidgets.widgets.training_panel import TrainingPanel

WAIT_S = 180  # generous: CI machines may be busy


@pytest.fixture
def session(image_folder: Path) -> Session:
    return ready_session(image_folder, "resnet18", image_size=64, batch_size=4)


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), colour, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _upload(name: str, content: bytes) -> dict:
    """One entry of FileUpload.value as the front end sends it."""
    return {"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
            "last_modified": datetime.now(timezone.utc)}


def test_train_is_disabled_until_model_data_and_matching_head(image_folder: Path) -> None:
    s = Session(device="cpu", image_size=64)
    panel = TrainingPanel(s)
    assert panel.train_button.disabled and "model" in panel.hint.value
    s.load_model("resnet18", pretrained=False)
    assert panel.train_button.disabled and "images" in panel.hint.value
    s.load_data(image_folder, val_fraction=0.25, seed=0)
    assert panel.train_button.disabled and "replace the head" in panel.hint.value
    assert "1000 classes" in panel.train_button.tooltip
    panel.train_button.click()  # a click on a disabled button (from code) starts nothing
    assert panel.thread is None and s.history is None
    assert "replace the head" in panel.last_error
    s.replace_head()
    assert not panel.train_button.disabled and panel.hint.value == ""
    assert panel.stop_button.disabled  # nothing to stop


def test_options_follow_the_config_both_ways(session: Session) -> None:
    panel = TrainingPanel(session)
    panel.epochs.value = 7
    panel.optimizer.value = "sgd"
    panel.lr.value = "0.01"
    panel.schedule.value = "cosine"
    panel.weight_decay.value = 0.001
    panel.label_smoothing.value = 0.1
    panel.batch_size.value = 8
    c = session.config
    assert (c.epochs, c.optimizer, c.schedule, c.batch_size) == (7, "sgd", "cosine", 8)
    assert c.lr == pytest.approx(0.01) and c.weight_decay == pytest.approx(0.001)
    assert c.label_smoothing == pytest.approx(0.1)
    session.configure(epochs=3, optimizer="adamw", lr=3e-4, label_smoothing=0.0)
    assert panel.epochs.value == 3 and panel.optimizer.value == "adamw"
    assert float(panel.lr.value) == pytest.approx(3e-4) and panel.label_smoothing.value == 0.0


def test_train_runs_in_background_and_shows_curves_and_results(session: Session) -> None:
    panel = TrainingPanel(session)
    panel.epochs.value = 2
    start = time.perf_counter()
    panel.train_button.click()
    returned_after = time.perf_counter() - start
    assert panel.thread is not None and panel.thread.is_alive()
    assert returned_after < 1.0
    assert panel.train_button.disabled  # while the run lasts
    assert panel.wait(WAIT_S)
    assert panel.last_error == ""
    history = session.history
    assert len(history.epochs) == 2 and session.status == "idle"
    val_acc = panel.curves_fig.data[VAL_ACC]
    assert len(val_acc.x) == 2
    assert list(val_acc.y) == pytest.approx([e["val_acc"] for e in history.epochs])
    assert list(panel.curves_fig.data[VAL_LOSS].y) == pytest.approx([e["val_loss"] for e in history.epochs])
    result = session.last_eval
    assert result is not None
    assert f"{result.accuracy:.1%}" in panel.accuracy_label.value
    z = np.asarray(panel.confusion_fig.data[0].z)
    assert z.sum() == len(session.data.val) and z.shape == (3, 3)
    assert list(panel.confusion_fig.data[0].x) == list(session.classes)
    assert all(name in panel.per_class_table.value for name in session.classes)
    assert "Done: 2 epochs" in panel.progress.value
    assert "cached features (head input)" in panel.progress.value  # the backbone is frozen
    assert panel.progress_bar.value == panel.progress_bar.max
    assert not panel.train_button.disabled and panel.stop_button.disabled


def test_stop_ends_the_run_within_two_batches(session: Session) -> None:
    panel = TrainingPanel(session)
    panel.epochs.value = 50
    batches: list[int] = []
    epochs: list[int] = []
    session.on_batch_end(lambda logs: batches.append(logs["batch"]))
    session.on_epoch_end(lambda logs: epochs.append(logs["epoch"]))
    panel.train_button.click()
    deadline = time.monotonic() + WAIT_S
    while len(batches) < 7 and panel.thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert session.status == "training" and not panel.stop_button.disabled
    at_click, epochs_at_click = len(batches), len(epochs)
    panel.stop_button.click()
    assert panel.stop_button.disabled
    assert panel.wait(WAIT_S)
    assert len(batches) - at_click <= 2
    assert session.status == "idle"
    history = session.history
    assert history is not None and history.stopped
    assert len(history.epochs) >= epochs_at_click >= 1  # 5 batches per epoch: one epoch was done
    assert len(history.epochs) < 50
    assert "Stopped" in panel.progress.value
    assert not panel.train_button.disabled


def test_two_quick_clicks_start_one_run(session: Session) -> None:
    session.configure(epochs=1, max_batches_per_epoch=2)
    panel = TrainingPanel(session)
    starts: list[object] = []
    session.on_fit_start(starts.append)
    panel.train_button.click()
    first = panel.thread
    panel.train_button.click()
    assert panel.start() is first  # the guard, not only the disabled button
    assert panel.thread is first
    running = [t for t in threading.enumerate() if t.name == "tlwidgets-train"]
    assert running == [first]
    assert panel.wait(WAIT_S)
    assert len(starts) == 1 and len(session.history.epochs) == 1
    assert panel.last_error == ""


def test_error_in_training_reaches_the_panel_and_keeps_model_and_history(session: Session) -> None:
    session.configure(max_batches_per_epoch=2)
    panel = TrainingPanel(session)
    panel.epochs.value = 1
    panel.train_button.click()
    assert panel.wait(WAIT_S)
    model, history = session.model, session.history
    assert len(history.epochs) == 1

    def explode(logs: dict) -> None:
        if logs["batch"] == 2:
            raise RuntimeError("boom in a batch subscriber")

    session.on_batch_end(explode)
    panel.train_button.click()
    assert panel.wait(WAIT_S)
    assert "boom in a batch subscriber" in panel.last_error
    assert "RuntimeError" in panel.error_area.value
    assert session.status == "idle"
    assert session.model is model and session.history is history
    assert "Failed" in panel.progress.value
    assert not panel.train_button.disabled
    session.on_batch_end(explode, remove=True)
    panel.train_button.click()  # works again, and the error goes away
    assert panel.wait(WAIT_S)
    assert panel.last_error == "" and len(session.history.epochs) == 2


def test_predict_files_and_upload(session: Session) -> None:
    panel = TrainingPanel(session)
    frame = panel.predict_files([("red.png", _png((220, 40, 40)))])
    assert len(frame) == 3
    assert list(frame["rank"]) == [1, 2, 3] and set(frame["image"]) == {"red.png"}
    assert set(frame["class"]) == set(session.classes)
    probs = frame["probability"].to_numpy()
    assert np.all(np.diff(probs) <= 0) and probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert "red.png" in panel.predictions.value
    assert all(name in panel.predictions.value for name in session.classes)

    panel.upload.value = (_upload("blue.png", _png((40, 60, 220))),)
    assert "blue.png" in panel.predictions.value and panel.last_error == ""

    with pytest.raises(DataError, match="broken.png"):
        panel.predict_files([("broken.png", b"not an image")])
    panel.upload.value = (_upload("broken.png", b"not an image"),)
    assert "broken.png" in panel.last_error and "not a known image format" in panel.last_error


def test_evaluate_on_a_folder_and_history_reset(session: Session, image_folder: Path) -> None:
    panel = TrainingPanel(session)
    panel.assessment.eval_folder.value = str(image_folder)
    panel.assessment.eval_button.click()
    assert panel.last_error == ""
    assert "24 images" in panel.accuracy_label.value
    assert np.asarray(panel.confusion_fig.data[0].z).sum() == 24
    session.replace_head()  # a new head: results and curves of the old one go
    assert "Not evaluated" in panel.accuracy_label.value
    assert len(panel.curves_fig.data[VAL_ACC].x) == 0


def test_close_detaches_from_the_session(session: Session) -> None:
    panel = TrainingPanel(session)
    assert not panel.train_button.disabled and panel.hint.value == ""
    panel.close()
    panel.close()  # twice is harmless
    session.replace_head(num_classes=5)  # a mismatch a live panel would report
    assert panel.hint.value == ""


@pytest.mark.parametrize(("box", "typed", "words"), [
    ("lr", "abc", "The learning rate 'abc' is not a number: type one such as 3e-3 or 0.001."),
    ("lr", "-1", "lr=-1.0 must be a finite number > 0"),
    ("lr", "nan", "lr=nan must be a finite number > 0"),
    ("epochs", -1, "epochs=-1 must be a whole number from 1 to 100,000"),
    ("epochs", 0, "epochs=0 must be a whole number from 1 to 100,000"),
])
def test_a_bad_value_typed_into_an_option_box_reads_as_one_plain_line(session, box, typed, words) -> None:
    panel = TrainingPanel(session)
    before = session.config
    getattr(panel, box).value = typed
    assert panel.last_error.startswith(words), panel.last_error
    assert "\n" not in panel.last_error and "Error" not in panel.last_error and "(in " not in panel.last_error
    assert session.config == before  # nothing was stored
    shown = getattr(panel, box).value
    assert shown == (f"{before.lr:g}" if box == "lr" else 20)  # the box shows the valid value again
    panel.close()
