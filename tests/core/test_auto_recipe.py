"""The automatic recipe of ``fit()``: early stopping, keep-best, the step budget, class
weights for imbalanced data, and the feature cache surviving a new head."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import make_image_folder
from tests.helpers import colour_task, ready_session
from tlwidgets.core import stopping
from tlwidgets.core.balance import imbalance_note
from tlwidgets.core.training import Callback, LambdaCallback, TrainConfig, Trainer


def _head_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))


class _Weights(Callback):
    """Copies of the weights at every epoch end, and the logs."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}
        self.logs: dict[int, dict] = {}

    def on_epoch_end(self, trainer, epoch, logs):
        self.states[epoch] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        self.logs[epoch] = dict(logs)


def test_auto_stops_when_the_validation_loss_stalls_and_keeps_exactly_the_best_epoch() -> None:
    model = _head_net()
    # A hard, noisy task on few images: the validation loss turns up after a while.
    train, val = colour_task(30, 0), colour_task(30, 1)
    train.tensors[0][:] = torch.rand_like(train.tensors[0])
    seen = _Weights()
    trainer = Trainer(model, train, val, TrainConfig(lr=3e-2, precision="fp32", batch_size=8),
                      device="cpu", callbacks=[seen])
    history = trainer.fit()
    n = len(history.epochs)
    limits = stopping.budget(trainer.steps_per_epoch, cached=False, has_val=True)
    assert limits.min_epochs <= n < limits.max_epochs  # stopped early, not at the budget's end
    val_losses = {e: logs["val_loss"] for e, logs in seen.logs.items()}
    best = min(val_losses, key=lambda e: (val_losses[e], e))
    assert history.best_epoch == best and best < n
    for key, value in model.state_dict().items():  # bit-identical to the best epoch's weights
        assert torch.equal(value, seen.states[best][key]), key
    assert any(f"Stopped at epoch {n}: val loss had not improved for" in note for note in history.notes)
    assert f"Restored epoch {best} (lowest val loss)." in history.notes


def test_an_explicit_number_of_epochs_trains_exactly_that_many() -> None:
    for epochs in (5, 1):
        history = Trainer(_head_net(), colour_task(30, 0), colour_task(12, 1),
                          TrainConfig(epochs=epochs, precision="fp32", batch_size=8), device="cpu").fit()
        assert len(history.epochs) == epochs and history.best_epoch is None and not history.stopped


def test_without_validation_images_auto_trains_a_fixed_budget_and_says_so() -> None:
    trainer = Trainer(_head_net(), colour_task(40, 0), None, TrainConfig(precision="fp32", batch_size=8), device="cpu")
    history = trainer.fit()
    expected = stopping.budget(trainer.steps_per_epoch, cached=False, has_val=False)
    assert len(history.epochs) == expected.max_epochs == expected.min_epochs
    assert any("No validation images, so no early stopping" in note for note in history.notes)


@pytest.mark.parametrize(("steps", "cached"), [(1, True), (2, True), (40, True), (1875, True), (2, False), (500, False)])
def test_the_budget_is_in_steps_so_small_and_large_data_both_train(steps: int, cached: bool) -> None:
    limits = stopping.budget(steps, cached=cached, has_val=True)
    assert limits.min_epochs * steps >= min(stopping.MIN_STEPS, limits.max_epochs * steps)
    assert limits.min_epochs <= limits.max_epochs
    if cached:
        assert limits.max_epochs * steps >= stopping.MAX_STEPS or limits.max_epochs == 500
    else:
        assert limits.max_epochs <= stopping.MAX_FULL_PASS_EPOCHS


