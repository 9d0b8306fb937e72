"""Hostile options and calls on a Session: bad values are refused before they are stored,
a diverged fit leaves finite weights, and what may run beside a background fit is decided
per operation (see :meth:`Session.require_idle`)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from tests.helpers import ready_session
from tlwidgets.core.compare import compare_models
from tlwidgets.core.errors import BusyError, ConfigError, ModelError, TrainingError

FAST = {"epochs": 1, "batch_size": 8, "precision": "fp32"}


@pytest.fixture
def session(image_folder: Path):
    return ready_session(image_folder, "mobilenet_v3_small", torch_seed=0, **FAST)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ----------------------------------------------------------------- options never kept when bad
@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("seed", 2**70, "seed=1180591620717411303424 must be a whole number from 0 to 4,294,967,295"),
        ("seed", -1, "seed=-1 must be a whole number"),
        ("epochs", 0, "epochs=0 must be a whole number from 1"),
        ("batch_size", 0, "batch_size=0"),
        ("lr", float("nan"), "lr=nan must be a finite number"),
        ("weight_decay", 1e30, "weight_decay=1e+30 must be a finite number from 0 to 1"),
        ("optimizer", "rmsprop", "optimizer='rmsprop' is not one of"),
    ],
)
def test_a_bad_fit_option_is_refused_and_not_kept(session, option: str, value: object, words: str) -> None:
    before = session.config
    with pytest.raises(ConfigError) as info:
        session.fit(**{option: value})
    assert words in str(info.value)
    assert session.config is before and session.status == "idle"
    history = session.fit()  # the next fit runs with the options it had
    assert len(history.epochs) == 1


def test_an_unknown_option_names_the_closest_known_one(session) -> None:
    with pytest.raises(ConfigError, match=r"Unknown training option\(s\) 'learning_rate'.*did you mean"):
        session.configure(learning_rate=0.1)
    with pytest.raises(ConfigError, match="'epoch'.*epochs"):
        session.fit(epoch=3)


def test_options_of_a_fit_that_fails_before_its_first_epoch_are_not_kept(session) -> None:
    before = session.config

    def crash(trainer, batch, logs):
        raise RuntimeError("boom")

    from tlwidgets.core.training import LambdaCallback

    with pytest.raises(RuntimeError, match="boom"):
        session.fit(lr=0.5, callbacks=[LambdaCallback(on_batch_end=crash)])
    assert session.config is before


@pytest.mark.parametrize("value", [7, 0, -5, 5000, "abc", 64.5, True])
def test_a_bad_image_size_is_refused_and_not_kept(session, value: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"image_size={value!r} must be a whole number of pixels from 32 to 1024"):
        session.image_size = value
    assert session.image_size == 64
    session.save(tmp_path / "bundle")  # what is stored still makes a bundle that loads
    assert type(session).load(tmp_path / "bundle", device="cpu").image_size == 64


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"num_classes": 10**9}, "num_classes=1000000000 must be a whole number from 2 to 100,000"),
        ({"num_classes": "3"}, "num_classes='3' must be a whole number"),
        ({"num_classes": 3, "hidden": 10**7}, "hidden=10000000 must be None (no hidden layer) or a whole number from 1 to 65,536"),
        ({"num_classes": 3, "dropout": "abc"}, "dropout='abc' must be a number from 0"),
        ({"num_classes": 3, "dropout": float("nan")}, "dropout=nan"),
    ],
)
def test_head_arguments_name_the_parameter_and_its_range(session, kwargs: dict, words: str) -> None:
    head, model = session.head, session.model
    with pytest.raises(ModelError) as info:
        session.replace_head(**kwargs)
    assert words in str(info.value)
    assert session.head is head and session.model is model


@pytest.mark.parametrize("batch_size", [0, -1, 10**6, 2.5, "32"])
def test_evaluate_batch_size_names_its_range(session, batch_size: object) -> None:
    with pytest.raises(ConfigError, match=r"batch_size=.* must be a whole number from 1 to 4,096"):
        session.evaluate(batch_size=batch_size)


# ----------------------------------------------------------------- checkpoints checked up front
@pytest.mark.parametrize("target", ["/proc/x.ckpt", "FILE/sub.ckpt", "DIR"])
def test_an_unwritable_checkpoint_is_refused_before_training(session, tmp_path: Path, target: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    folder = tmp_path / "afolder"
    folder.mkdir()
    path = target.replace("FILE", str(afile)).replace("DIR", str(folder))
    before = _files(tmp_path)
    epochs = []
    session.on_epoch_end(epochs.append)
    with pytest.raises(ConfigError) as info:
        session.fit(checkpoint=path)
    assert path in str(info.value) and "Cannot write the checkpoint" in str(info.value)
    assert epochs == [] and session.history is None  # refused before any training
    assert _files(tmp_path) == before and afile.read_text() == "mine"


# ----------------------------------------------------------------- divergence
@pytest.mark.parametrize("frozen", [True, False], ids=["head-only", "all-layers"])
@pytest.mark.parametrize(("option", "value"), [("lr", 1e9), ("lr", 1e6)])
def test_a_diverged_fit_puts_back_the_last_finite_weights(session, option: str, value: float, frozen: bool) -> None:
    if not frozen:  # BatchNorm statistics train too, and can reach infinity
        session.unfreeze_all()
    session.fit(epochs=1)  # a good epoch first
    good = {k: v.clone() for k, v in session.model.state_dict().items()}
    before = session.predict(session.data.val[0].path)
    try:
        session.fit(epochs=3, **{option: value})
    except TrainingError as exc:
        assert "put back" in str(exc)
    state = session.model.state_dict()
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    largest = max(float(t.abs().max()) for t in state.values() if t.is_floating_point() and t.numel())
    assert largest < 1e6
    after = session.predict(session.data.val[0].path)
    assert not after["probability"].isna().any()
    if not all(torch.equal(good[k], state[k]) for k in good):  # a later finite epoch was kept instead
        assert session.history is not None and len(session.history.epochs) > 1
    else:
        assert after.equals(before)


def test_a_non_finite_step_blames_weight_decay_when_it_is_the_culprit(session) -> None:
    session.configure(weight_decay=1.0, optimizer="sgd", lr=1e6, momentum=0.0)
    with pytest.raises(TrainingError) as info:
        session.fit(epochs=3)
    assert "weight_decay" in str(info.value)


# ----------------------------------------------------------------- beside a background fit
def _background_fit(session):
    started, release = threading.Event(), threading.Event()
    from tlwidgets.core.training import LambdaCallback

    def hold(trainer, batch, logs):
        started.set()
        release.wait(30)

    errors: list[BaseException] = []

    def run():
        try:
            session.fit(epochs=2, callbacks=[LambdaCallback(on_batch_end=hold)], cache_features="off")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(60)
    return thread, release, errors


def test_what_may_run_beside_a_background_fit(session, tmp_path: Path) -> None:
    image = session.data.val[0].path
    thread, release, errors = _background_fit(session)
    try:
        assert session.status == "training"
        refused = {
            "predict": lambda: session.predict(image),
            "evaluate": lambda: session.evaluate(),
            "change the image size": lambda: setattr(session, "image_size", 96),
            "save": lambda: session.save(tmp_path / "b"),
            "replace the head": lambda: session.replace_head(),
            "compare models": lambda: compare_models(session, ["resnet18"], epochs=1, pretrained=False),
        }
        for action, call in refused.items():
            with pytest.raises(BusyError, match=f"Cannot {action} while training runs: press Stop"):
                call()
        assert session.image_size == 64
        config = session.configure(lr=5e-4)  # allowed: it sets the next fit's options
        assert config.lr == 5e-4
        files = session.to_script(tmp_path / "train.py")  # allowed: it only reads settings
        assert Path(files.script).is_file()
    finally:
        release.set()
        session.request_stop()
        thread.join(60)
    assert not errors
    assert session.status == "idle"
    assert session.config.lr == 5e-4
    assert not session.predict(image)["probability"].isna().any()

