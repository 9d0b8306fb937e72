"""LiveCurves: throttled refreshes, every validation point present, history redraw, cheap per batch."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np
import pytest

from tlwidgets.core.training import History
from tlwidgets.widgets.live_curves import TRAIN_LOSS, VAL_ACC, VAL_LOSS, LiveCurves

TRAINER = SimpleNamespace(config=SimpleNamespace(epochs=3), steps_per_epoch=1000)  # hooks ignore it


def _feed(curves: LiveCurves, epochs: int = 3, batches: int = 1000) -> list[dict]:
    """Drive the hooks like Trainer.fit does, as fast as Python allows."""
    rng = np.random.default_rng(0)
    epoch_logs = []
    curves.on_fit_start(TRAINER)
    for epoch in range(1, epochs + 1):
        curves.on_epoch_start(TRAINER, epoch)
        for batch in range(1, batches // epochs + 1):
            logs = {"epoch": epoch, "batch": batch, "loss": float(2.0 / epoch + rng.random() * 0.1),
                    "acc": float(rng.random()), "lr": 1e-3, "images_per_s": 100.0}
            curves.on_batch_end(TRAINER, batch, logs)
        logs = {"epoch": epoch, "loss": 1.0 / epoch, "acc": 0.5, "val_loss": 1.5 / epoch,
                "val_acc": 0.3 + 0.2 * epoch, "lr": 1e-3, "time_s": 1.0}
        epoch_logs.append(logs)
        curves.on_epoch_end(TRAINER, epoch, logs)
    curves.on_fit_end(TRAINER, History(epochs=epoch_logs))
    return epoch_logs


def test_throttle_limits_refreshes_and_keeps_every_epoch_point() -> None:
    curves = LiveCurves(min_interval=0.25)
    start = time.perf_counter()
    epoch_logs = _feed(curves)
    elapsed = time.perf_counter() - start
    # 999 batches + 3 epoch ends + 1 fit end: the first batch, one refresh per 0.25 s of
    # feeding, each epoch end and the fit end.
    assert curves.refresh_count <= 3 + 1 + 1 + math.ceil(elapsed / 0.25) + 1
    assert curves.refresh_count < 20
    val = curves.fig.data[VAL_ACC]
    assert list(val.y) == [e["val_acc"] for e in epoch_logs]
    assert list(curves.fig.data[VAL_LOSS].y) == [e["val_loss"] for e in epoch_logs]
    assert list(val.x) == [333.0, 666.0, 999.0]  # batches seen at each epoch end
    assert len(curves.fig.data[TRAIN_LOSS].y) == 999
    assert curves.batches_seen == 999 and curves.epochs_seen == 3


def test_no_throttle_refreshes_on_every_call() -> None:
    curves = LiveCurves(min_interval=0)
    _feed(curves)
    assert curves.refresh_count == 999 + 3 + 1


def test_train_curve_is_smoothed_and_bias_corrected() -> None:
    curves = LiveCurves(min_interval=0, smoothing=0.9)
    for i, loss in enumerate([4.0, 2.0, 2.0, 2.0]):
        curves.on_batch_end(TRAINER, i + 1, {"loss": loss, "acc": 1.0})
    y = np.asarray(curves.fig.data[TRAIN_LOSS].y)
    assert y[0] == pytest.approx(4.0)  # no pull towards zero at the start
    assert 2.0 < y[-1] < y[1] < 4.0
    raw = LiveCurves(min_interval=0, smoothing=0.0)
    raw.on_batch_end(TRAINER, 1, {"loss": 4.0, "acc": 1.0})
    raw.on_batch_end(TRAINER, 2, {"loss": 2.0, "acc": 1.0})
    assert list(raw.fig.data[TRAIN_LOSS].y) == [4.0, 2.0]


def test_long_runs_are_thinned_but_keep_the_last_point() -> None:
    curves = LiveCurves(min_interval=10.0, max_points=200, smoothing=0.0)
    for i in range(5000):
        curves.on_batch_end(TRAINER, i + 1, {"loss": float(i), "acc": 0.5})
    curves.refresh()
    trace = curves.fig.data[TRAIN_LOSS]
    assert len(trace.x) == 200
    assert trace.x[0] == 1 and trace.x[-1] == 5000 and trace.y[-1] == 4999.0


def test_per_batch_work_is_cheap() -> None:
    curves = LiveCurves(min_interval=3600)  # only the first batch refreshes
    logs = {"loss": 1.0, "acc": 0.5}
    curves.on_batch_end(TRAINER, 1, logs)
    start = time.perf_counter()
    for i in range(20_000):
        curves.on_batch_end(TRAINER, i + 2, logs)
    per_batch = (time.perf_counter() - start) / 20_000
    assert curves.refresh_count == 1
    assert per_batch < 50e-6  # a small CNN batch takes milliseconds: far below 3 %


def test_load_history_redraws_and_none_clears() -> None:
    batches = [{"epoch": e, "batch": b, "step": (e - 1) * 4 + b, "loss": 1.0, "acc": 0.5}
               for e in (1, 2) for b in range(1, 5)]
    epochs = [{"epoch": 1, "val_loss": 0.9, "val_acc": 0.6}, {"epoch": 2, "val_loss": 0.7, "val_acc": 0.8}]
    curves = LiveCurves()
    curves.load_history(History(batches=batches, epochs=epochs))
    assert list(curves.fig.data[VAL_ACC].x) == [4.0, 8.0]
    assert list(curves.fig.data[VAL_ACC].y) == [0.6, 0.8]
    assert len(curves.fig.data[TRAIN_LOSS].x) == 8
    curves.load_history(None)
    assert len(curves.fig.data[VAL_ACC].x) == 0 and len(curves.fig.data[TRAIN_LOSS].y) == 0


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        LiveCurves(min_interval=-1)
    with pytest.raises(ValueError, match="smoothing"):
        LiveCurves(smoothing=1.0)


def test_many_short_epochs_are_throttled_too() -> None:
    # A head trained on cached features runs an epoch in milliseconds: epoch ends must not
    # resend the figure every time, yet every validation point shows after the fit.
    curves = LiveCurves(min_interval=0.25)
    start = time.perf_counter()
    epoch_logs = _feed(curves, epochs=200, batches=400)
    elapsed = time.perf_counter() - start
    assert curves.refresh_count <= 2 + math.ceil(elapsed / 0.25) + 1 < 50
    assert list(curves.fig.data[VAL_ACC].y) == [e["val_acc"] for e in epoch_logs]
    assert curves.epochs_seen == 200