def test_stop_keeps_the_best_epoch_of_an_automatic_run_too() -> None:
    model = _head_net()
    seen = _Weights()

    def stop_at_four(trainer, epoch, logs):
        if epoch == 4:
            trainer.request_stop()

    trainer = Trainer(model, colour_task(30, 0), colour_task(30, 1), TrainConfig(lr=3e-2, precision="fp32", batch_size=8),
                      device="cpu", callbacks=[seen, LambdaCallback(on_epoch_end=stop_at_four)])
    history = trainer.fit()
    assert len(history.epochs) == 4
    best = min(seen.logs, key=lambda e: (seen.logs[e]["val_loss"], e))
    assert history.best_epoch == best
    assert all(torch.equal(v, seen.states[best][k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- class balance
def test_imbalanced_training_data_weighs_the_loss_and_says_so() -> None:
    data = colour_task(60, 0)
    keep = [i for i in range(60) if int(data.tensors[1][i]) != 2 or i < 9]  # class 2: 3 images, others 20
    small = torch.utils.data.TensorDataset(data.tensors[0][keep], data.tensors[1][keep])
    trainer = Trainer(_head_net(), small, None, TrainConfig(epochs=1, precision="fp32"), device="cpu")
    history = trainer.fit()
    weight = trainer.criterion.weight
    assert weight is not None and weight[2] > 5 * weight[0]
    counts = torch.bincount(small.tensors[1]).double()
    assert torch.allclose(weight.double(), counts.sum() / (3 * counts), rtol=1e-6)
    assert any("Classes are imbalanced" in note for note in history.notes)
    balanced = Trainer(_head_net(), colour_task(60, 0), None, TrainConfig(epochs=1, precision="fp32"), device="cpu")
    balanced.fit()
    assert balanced.criterion.weight is None
    forced = Trainer(_head_net(), small, None, TrainConfig(epochs=1, class_weights="none"), device="cpu")
    forced.fit()
    assert forced.criterion.weight is None


def test_the_imbalance_note_appears_for_an_imbalanced_folder_and_not_for_a_balanced_one(tmp_path: Path) -> None:
    from tlwidgets.core.data import load_data

    balanced = load_data(make_image_folder(tmp_path / "even", classes=3, per_class=12), val_fraction=0.25)
    assert imbalance_note(balanced.report.counts["train"].to_dict()) is None
    uneven = make_image_folder(tmp_path / "uneven", classes=3, per_class=12)
    for path in sorted((uneven / "class_2").iterdir())[3:]:
        path.unlink()
    bundle = load_data(uneven, val_fraction=0.25)
    note = imbalance_note(bundle.report.counts["total"].to_dict())
    assert note is not None and "class_2" in note and "4.0" in note and "balance" in note


# ----------------------------------------------------------------------------- feature cache
def test_the_feature_cache_survives_a_new_head_and_is_rebuilt_when_the_prefix_changes(image_folder: Path) -> None:
    s = ready_session(image_folder, "resnet18", torch_seed=0, epochs=1, batch_size=8, precision="fp32")
    stats = s.feature_cache.stats
    s.fit()
    images = len(s.data.train) + len(s.data.val)
    assert stats["images_extracted"] == images and stats["builds"] == 1
    for change in (lambda: s.replace_head(dropout=0.3), lambda: s.replace_head(hidden=16),
                   lambda: s.configure(lr=3e-3, epochs=2)):
        change()
        s.fit()
        assert stats["images_extracted"] == images and stats["builds"] == 1  # no new feature pass
    s.unfreeze("layer4")  # the frozen prefix ends earlier now
    s.fit()
    assert stats["builds"] == 2 and stats["images_extracted"] == 2 * images
    s.freeze_backbone()
    s.image_size = 96  # the transforms change the images the prefix sees
    s.fit()
    assert stats["builds"] == 3 and stats["images_extracted"] == 3 * images


def test_the_auto_message_reports_the_kept_epoch(image_folder: Path) -> None:
    s = ready_session(image_folder, "resnet18", torch_seed=0, batch_size=8, precision="fp32")
    history = s.fit()
    kept = history.best_epoch or len(history.epochs)
    acc = history.epochs[kept - 1]["val_acc"]
    assert f"validation accuracy {acc:.1%}" in s.message
    assert math.isfinite(history.epochs[-1]["val_loss"])
    assert s.config.epochs == "auto"
