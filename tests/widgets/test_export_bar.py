"""Save / Export ONNX / Generate script buttons in the training panel, and opening a saved bundle in the App."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import ready_session
from tlwidgets import Session
from tlwidgets.widgets.export_bar import targets
from tlwidgets.widgets.live_curves import VAL_ACC
from tlwidgets.widgets.training_panel import TrainingPanel


@pytest.fixture
def trained(image_folder: Path) -> Session:
    s = ready_session(image_folder, "resnet18", image_size=64)
    s.fit(epochs=2, batch_size=8)
    return s


def test_one_path_names_bundle_onnx_and_script() -> None:
    assert targets("runs/flowers") == {
        "bundle": Path("runs/flowers"), "onnx": Path("runs/flowers.onnx"), "script": Path("runs/flowers_train.py"),
        "webapp": Path("runs/flowers_web"),
    }
    assert targets("runs/flowers.zip")["bundle"] == Path("runs/flowers.zip")
    assert targets("runs/flowers.onnx")["script"] == Path("runs/flowers_train.py")
    assert targets("  ")["bundle"] == Path("my_model")


def test_buttons_follow_the_session_state(image_folder: Path) -> None:
    s = Session(device="cpu", image_size=64)
    panel = TrainingPanel(s)
    assert panel.save_button.disabled and panel.export_onnx_button.disabled and panel.script_button.disabled
    assert "tlw-save" in panel.save_button._dom_classes and "tlw-script" in panel.script_button._dom_classes
    assert "tlw-export-onnx" in panel.export_onnx_button._dom_classes
    s.load_model("resnet18", pretrained=False)
    assert not panel.save_button.disabled and panel.script_button.disabled  # no data yet
    s.load_data(image_folder)
    assert panel.script_button.disabled  # the head still predicts ImageNet's classes
    s.replace_head()
    assert not panel.script_button.disabled
    s.status = "training"
    assert panel.save_button.disabled and panel.script_button.disabled
    s.status = "idle"
    panel.close()
    s.unfreeze_all()  # no observer left behind to touch the closed widgets


def test_save_then_open_shows_the_trained_model(trained: Session, tmp_path: Path) -> None:
    panel = TrainingPanel(trained)
    panel.export_path.value = str(tmp_path / "runs" / "flowers")
    panel.save_button.click()
    assert panel.last_error == ""
    bundle = tmp_path / "runs" / "flowers"
    assert (bundle / "model.safetensors").is_file()
    assert "Session.load(" in panel.export_result.value and str(bundle) in panel.export_result.value
    loaded = Session.load(bundle, device="cpu")
    reopened = TrainingPanel(loaded)
    assert list(reopened.curves_fig.data[VAL_ACC].y) == [e["val_acc"] for e in trained.history.epochs]
    assert reopened.epochs.value == trained.config.epochs and not reopened.train_button.disabled
    from tlwidgets import App

    app = App(loaded)
    assert app.training_panel.live.fig.data[VAL_ACC].y is not None
    assert len(app.training_panel.curves_fig.data[VAL_ACC].y) == 2


def test_export_and_script_buttons_write_their_files(trained: Session, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    panel = TrainingPanel(trained)
    panel.export_path.value = str(tmp_path / "m")
    panel.export_onnx_button.click()
    assert panel.last_error == ""
    assert (tmp_path / "m.onnx").is_file()
    assert "Exported" in panel.export_result.value
    panel.script_button.click()
    assert (tmp_path / "m_train.py").is_file() and (tmp_path / "m_train.split.json").is_file()
    assert "torchrun --standalone --nproc_per_node=4 m_train.py" in panel.export_result.value


def test_errors_go_to_the_panel(trained: Session, tmp_path: Path) -> None:
    panel = TrainingPanel(trained)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    panel.export_path.value = str(mine)
    panel.save_button.click()
    assert "refusing to overwrite" in panel.last_error
    assert (mine / "notes.txt").read_text() == "keep"
    panel.export_path.value = str(tmp_path / "fine")
    panel.save_button.click()
    assert panel.last_error == ""


def test_the_web_page_button_writes_a_page_that_names_the_classes(trained: Session, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    panel = TrainingPanel(trained)
    bar = panel.export_bar
    assert not bar.webapp_button.disabled and "tlw-webapp" in bar.webapp_button._dom_classes
    panel.export_path.value = str(tmp_path / "site" / "flowers")
    bar.webapp_button.click()
    assert panel.last_error == ""
    page = tmp_path / "site" / "flowers_web"
    assert (page / "index.html").is_file() and (page / "model.onnx").is_file()
    config = json.loads((page / "classifier.json").read_text())
    assert config["classes"] == list(trained.classes)
    assert "python -m http.server" in panel.export_result.value and str(page) in panel.export_result.value
    trained.status = "training"
    assert bar.webapp_button.disabled
    trained.status = "idle"
