"""Live loss and accuracy curves: a training callback that owns a Plotly FigureWidget.

The training loop calls the hooks from its own thread. Per batch the callback only
appends two numbers to numpy buffers; the figure is resent at most every
``min_interval`` seconds (and always at fit end), inside
``fig.batch_update()`` and thinned to ``max_points`` per curve, because plotly has
no Python-side extendTraces: every refresh resends x and y.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.errors import ConfigError
from ..core.training import Callback

#: Trace order in :attr:`LiveCurves.fig`.
TRAIN_LOSS, VAL_LOSS, TRAIN_ACC, VAL_ACC = range(4)

_TRAIN_COLOUR = "#1f77b4"
_VAL_COLOUR = "#d62728"


class _Buffer:
    """A growable float array: amortised O(1) append, a view of the filled part."""

    def __init__(self, capacity: int = 1024) -> None:
        self._data = np.empty(capacity, dtype=np.float64)
        self.size = 0

    def append(self, value: float) -> None:
        if self.size == len(self._data):
            grown = np.empty(2 * len(self._data), dtype=np.float64)
            grown[: self.size] = self._data
            self._data = grown
        self._data[self.size] = value
        self.size += 1

    def clear(self) -> None:
        self.size = 0

    @property
    def values(self) -> np.ndarray:
        return self._data[: self.size]


def _number(value: Any) -> float:
    """A float for the curves: tensors and numbers pass, anything else is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class LiveCurves(Callback):
    """Training and validation curves that update while a model trains.

    Left subplot: loss; right subplot: accuracy. Training values are per batch
    (an exponential moving average, bias-corrected like fastai's, so the first
    points are not pulled towards zero); validation values are one marker per
    epoch. The x axis counts batches seen since the history began.

    Args:
        min_interval: seconds between two figure refreshes during an epoch
            (``0`` refreshes on every batch).
        smoothing: EMA factor of the training curves (``0`` = raw values).
        max_points: most points sent per training curve; longer runs are thinned.
        height: figure height in pixels.

    Attributes:
        fig: the ``plotly.graph_objects.FigureWidget`` (traces: train loss,
            val loss, train accuracy, val accuracy).
        refresh_count: how many times the figure was resent.
    """

    def __init__(
        self, min_interval: float = 0.25, smoothing: float = 0.9, max_points: int = 1500, height: int = 320
    ) -> None:
        if min_interval < 0:
            raise ConfigError(f"min_interval={min_interval} must be 0 or more seconds.")
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"smoothing={smoothing} must be at least 0 and below 1.")
        if max_points < 2:
            raise ConfigError(f"max_points={max_points} must be at least 2.")
        self.min_interval = float(min_interval)
        self.smoothing = float(smoothing)
        self.max_points = int(max_points)
        self.refresh_count = 0
        self.fig = self._make_figure(height)
        self._steps = 0
        self._train_loss = _Buffer()
        self._train_acc = _Buffer()
        self._val_x = _Buffer(64)
        self._val_loss = _Buffer(64)
        self._val_acc = _Buffer(64)
        self._val_epoch = _Buffer(64)
        self._ema_loss = 0.0
        self._ema_acc = 0.0
        self._ema_weight = 0.0
        self._last_refresh = -math.inf

    # ------------------------------------------------------------------ figure
    @staticmethod
    def _make_figure(height: int) -> go.FigureWidget:
        base = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
        fig = go.FigureWidget(base)
        empty = np.empty(0)
        for col, unit in ((1, "loss"), (2, "accuracy")):
            first = col == 1  # one legend entry per pair
            fig.add_scatter(
                x=empty, y=empty, mode="lines", name="train" if first else f"train {unit}", legendgroup="train",
                line={"color": _TRAIN_COLOUR, "width": 1.5}, showlegend=first, row=1, col=col,
                hovertemplate="batch %{x}<br>%{y:.4f}<extra>train</extra>",
            )
            fig.add_scatter(
                x=empty, y=empty, mode="lines+markers", name="validation" if first else f"validation {unit}",
                legendgroup="val", line={"color": _VAL_COLOUR, "width": 1.5}, marker={"size": 7},
                showlegend=first, row=1, col=col, hovertemplate="epoch %{text}<br>%{y:.4f}<extra>validation</extra>",
            )
        fig.update_xaxes(title_text="batches seen", rangemode="tozero")
        fig.update_yaxes(rangemode="tozero", row=1, col=1)
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
        fig.update_layout(
            height=height, margin={"l": 50, "r": 20, "t": 40, "b": 40},
            legend={"orientation": "h", "y": -0.25}, template="plotly_white",
        )
        return fig

    @property
    def train_loss_trace(self) -> Any:
        """The smoothed training-loss trace."""
        return self.fig.data[TRAIN_LOSS]

    @property
    def val_loss_trace(self) -> Any:
        """The validation-loss trace (one point per epoch)."""
        return self.fig.data[VAL_LOSS]

    @property
    def train_acc_trace(self) -> Any:
        """The smoothed training-accuracy trace."""
        return self.fig.data[TRAIN_ACC]

    @property
    def val_acc_trace(self) -> Any:
        """The validation-accuracy trace (one point per epoch)."""
        return self.fig.data[VAL_ACC]

    @property
    def batches_seen(self) -> int:
        """Training batches recorded so far."""
        return self._steps

    @property
    def epochs_seen(self) -> int:
        """Validation points recorded so far."""
        return self._val_x.size

    # ------------------------------------------------------------------ data
    def reset(self) -> None:
        """Forget every point and clear the figure."""
        for buf in (self._train_loss, self._train_acc, self._val_x, self._val_loss, self._val_acc, self._val_epoch):
            buf.clear()
        self._steps = 0
        self._ema_loss = self._ema_acc = self._ema_weight = 0.0
        self.refresh()

    def _add_batch(self, loss: float, acc: float) -> None:
        beta = self.smoothing
        self._ema_weight = beta * self._ema_weight + (1.0 - beta)
        self._ema_loss = beta * self._ema_loss + (1.0 - beta) * loss
        self._ema_acc = beta * self._ema_acc + (1.0 - beta) * acc
        self._train_loss.append(self._ema_loss / self._ema_weight)
        self._train_acc.append(self._ema_acc / self._ema_weight)
        self._steps += 1

    def _add_epoch(self, epoch: float, val_loss: float, val_acc: float) -> None:
        self._val_x.append(self._steps)
        self._val_loss.append(val_loss)
        self._val_acc.append(val_acc)
        self._val_epoch.append(epoch)

    def load_history(self, history: Any) -> None:
        """Redraw from a :class:`~tlwidgets.core.training.History` (``None`` clears).

        Used after a run and when a fit happened without this callback, so the figure
        always shows the whole history of the current model.
        """
        for buf in (self._train_loss, self._train_acc, self._val_x, self._val_loss, self._val_acc, self._val_epoch):
            buf.clear()
        self._steps = 0
        self._ema_loss = self._ema_acc = self._ema_weight = 0.0
        if history is not None:
            batches = list(getattr(history, "batches", []) or [])
            batch_epochs = np.array([_number(b.get("epoch")) for b in batches], dtype=np.float64)
            for b in batches:
                self._add_batch(_number(b.get("loss")), _number(b.get("acc")))
            for i, e in enumerate(getattr(history, "epochs", []) or []):
                epoch = _number(e.get("epoch", i + 1))
                self._add_epoch(epoch, _number(e.get("val_loss")), _number(e.get("val_acc")))
                if batch_epochs.size and not math.isnan(epoch):
                    # batches of this epoch and before: where its validation point belongs
                    self._val_x.values[-1] = float(np.count_nonzero(batch_epochs <= epoch))
        self.refresh()

    def refresh(self) -> None:
        """Resend the curves to the figure (thinned), and count it."""
        n = self._steps
        if n > self.max_points:
            idx = np.linspace(0, n - 1, self.max_points).round().astype(np.int64)
        else:
            idx = np.arange(n)
        x = idx.astype(np.float64) + 1.0
        val_x = self._val_x.values.copy()
        val_text = [str(int(e)) if not math.isnan(e) else "" for e in self._val_epoch.values]
        with self.fig.batch_update():
            self.fig.data[TRAIN_LOSS].update(x=x, y=self._train_loss.values[idx])
            self.fig.data[TRAIN_ACC].update(x=x, y=self._train_acc.values[idx])
            self.fig.data[VAL_LOSS].update(x=val_x, y=self._val_loss.values.copy(), text=val_text)
            self.fig.data[VAL_ACC].update(x=val_x, y=self._val_acc.values.copy(), text=val_text)
        self.refresh_count += 1
        self._last_refresh = time.perf_counter()

    # ------------------------------------------------------------------ hooks
    def on_batch_end(self, trainer: Any, batch: int, logs: dict) -> None:
        """Append the batch's loss and accuracy; refresh when ``min_interval`` has passed."""
        self._add_batch(_number(logs.get("loss")), _number(logs.get("acc")))
        if time.perf_counter() - self._last_refresh >= self.min_interval:
            self.refresh()

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict) -> None:
        """Add the validation point; refresh when ``min_interval`` has passed.

        Epochs can be far shorter than ``min_interval`` (a head trained on cached
        features of a frozen backbone): refreshing at every epoch end would then send
        the figure many times a second and keep the browser busy redrawing it. The
        point shows at the next refresh, at the latest at fit end.
        """
        self._add_epoch(_number(logs.get("epoch", epoch)), _number(logs.get("val_loss")), _number(logs.get("val_acc")))
        if time.perf_counter() - self._last_refresh >= self.min_interval:
            self.refresh()

    def on_fit_end(self, trainer: Any, history: Any) -> None:
        """Refresh, so the last points show even if the run stopped mid-epoch."""
        self.refresh()
