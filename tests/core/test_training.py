"""The Trainer: stopping, seeding, hooks, learning, schedules, failures and config checks."""

from __future__ import annotations

import copy
import math
import threading
import time

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from tests.helpers import colour_task
from tlwidgets.core import layers
from tlwidgets.core.errors import ConfigError, TrainingError
from tlwidgets.core.training import Callback, History, LambdaCallback, TrainConfig, Trainer


def tiny_net(classes: int = 3, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(8, classes),
    )


class Recorder(Callback):
    """Records every hook call as a tuple."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.batch_logs: list[dict] = []
        self.epoch_logs: list[dict] = []

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start",))

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(("epoch_start", epoch))

    def on_batch_end(self, trainer, batch, logs):
        self.calls.append(("batch_end", logs["epoch"], batch))
        self.batch_logs.append(logs)

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append(("epoch_end", epoch))
        self.epoch_logs.append(logs)

    def on_fit_end(self, trainer, history):
        self.calls.append(("fit_end", history))

    def on_exception(self, trainer, exc):
        self.calls.append(("exception", exc))


def fit(model, train, val=None, callbacks=(), **options) -> tuple[History, Trainer]:
    options = {"batch_size": 16, "epochs": 1, **options}
    trainer = Trainer(model, train, val, TrainConfig(**options), device="cpu", callbacks=callbacks)
    return trainer.fit(), trainer


def test_request_stop_ends_within_one_batch() -> None:
    rec = Recorder()

    def stop_at_epoch2_batch1(trainer, batch, logs):
        if logs["epoch"] == 2 and batch == 1:
            trainer.request_stop()

    history, trainer = fit(tiny_net(), colour_task(64, 0), colour_task(16, 1), epochs=3,
                           callbacks=[rec, LambdaCallback(on_batch_end=stop_at_epoch2_batch1)])
    assert history.stopped
    assert [e["epoch"] for e in history.epochs] == [1]
    assert [b["epoch"] for b in history.batches] == [1, 1, 1, 1, 2]
    assert [c[0] for c in rec.calls].count("fit_end") == 1 and rec.calls[-1] == ("fit_end", history)
    assert ("epoch_end", 2) not in rec.calls
    assert not trainer.stop_requested  # cleared for the next fit
    assert not trainer.model.training


class SlowDataset(Dataset):
    def __init__(self, base: Dataset, delay: float) -> None:
        self.base, self.delay = base, delay

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        time.sleep(self.delay)
        return self.base[i]


def test_request_stop_from_another_thread() -> None:
    first_batch = threading.Event()
    trainer = Trainer(tiny_net(), SlowDataset(colour_task(400, 0), 0.002), None,
                      TrainConfig(epochs=50, batch_size=8), device="cpu",
                      callbacks=[LambdaCallback(on_batch_end=lambda t, b, logs: first_batch.set())])
    result: list[History] = []
    thread = threading.Thread(target=lambda: result.append(trainer.fit()))
    thread.start()
    assert first_batch.wait(30)
    trainer.request_stop()
    thread.join(30)
    assert not thread.is_alive()
    assert result[0].stopped and len(result[0].batches) < 50 and result[0].epochs == []


def test_same_seed_gives_identical_history() -> None:
    model = tiny_net(dropout=0.3)
    train, val = colour_task(48, 0), colour_task(24, 1)
    runs = [fit(copy.deepcopy(model), train, val, epochs=2, batch_size=8, seed=7)[0] for _ in range(2)]
    cols = ["epoch", "loss", "acc", "val_loss", "val_acc", "lr"]
    a, b = (r.epoch_frame()[cols] for r in runs)
    assert a.equals(b)
    assert runs[0].batch_frame()["loss"].tolist() == runs[1].batch_frame()["loss"].tolist()
    other = fit(copy.deepcopy(model), train, val, epochs=2, batch_size=8, seed=8)[0]
    assert other.batch_frame()["loss"].tolist() != runs[0].batch_frame()["loss"].tolist()


def test_hooks_fire_in_order_with_documented_logs() -> None:
    rec = Recorder()
    history, _ = fit(tiny_net(), colour_task(32, 0), colour_task(8, 1), epochs=2, callbacks=[rec])
    names = [c[:3] if c[0] == "batch_end" else c[:2] for c in rec.calls[:-1]]
    assert names == [
        ("fit_start",), ("epoch_start", 1), ("batch_end", 1, 1), ("batch_end", 1, 2), ("epoch_end", 1),
        ("epoch_start", 2), ("batch_end", 2, 1), ("batch_end", 2, 2), ("epoch_end", 2),
    ]
    assert rec.calls[-1] == ("fit_end", history)
    assert set(rec.batch_logs[0]) == {"loss", "acc", "lr", "epoch", "batch", "step", "images_per_s"}
    assert [b["step"] for b in rec.batch_logs] == [1, 2, 3, 4]
    assert set(rec.epoch_logs[0]) == {"loss", "acc", "val_loss", "val_acc", "lr", "epoch", "time_s",
                                      "data_images_per_s", "feature_images_per_s", "compute_images_per_s"}
    assert history.epochs == rec.epoch_logs and history.batches == rec.batch_logs
    first = history.epochs[0]
    # epoch loss/acc are the sample-weighted means of that epoch's batches (equal batch sizes here)
    assert first["loss"] == pytest.approx((rec.batch_logs[0]["loss"] + rec.batch_logs[1]["loss"]) / 2)
    assert first["acc"] == pytest.approx((rec.batch_logs[0]["acc"] + rec.batch_logs[1]["acc"]) / 2)
    assert 0 <= first["val_acc"] <= 1 and first["time_s"] > 0
    no_val, _ = fit(tiny_net(), colour_task(16, 0), None)
    assert math.isnan(no_val.epochs[0]["val_loss"]) and math.isnan(no_val.epochs[0]["val_acc"])


def test_tiny_convnet_learns_separable_task() -> None:
    history, trainer = fit(tiny_net(), colour_task(240, 0), colour_task(60, 1), epochs=6,
                           optimizer="adam", lr=0.02, schedule="onecycle")
    assert history.epochs[-1]["val_acc"] > 0.9
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    assert len(history.epochs) == 6 and not history.stopped


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "step", "constant"])
def test_schedules_and_optimizers(optimizer: str, schedule: str) -> None:
    lr = 0.01
    history, trainer = fit(tiny_net(), colour_task(64, 0), colour_task(8, 1), epochs=3, batch_size=8,
                           max_batches_per_epoch=4, optimizer=optimizer, lr=lr, schedule=schedule,
                           gamma=0.5, weight_decay=1e-4, momentum=0.8)
    assert len(history.batches) == 12 and [b["batch"] for b in history.batches[:5]] == [1, 2, 3, 4, 1]
    assert type(trainer.optimizer).__name__.lower() == optimizer
    assert trainer.optimizer.defaults["weight_decay"] == 1e-4
    lrs = history.batch_frame()["lr"].tolist()
    if schedule == "onecycle":
        peak = lrs.index(max(lrs))
        assert 0 < peak < len(lrs) - 1 and 0.9 * lr < max(lrs) <= lr
        assert lrs[0] < max(lrs) and lrs[-1] < lrs[0]
    elif schedule == "cosine":
        assert lrs[0] == lr and all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < lr / 10
    elif schedule == "step":
        assert [e["lr"] for e in history.epochs] == pytest.approx([lr, lr / 2, lr / 4])
        assert lrs == pytest.approx([lr] * 4 + [lr / 2] * 4 + [lr / 4] * 4)
    else:
        assert lrs == [lr] * 12
    if optimizer == "sgd" and schedule != "onecycle":
        assert trainer.optimizer.param_groups[0]["momentum"] == 0.8


def test_lr_factors_give_group_lrs() -> None:
    model = tiny_net()
    history, trainer = fit(model, colour_task(16, 0), None, schedule="constant", lr=0.1,
                           optimizer="sgd")
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.1]
    trainer = Trainer(model, colour_task(16, 0), None, TrainConfig(epochs=1, schedule="constant", lr=0.1),
                      device="cpu", lr_factors={"0": 0.1, "1": 0})
    trainer.fit()
    assert sorted(g["lr"] for g in trainer.optimizer.param_groups) == pytest.approx([0.01, 0.1])
    trained = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in trained for p in model[1].parameters())


def test_nan_loss_stops_with_weights_untouched() -> None:
    model = tiny_net()
    train = colour_task(32, 0)
    train.tensors[0][:] = float("nan")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rec = Recorder()
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1 batch 1; lower the learning rate"):
        fit(model, train, None, callbacks=[rec], optimizer="sgd", lr=0.1)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) and torch.isfinite(p).all(), name
    assert isinstance(rec.calls[-2][1], TrainingError) and rec.calls[-1][0] == "fit_end"


def test_callback_exception_reaches_on_exception_and_propagates() -> None:
    rec = Recorder()

    def boom(trainer, batch, logs):
        raise RuntimeError("boom in callback")

    with pytest.raises(RuntimeError, match="boom in callback"):
        fit(tiny_net(), colour_task(32, 0), None, epochs=2, callbacks=[rec, LambdaCallback(on_batch_end=boom)])
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["fit_start", "epoch_start", "batch_end", "exception", "fit_end"]
    assert str(rec.calls[3][1]) == "boom in callback"
    assert rec.calls[4][1].batches and rec.calls[4][1].epochs == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("optimizer", "rmsprop", r"optimizer='rmsprop' is not one of 'sgd', 'adam', 'adamw'"),
        ("schedule", "linear", r"schedule='linear' is not one of 'auto', 'onecycle'"),
        ("precision", "fp8", r"precision='fp8'"),
        ("epochs", 0, r"epochs=0 must be a whole number from 1 to 100,000"),
        ("seed", 2**70, r"seed=1180591620717411303424 must be a whole number from 0 to 4,294,967,295"),
        ("seed", -1, r"seed=-1 must be a whole number from 0"),
        ("batch_size", 10**9, r"batch_size=1000000000 must be a whole number from 1 to 65,536"),
        ("weight_decay", 1e30, r"weight_decay=1e\+30 must be a finite number from 0 to 1"),
        ("lr", -1.0, r"lr=-1.0 must be a finite number > 0"),
        ("label_smoothing", 1.0, r"label_smoothing=1.0"),
        ("max_batches_per_epoch", 0, r"max_batches_per_epoch=0 must be a whole number from 1 to .* \(or None\)"),
    ],
)
def test_config_validate_names_bad_value(field: str, value: object, message: str) -> None:
    TrainConfig().validate()
    config = TrainConfig(**{field: value})
    with pytest.raises(ConfigError, match=message):
        config.validate()
    rec = Recorder()
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_net(), colour_task(8, 0), None, config, device="cpu", callbacks=[rec]).fit()
    assert rec.calls == []  # setup errors raise before any hook


def test_nothing_trainable_and_lambda_callback_errors() -> None:
    model = tiny_net()
    layers.freeze(model, [n for n, _ in model.named_children()])
    with pytest.raises(TrainingError, match="every layer is frozen"):
        fit(model, colour_task(8, 0))
    with pytest.raises(ValueError, match="on_batch_ends"):
        LambdaCallback(on_batch_ends=print)


def test_channels_last_and_label_smoothing() -> None:
    _, trainer = fit(tiny_net(), colour_task(16, 0), label_smoothing=0.1)
    assert trainer.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.criterion.label_smoothing == 0.1
    _, trainer = fit(tiny_net(), colour_task(16, 0), channels_last=False)
    assert trainer.model[0].weight.is_contiguous()


def test_history_extend_and_frames() -> None:
    first, _ = fit(tiny_net(), colour_task(32, 0), None, epochs=2)
    second, _ = fit(tiny_net(), colour_task(32, 0), None, epochs=1)
    both = first.extend(second)
    assert [e["epoch"] for e in both.epochs] == [1, 2, 3]
    assert [b["step"] for b in both.batches] == [1, 2, 3, 4, 5, 6]
    assert [b["epoch"] for b in both.batches] == [1, 1, 2, 2, 3, 3]
    assert first.epochs[-1]["epoch"] == 2 and second.epochs[0]["epoch"] == 1  # inputs unchanged
    assert list(History().epoch_frame().columns) == [
        "epoch", "loss", "acc", "val_loss", "val_acc", "lr", "time_s",
        "data_images_per_s", "feature_images_per_s", "compute_images_per_s"]
    assert both.batch_frame().shape == (6, 7)


class _PoisonAfter(Dataset):
    """Wraps a dataset; once ``poisoned`` is set, every image it returns is NaN."""

    def __init__(self, base: Dataset) -> None:
        self.base, self.poisoned = base, False

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        x, y = self.base[index]
        return (torch.full_like(x, float("nan")) if self.poisoned else x), y


def test_a_failed_step_of_a_bare_trainer_leaves_the_batchnorm_statistics_of_the_last_good_step() -> None:
    model = tiny_net()
    bn = model[1]
    data = _PoisonAfter(colour_task(48, 0))
    after_first: dict[str, torch.Tensor] = {}

    def poison_after_first_batch(trainer, batch, logs):
        if not data.poisoned:
            after_first.update({n: b.detach().clone() for n, b in bn.named_buffers()})
            data.poisoned = True

    with pytest.raises(TrainingError, match="loss became nan at epoch 1 batch 2"):
        fit(model, data, None, callbacks=[LambdaCallback(on_batch_end=poison_after_first_batch)],
            optimizer="sgd", lr=0.1)
    assert after_first["num_batches_tracked"].item() == 1
    for name, buffer in bn.named_buffers():
        # The NaN batch's forward pass updated them before its loss was known; they are back.
        assert torch.equal(buffer, after_first[name]), name
    assert torch.isfinite(bn.running_mean).all() and torch.isfinite(bn.running_var).all()
