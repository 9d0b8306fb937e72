"""lr_find restores the model exactly; fine_tune trains the head, then everything with stage LRs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ready_session
from tlwidgets import Session
from tlwidgets.core import recipes
from tlwidgets.core.errors import BusyError
from tlwidgets.core.training import TrainConfig


@pytest.fixture
def session(image_folder: Path, tiny_size: int) -> Session:
    return ready_session(image_folder, "resnet18", image_size=tiny_size, torch_seed=0, batch_size=4)


def test_lr_find_restores_weights_bit_identically_and_suggests(session: Session) -> None:
    s = session
    s.fit(epochs=1)
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    history, config, builds = s.history, s.config, s.feature_cache.stats["builds"]
    result = s.lr_find(num_it=40, end_lr=100.0)
    frame, suggestion = result  # unpacks
    assert list(frame.columns) == ["lr", "loss", "raw_loss"]
    assert 12 <= len(frame) <= 40
    assert frame["lr"].is_monotonic_increasing and frame["lr"].iloc[0] == pytest.approx(1e-7)
    assert 1e-7 <= suggestion <= frame["lr"].iloc[-1]
    after = s.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm buffers included
    assert s.history is history and s.config == config and s.status == "idle"
    # The frozen weights were not touched, so the cached features stay valid.
    assert s.feature_cache.stats["builds"] == builds
    assert "suggested learning rate" in s.message


@pytest.mark.parametrize("precision", ["auto", "fp32"])  # fp32 is what CPUs without bf16 run
def test_lr_find_on_a_diverging_sweep_stops_early(session: Session, precision: str) -> None:
    frame, _ = session.lr_find(num_it=100, start_lr=1e-3, end_lr=1e6, precision=precision)
    assert len(frame) < 100  # the loss exploded (or became NaN) long before 1e6
    assert frame["loss"].iloc[-1] > 4 * frame["loss"].min() or not np.isfinite(frame["raw_loss"].iloc[-1])


def test_lr_find_refuses_bad_arguments_and_while_training(session: Session) -> None:
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        session.lr_find(start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="num_it=1"):
        session.lr_find(num_it=1)
    session.status = "training"
    with pytest.raises(BusyError):
        session.lr_find()
    session.status = "idle"


def test_valley_picks_inside_the_longest_descent() -> None:
    lrs = [10.0**e for e in range(-7, 1)]
    losses = [2.0, 2.0, 1.9, 1.5, 1.0, 0.6, 0.9, 3.0]
    assert 1e-5 <= recipes.valley(lrs, losses) <= 1e-2


def test_fine_tune_unfreezes_with_stage_factors_and_one_history(session: Session) -> None:
    s = session
    trainable_before, total = s.trainable_params()
    modes: list[str] = []
    s.on_fit_start(lambda trainer: modes.append(trainer.mode))
    history = s.fine_tune(epochs_head=1, epochs_all=2, base_lr=1e-3, lr_mult=100)
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3]
    assert [b["step"] for b in history.batches] == list(range(1, len(history.batches) + 1))
    assert modes == ["cached features (head input)", "full passes: all layers trainable"]
    trainable_after, _ = s.trainable_params()
    assert trainable_before < trainable_after == total
    factors = s.lr_factors
    assert factors["conv1"] == pytest.approx(0.01) and factors["layer4"] < 1.0
    assert list(factors.values()) == sorted(factors.values())  # earlier stages learn slower
    assert s.config.lr == pytest.approx(5e-4)
    lrs = history.batch_frame()["lr"]
    assert lrs.iloc[:5].max() <= 1e-3 + 1e-12  # the head phase peaks at base_lr


def test_fine_tune_checks_arguments(session: Session) -> None:
    with pytest.raises(ValueError, match="not both 0"):
        session.fine_tune(0, 0)
    with pytest.raises(ValueError, match="lr_mult"):
        session.fine_tune(1, 1, lr_mult=0.5)
    assert session.config == TrainConfig(batch_size=4)  # nothing ran
