"""The App puts the panels on one Session; changes show everywhere."""

from __future__ import annotations

from pathlib import Path

import tlwidgets
from tlwidgets import App, DatasetBrowser, HeadEditor, LayerTable, ModelPicker, Session, TrainingPanel


def test_app_exposes_the_panels_in_workflow_order() -> None:
    app = App(Session(device="cpu", image_size=64))
    assert isinstance(app.model_picker, ModelPicker)
    assert isinstance(app.dataset_browser, DatasetBrowser)
    assert isinstance(app.head_editor, HeadEditor)
    assert isinstance(app.layer_table, LayerTable)
    assert isinstance(app.training_panel, TrainingPanel)
    assert all(p.session is app.session for p in app.panels)
    assert [app.tabs.get_title(i) for i in range(5)][0].endswith("Model")
    assert "status" in app.status_line.value and "idle" in app.status_line.value
    app.close()


def test_a_change_in_one_panel_shows_in_the_others(image_folder: Path) -> None:
    s = Session(device="cpu", image_size=64)
    app = App(s)
    assert app.training_panel.train_button.disabled
    app.model_picker.pretrained.value = False
    assert app.model_picker.select("resnet18")
    assert "resnet18" in app.status_line.value
    app.dataset_browser.load(image_folder)
    assert app.head_editor.num_classes.value == 3
    assert "before training" in app.status_line.value and "replace the head" in app.status_line.value
    app.head_editor.replace_button.click()
    assert s.head.num_classes == 3
    assert "before training" not in app.status_line.value  # the session's readiness rule says it is ready
    # the layer table follows the new head, the status line shows trainable parameters
    assert any("fc" in name for name in app.layer_table.session.layers()["name"])
    trainable, total = s.trainable_params()
    assert f"{trainable:,} of {total:,}" in app.status_line.value
    assert not app.training_panel.train_button.disabled
    # a change made in code shows in the panels
    s.unfreeze_all()
    assert f"{total:,} of {total:,}" in app.status_line.value
    app.close()


def test_app_loads_offline_defaults() -> None:
    s = Session(device="cpu")
    app = App(s, load_defaults=True)
    assert app.last_error == ""
    assert s.spec.name == "efficientnet_lite0"
    assert s.data is not None and len(s.data.classes) == 10
    assert s.head.num_classes == 10 and s.classes == tuple(s.data.classes)
    trainable, total = s.trainable_params()
    assert trainable < total / 10  # backbone frozen: only the head trains
    assert tlwidgets.App is App
    app.close()
