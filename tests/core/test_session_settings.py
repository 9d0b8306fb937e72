"""SessionSettings: the session's settings as plain data, the one source of bundle, checkpoint and script."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.helpers import ready_session
from tlwidgets import Session
from tlwidgets.core import bundle, checkpoint, script
from tlwidgets.core.errors import ConfigError
from tlwidgets.core.session_settings import SessionSettings

FIELDS = ["model", "head", "classes", "transforms", "augment", "frozen", "lr_factors", "config", "history", "data"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Session:
    from tests.conftest import make_image_folder

    folder = make_image_folder(tmp_path_factory.mktemp("settings") / "images")
    s = ready_session(folder, "mobilenet_v3_small", image_size=48, torch_seed=0, augment={"flip": True},
                      batch_size=8, epochs=1)
    s.set_lr_factor(s.head.path, 2.0)
    s.fit()
    return s


def test_to_dict_round_trips_and_is_plain_json(trained: Session) -> None:
    settings = trained.settings()
    values = settings.to_dict()
    assert list(values) == FIELDS
    assert SessionSettings.from_dict(values) == settings
    assert SessionSettings.from_dict(json.loads(json.dumps(bundle._jsonable(values)))) == settings
    assert values["classes"] == list(trained.classes) and values["frozen"] == list(trained.frozen)
    assert values["model"]["name"] == "mobilenet_v3_small" and values["head"]["num_classes"] == 3
    assert values["lr_factors"] == {trained.head.path: 2.0} and values["augment"]["flip"] is True
    assert values["transforms"]["image_size"] == 48 and values["config"]["batch_size"] == 8
    assert values["history"]["epochs"] == trained.history.epochs and values["data"]["num_train"] == 18
    values["model"]["name"] = "changed"  # a fresh copy each time: the settings stay as they were
    values["history"]["epochs"].clear()
    assert settings.model["name"] == "mobilenet_v3_small" and settings.to_dict()["history"]["epochs"]


def test_non_finite_numbers_stay_floats_until_written(trained: Session) -> None:
    values = trained.settings().to_dict()
    values["history"]["epochs"][0]["val_loss"] = float("nan")
    again = SessionSettings.from_dict(values).to_dict()
    assert math.isnan(again["history"]["epochs"][0]["val_loss"])
    assert bundle._jsonable(again)["history"]["epochs"][0]["val_loss"] == "NaN"


def test_bundle_checkpoint_and_script_are_written_from_the_settings(trained: Session, tmp_path: Path) -> None:
    values = trained.settings().to_dict()
    meta = bundle.session_metadata(trained)
    assert {k: meta[k] for k in FIELDS} == values
    assert list(meta) == ["format", "format_version", "created", "written_by", "versions", *FIELDS, "runs"]

    block = script.settings(trained)
    model = {k: v for k, v in values["model"].items() if k not in ("memory_format", "spec")}
    assert {k: v for k, v in block["MODEL"].items() if k != "builder"} == model
    assert (block["HEAD"], block["CLASSES"], block["TRANSFORMS"], block["AUGMENT"], block["LR_FACTORS"]) == (
        values["head"], values["classes"], values["transforms"], values["augment"], values["lr_factors"])
    assert block["CONFIG"] == script.script_config(values["config"], trained.history)
    assert block["DATA"] == {k: values["data"][k] for k in ("source", "layout", "root")}

    plan = checkpoint.plan_fit(trained, tmp_path / "run.ckpt", False, {})
    (writer,) = plan.callbacks(trained)
    part = writer.extra["session"]
    assert part["model"] == values["model"]["name"] and part["classes"] == values["classes"]
    assert part["head"] == values["head"] and part["lr_factors"] == values["lr_factors"]
    assert part["base_history"] == values["history"]


def test_a_saved_session_opens_with_the_settings_it_was_saved_with(trained: Session, tmp_path: Path) -> None:
    saved = trained.settings()
    trained.save(tmp_path / "bundle")
    opened = Session.load(tmp_path / "bundle", device="cpu").settings()
    for name in ("model", "head", "classes", "transforms", "augment", "frozen", "lr_factors", "config", "history"):
        assert getattr(opened, name) == getattr(saved, name), name
    assert opened.data is not None and opened.data["num_train"] == saved.data["num_train"]


def test_a_bundle_without_the_optional_entries_opens_with_their_defaults(trained: Session, tmp_path: Path) -> None:
    trained.save(tmp_path / "bundle")
    meta_file = tmp_path / "bundle" / "tlwidgets.json"
    meta = json.loads(meta_file.read_text())
    for name in ("augment", "lr_factors", "config"):
        meta.pop(name)
    meta_file.write_text(json.dumps(meta))
    opened = Session.load(tmp_path / "bundle", device="cpu", data=False)
    assert opened.lr_factors == {} and opened.augment == type(trained.augment)()
    assert opened.config == type(trained.config)() and opened.classes == trained.classes


def test_script_config_makes_auto_concrete() -> None:
    from tlwidgets.core.training import History

    config = {"epochs": "auto", "schedule": "auto", "lr": 0.01}
    assert script.script_config(config) == {"epochs": script.AUTO_EPOCHS_WITHOUT_RUN, "schedule": "onecycle",
                                            "lr": 0.01}
    ran = History(epochs=[{"epoch": 1}, {"epoch": 2}, {"epoch": 3}], best_epoch=2)
    assert script.script_config(config, ran)["epochs"] == 2
    assert config["epochs"] == "auto"  # the caller's dict is left as it was


def test_a_session_without_a_model_has_no_settings() -> None:
    with pytest.raises(ConfigError, match="load a model first"):
        Session(device="cpu").settings()


@pytest.mark.parametrize(("values", "words"), [
    ([1, 2], "must be a dict of entries, not list"),
    ({"model": {}}, "lack head, classes, transforms, augment, frozen, lr_factors, config"),
])
def test_from_dict_refuses_what_is_not_settings(values: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        SessionSettings.from_dict(values)


@pytest.mark.parametrize(("key", "value", "words"), [
    ("classes", "cat", "classes must be a list of names"),
    ("frozen", [1], "frozen must be a list of names"),
    ("head", None, "head must be a dict, not None"),
    ("history", [], "history must be a dict or None"),
    ("lr_factors", {"fc": "fast"}, "lr_factors must map layer names to numbers"),
])
def test_from_dict_names_the_wrong_entry(trained: Session, key: str, value: object, words: str) -> None:
    values = trained.settings().to_dict()
    values[key] = value
    with pytest.raises(ConfigError, match=words):
        SessionSettings.from_dict(values)


def test_settings_hold_copies_not_the_sessions_objects(trained: Session) -> None:
    settings = trained.settings()
    assert settings.history["epochs"] is not trained.history.epochs
    assert isinstance(settings.classes, tuple) and isinstance(settings.frozen, tuple)
    assert torch.is_tensor(next(trained.model.parameters()))  # the model is untouched
