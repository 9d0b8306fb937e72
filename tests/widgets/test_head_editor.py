"""HeadEditor: defaults from the data, preview, replacing the head, errors, and the layer table following."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import loaded_session
from tlwidgets import Session
from tlwidgets.widgets.head_editor import HeadEditor, describe_head
from tlwidgets.widgets.layer_table import LayerTable


@pytest.fixture
def session(image_folder: Path) -> Session:
    return loaded_session(image_folder, "resnet18", image_size=64)


@pytest.fixture
def editor(session: Session) -> Iterator[HeadEditor]:
    panel = HeadEditor(session)
    yield panel
    panel.close()


def _outputs(session: Session) -> torch.Size:
    model = session.model.eval()
    with torch.no_grad():
        return model(torch.zeros(1, 3, 64, 64)).shape


def test_describe_head() -> None:
    assert describe_head(1280, 5) == "Linear(1280 → 5)"
    assert describe_head(512, 3, 0.2, 32) == "Linear(512 → 32) → ReLU → Dropout(0.2) → Linear(32 → 3)"
    assert describe_head(512, 3, kind="conv1x1") == "Conv1x1(512 → 3)"


def test_defaults_from_data_and_preview(editor: HeadEditor, session: Session) -> None:
    assert "tlw-head-editor" in editor._dom_classes
    assert editor.num_classes.value == 3
    assert editor.freeze_backbone.value is True
    assert not editor.replace_button.disabled
    assert "fc" in editor.current.value and "Linear(512 → 1000)" in editor.current.value
    assert "Linear(512 → 1000)" in editor.preview.value and "Linear(512 → 3)" in editor.preview.value
    assert "class_0, class_1, class_2" in editor.preview.value
    editor.dropout.value = 0.2
    editor.hidden.value = 32
    assert "Linear(512 → 32) → ReLU → Dropout(0.2) → Linear(32 → 3)" in editor.preview.value


def test_replace_head(editor: HeadEditor, session: Session) -> None:
    version = session.model_version
    editor.replace_button.click()
    assert editor.last_error == ""
    assert _outputs(session) == (1, 3)
    assert session.head.num_classes == 3 and session.head.path == "fc"
    assert session.classes == ("class_0", "class_1", "class_2")
    assert session.model_version > version
    # freeze_backbone was checked: only the new head trains.
    assert {n for n, p in session.model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    assert "Linear(512 → 3)" in editor.current.value and "class_0" in editor.current.value


def test_replace_with_hidden_and_dropout_keeps_backbone_trainable(editor: HeadEditor, session: Session) -> None:
    editor.hidden.value = 32
    editor.dropout.value = 0.2
    editor.freeze_backbone.value = False
    editor.replace_button.click()
    assert editor.last_error == ""
    head = session.head
    assert (head.num_classes, head.in_features, head.hidden, head.dropout) == (3, 512, 32, pytest.approx(0.2))
    fc = session.model.fc
    assert [type(m).__name__ for m in fc.children()] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert fc.hidden.out_features == 32 and fc.out.in_features == 32 and fc.dropout.p == pytest.approx(0.2)
    assert _outputs(session) == (1, 3)
    assert session.frozen == ()


def test_layer_table_follows_the_new_head(session: Session) -> None:
    table = LayerTable(session)
    editor = HeadEditor(session)
    try:
        old_fc = table.row_checkbox("fc")
        editor.hidden.value = 16
        editor.replace_button.click()
        assert old_fc.comm is None  # rows of the old structure were closed
        names = list(table.table["name"])
        assert names[-3:] == ["fc.hidden", "fc.act", "fc.out"]  # dropout 0: no Dropout module
        assert table.row_checkbox("fc.act").disabled  # nothing to train in a ReLU
        assert table.row_checkbox("fc.out").value is True
        assert table.row_checkbox("layer1.0.conv1").value is False  # backbone frozen after replacing
        assert "16" in table.row_checkbox("fc.hidden").description
        assert table.group_checkbox("fc").value is True
        trainable = 512 * 16 + 16 + 16 * 3 + 3
        assert f"trainable parameters: {trainable:,} of" in table.summary.value
    finally:
        editor.close()
        table.close()


def test_disabled_before_a_model_is_loaded(image_folder: Path) -> None:
    session = Session(device="cpu", image_size=64)
    editor = HeadEditor(session)
    try:
        assert editor.replace_button.disabled and editor.num_classes.disabled
        assert "Load a model" in editor.hint.value
        session.load_data(image_folder)
        assert editor.num_classes.value == 3 and editor.replace_button.disabled
        session.load_model("resnet18", pretrained=False)
        assert not editor.replace_button.disabled and editor.hint.value == ""
        assert editor.num_classes.value == 3
    finally:
        editor.close()


def test_bad_values_show_an_error_and_keep_the_model(editor: HeadEditor, session: Session) -> None:
    model, fc = session.model, session.model.fc
    editor.num_classes.value = 1
    assert "at least 2" in editor.preview.value
    editor.replace_button.click()
    assert "num_classes=1" in editor.last_error
    assert session.model is model and session.model.fc is fc and session.head.num_classes == 1000
    assert session.frozen == ()
    editor.num_classes.value = 3
    editor.hidden.value = -4
    editor.replace_button.click()
    assert "hidden" in editor.last_error
    assert session.model.fc is fc
    editor.hidden.value = 0
    editor.replace_button.click()
    assert editor.last_error == ""  # a success clears the error
    assert session.head.num_classes == 3


def test_num_classes_follows_data_unless_edited(editor: HeadEditor, session: Session, tmp_path: Path) -> None:
    from tests.conftest import make_image_folder

    session.load_data(make_image_folder(tmp_path / "four", classes=4, per_class=4))
    assert editor.num_classes.value == 4
    editor.num_classes.value = 7
    session.load_data(make_image_folder(tmp_path / "five", classes=5, per_class=4))
    assert editor.num_classes.value == 7
    assert "the data has 5 classes" in editor.preview.value
    editor.num_classes.value = 5  # back to the data's count: follows the data again
    session.load_data(make_image_folder(tmp_path / "two", classes=2, per_class=4))
    assert editor.num_classes.value == 2


def test_close_closes_every_widget(session: Session) -> None:
    from ipywidgets.widgets.widget import _instances

    before = set(_instances)
    panel = HeadEditor(session)
    panel.close()
    assert set(_instances) - before == set()
    session.replace_head(3)  # no observer left behind
    assert panel.last_error == ""


def test_disabled_while_training(editor: HeadEditor, session: Session) -> None:
    session.status = "training"
    try:
        assert editor.replace_button.disabled
        assert "Training" in editor.hint.value
    finally:
        session.status = "idle"
    assert not editor.replace_button.disabled
