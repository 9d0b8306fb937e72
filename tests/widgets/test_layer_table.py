"""LayerTable: row and stage checkboxes, freezing buttons, LR factors, rebuild on model change."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from ipywidgets.widgets.widget import _instances

from tlwidgets import Session
from tlwidgets.widgets.layer_table import LayerTable


@pytest.fixture
def session() -> Session:
    s = Session(device="cpu", image_size=64)
    s.load_model("resnet18", pretrained=False)
    return s


@pytest.fixture
def table(session: Session) -> Iterator[LayerTable]:
    panel = LayerTable(session)
    yield panel
    panel.close()


def _frozen_params(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def test_one_row_per_layer_grouped_by_stage(table: LayerTable, session: Session) -> None:
    layers = session.layers()
    assert list(table.table["name"]) == list(layers["name"])
    assert table.groups == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert "tlw-layer-table" in table._dom_classes
    # Rows of closed stages are built on demand; the head's stage opens at once.
    assert "layer3.0.conv1" not in table._rows
    assert table._groups["fc"].toggle.value is True
    cb = table.row_checkbox("layer3.0.conv1")
    assert cb.value is True
    for part in ("layer3.0.conv1", "Conv2d", "256×4×4", "294,912"):
        assert part in cb.description
    assert table._groups["layer3"].toggle.value is False  # building does not open the stage
    table.expand("layer3")
    assert cb in table._groups["layer3"].body.children


def test_toggling_one_row_freezes_exactly_that_layer(table: LayerTable, session: Session) -> None:
    cb = table.row_checkbox("layer2.0.conv1")
    cb.value = False
    assert session.frozen == ("layer2.0.conv1",)
    assert _frozen_params(session.model) == {"layer2.0.conv1.weight"}
    assert table.group_checkbox("layer2").value is False
    assert table.last_error == ""
    cb.value = True
    assert session.frozen == ()
    assert _frozen_params(session.model) == set()
    assert table.group_checkbox("layer2").value is True


def test_stage_checkbox_freezes_the_whole_stage(table: LayerTable, session: Session) -> None:
    table.group_checkbox("layer3").value = False
    expected = tuple(n for n in table.table["name"] if n.startswith("layer3."))
    assert session.frozen == expected
    layer3 = {n for n, _ in session.model.named_parameters() if n.startswith("layer3.")}
    assert _frozen_params(session.model) == layer3
    assert table.row_checkbox("layer3.1.bn2").value is False
    assert table.row_checkbox("layer4.0.conv1").value is True
    table.group_checkbox("layer3").value = True
    assert session.frozen == ()


def test_freeze_up_to_selected(table: LayerTable, session: Session) -> None:
    names = list(table.table["name"])
    table.layer_select.value = "layer2.1.bn2"
    table.freeze_up_to_button.click()
    assert session.frozen == tuple(names[: names.index("layer2.1.bn2") + 1])
    assert table.row_checkbox("layer2.1.bn2").value is False
    assert table.row_checkbox("layer3.0.conv1").value is True


def test_freeze_backbone_and_summary(table: LayerTable, session: Session) -> None:
    table.freeze_backbone_button.click()
    trainable = {n for n, p in session.model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert table.row_checkbox("fc").value is True
    assert table.row_checkbox("conv1").value is False
    assert table.summary.value.count("trainable parameters: 513,000 of 11,689,512 (4.4%)") == 1
    assert [table.group_checkbox(g).value for g in table.groups] == [False] * 6 + [True]
    assert "20 of 20 frozen" in table.bn_policy.value
    table.unfreeze_all_button.click()
    assert session.frozen == ()
    assert "11,689,512 of 11,689,512 (100%)" in table.summary.value


def test_change_in_code_updates_checkboxes_without_rebuilding(table: LayerTable, session: Session) -> None:
    built = table.row_checkbox("layer1.0.conv1")
    groups_before = table.groups_box.children
    session.freeze_up_to("layer2")
    assert built.value is False
    assert table.row_checkbox("layer2.1.bn2").value is False
    assert table.row_checkbox("layer3.0.conv1").value is True
    assert table.group_checkbox("layer2").value is False and table.group_checkbox("layer3").value is True
    # Only the flags changed: same widgets, still open.
    assert table.groups_box.children == groups_before
    assert table.row_checkbox("layer1.0.conv1") is built and built.comm is not None


def test_programmatic_redraw_does_not_call_back_into_the_session(table: LayerTable, session: Session) -> None:
    calls: list[str] = []
    session.observe(lambda c: calls.append(c["name"]), names=["frozen"])
    session.freeze(["layer4"])
    assert calls == ["frozen"]  # redrawing the rows did not freeze or unfreeze anything else


def test_lr_factor(table: LayerTable, session: Session) -> None:
    assert ("layer4 (whole stage)", "layer4") in table.lr_layer.options
    table.lr_layer.value = "layer4"
    table.lr_factor.value = 0.1
    table.set_lr_button.click()
    assert session.lr_factors == {"layer4": 0.1}
    assert "LR×0.1" in table.row_checkbox("layer4.0.conv1").description
    assert "LR×" not in table.row_checkbox("layer3.0.conv1").description
    table.lr_factor.value = -1
    table.set_lr_button.click()
    assert ">= 0" in table.last_error
    assert session.lr_factors == {"layer4": 0.1}


def test_error_reverts_the_checkbox(table: LayerTable, session: Session) -> None:
    cb = table.row_checkbox("layer1.0.conv1")
    session.status = "training"  # what fit() sets; freezing is refused meanwhile
    try:
        assert cb.disabled and table.freeze_backbone_button.disabled
        cb.value = False
        assert "training" in table.last_error.lower()
        assert cb.value is True and session.frozen == ()
    finally:
        session.status = "idle"
    assert not cb.disabled


def test_new_model_rebuilds_and_closes_old_widgets(table: LayerTable, session: Session) -> None:
    old_row = table.row_checkbox("layer1.0.conv1")
    old_group = table.group_checkbox("layer1")
    old_box = table.groups_box.children[0]
    session.load_model("mobilenet_v3_small", pretrained=False)
    assert old_row.comm is None and old_group.comm is None and old_box.comm is None
    assert all(w is not old_row for w in _instances.values())
    assert table.groups[0] == "features.0"
    assert list(table.table["name"]) == list(session.layers()["name"])
    assert "layer1.0.conv1" not in table._rows
    cb = table.row_checkbox("features.0.0")
    cb.value = False
    assert session.frozen == ("features.0.0",)


def test_disabled_without_model() -> None:
    panel = LayerTable(Session(device="cpu", image_size=64))
    try:
        assert panel.groups == []
        assert panel.freeze_backbone_button.disabled and panel.set_lr_button.disabled
        assert "Load a model" in panel.hint.value
        panel.session.load_model("resnet18", pretrained=False)
        assert not panel.freeze_backbone_button.disabled
        assert panel.hint.value == ""
        assert len(panel.groups) == 7
    finally:
        panel.close()


def test_close_closes_every_widget(session: Session) -> None:
    before = set(_instances)
    panel = LayerTable(session)
    for group in panel.groups:
        panel.expand(group)
    assert len(set(_instances) - before) > len(panel.table)
    panel.close()
    leaked = set(_instances) - before
    assert leaked == set()
    session.freeze(["layer1"])  # no observer left behind


def test_the_layer_lists_start_on_a_layer_not_blank() -> None:
    # ipywidgets 8 leaves a Dropdown empty when its options are replaced; the browser then
    # shows blank boxes next to "Freeze up to selected" and "Set LR factor".
    s = Session(device="cpu", image_size=64)
    s.load_model("resnet18", pretrained=False)
    table = LayerTable(s)
    assert table.layer_select.value == table.layer_select.options[0] == "conv1"
    assert table.lr_layer.value == table.lr_layer.options[0][1]
    s.load_model("mobilenet_v3_small", pretrained=False)  # a new model: new lists, still chosen
    assert table.layer_select.value in table.layer_select.options
    assert table.lr_layer.value is not None
    table.close()
