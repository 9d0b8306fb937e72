"""Train and assess: a recipe (Quick, Better, Best), options bound to ``session.config``,
Train/Stop, live curves, results.

Training runs in one background thread, so the cell returns at once and a Stop click
reaches the kernel while the model trains. That thread only *sets values* of widgets
built here in ``__init__`` (and the FigureWidget, which it alone mutates while a run
lasts); errors raised in it go to the panel's error area.
"""

from __future__ import annotations

import html
import math
import threading
import time
from typing import Any

import ipywidgets as widgets

from ..core import presets
from ..core.errors import BusyError, ConfigError, TrainingError
from ..core.session import Session
from ..core.status import Status
from ..core.training import OPTIMIZERS, SCHEDULES, Callback
from ._panel import Panel, guarded
from .assessment import Assessment
from .export_bar import ExportBar
from .live_curves import LiveCurves

_DESC = {"description_width": "110px"}
_IDLE_TEXT = "<span style='color:#777'>Not trained yet.</span>"


def _about(seconds: float) -> str:
    """A rounded duration in words: ``"about 40 s"``, ``"about 3 min"``, ``"about 1 h 20 min"``."""
    if seconds < 10:
        return f"about {max(round(seconds), 1)} s"
    if seconds < 60:
        return f"about {5 * round(seconds / 5)} s"
    minutes = round(seconds / 60)
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60} min"


def _clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Progress(Callback):
    """Writes epoch/batch, images per second, elapsed time and ETA into the panel, throttled."""

    def __init__(self, panel: TrainingPanel, min_interval: float) -> None:
        self.panel = panel
        self.min_interval = min_interval
        self._start = time.perf_counter()
        self._last = -math.inf
        self.epochs = self.per_epoch = 1
        self.auto = False
        self.epoch = self.batch = self.done = 0
        self.images_per_s = math.nan
        self.mode = ""
        self.started = False

    def on_fit_start(self, trainer: Any) -> None:
        self.started = True
        self.panel._failed = False  # a run retried with a smaller batch after running out of memory
        if self.panel._stop_requested.is_set():  # Stop pressed before the trainer existed
            trainer.request_stop()
        self._start = time.perf_counter()
        self._last = -math.inf
        self.epochs = int(getattr(trainer, "max_epochs", 0) or trainer.config.epochs)
        self.auto = trainer.config.epochs == "auto"
        self.per_epoch = max(int(getattr(trainer, "steps_per_epoch", 0) or 0), 1)
        self.epoch = 1
        self.batch = self.done = 0
        self.images_per_s = math.nan
        self.mode = str(getattr(trainer, "mode", "") or "")  # cached features or full passes
        self.panel.progress_bar.max = self.epochs * self.per_epoch
        self.panel.progress_bar.value = 0
        self.panel.progress_bar.bar_style = "info"
        self._draw()

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.epoch = epoch
        self.batch = 0

    def on_batch_end(self, trainer: Any, batch: int, logs: dict) -> None:
        self.batch = batch
        self.done += 1
        self.images_per_s = float(logs.get("images_per_s", math.nan))
        if time.perf_counter() - self._last >= self.min_interval:
            self._draw()

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict) -> None:
        self._draw()

    def on_fit_end(self, trainer: Any, history: Any) -> None:
        panel = self.panel
        elapsed = _clock(time.perf_counter() - self._start)
        n = len(history.epochs)
        panel._preset_epochs += n
        phase = panel._phase
        if phase is not None and phase[0] < phase[1] and not (panel._failed or history.stopped):
            panel.progress.value = html.escape(f"{panel._phase_label()}: done after {n} epochs ({elapsed}).")
            return  # the next phase follows
        if panel._failed:
            text, style = f"Failed after {n} epochs and {self.done} batches ({elapsed}).", "danger"
        elif history.stopped:
            text, style = f"Stopped after {n} complete epochs, {self.done} batches ({elapsed}).", "warning"
        else:
            total = _clock(time.perf_counter() - panel._preset_start)
            text = f"Done: {panel._preset_epochs} epochs in {total}" + (f"; {self.mode}." if self.mode else ".")
            style = "success"
        notes = " ".join(getattr(trainer, "notes", ()))  # e.g. retried with a smaller batch
        if notes:
            text = f"{notes} {text}"
        text = f"{text} {panel._preset_summary()}".strip()
        self.panel.progress_bar.value = self.done
        self.panel.progress_bar.bar_style = style
        self.panel.progress.value = html.escape(text)

    def on_exception(self, trainer: Any, exc: BaseException) -> None:
        self.panel._failed = True

    def _draw(self) -> None:
        self._last = now = time.perf_counter()
        elapsed = now - self._start
        total = self.epochs * self.per_epoch
        eta = elapsed / self.done * (total - self.done) if self.done else math.nan
        ips = f"{self.images_per_s:,.0f} images/s" if math.isfinite(self.images_per_s) else "– images/s"
        label = self.panel._phase_label()
        self.panel.progress.value = (
            (f"{html.escape(label)} · " if label else "")
            + f"Epoch {self.epoch}/{f'at most {self.epochs}' if self.auto else self.epochs} · batch {self.batch}/{self.per_epoch} · {ips} · "
            f"elapsed {_clock(elapsed)} · ETA {_clock(eta)}"
            + (f" · {html.escape(self.mode)}" if self.mode else "")
        )
        self.panel.progress_bar.value = min(self.done, self.panel.progress_bar.max)


class TrainingPanel(Panel):
    """A recipe, training options, Train/Stop buttons, live curves and the assessment of the result.

    Train runs the chosen preset of :mod:`tlwidgets.core.presets`: Quick (the head on a
    frozen backbone), Better (then the backbone's last stage at a tenth of the learning
    rate) or Best (then every layer, with learning rates rising toward the head). The
    presets set the freezing and LR factors themselves and train with the options below:
    Quick with all of them as they are (its epochs too), Better and Best with
    ``epochs="auto"`` in every phase; the options are as they were when the run ends.

    Args:
        session: the shared session (a new one when omitted).
        title: heading of the panel.
        min_interval: seconds between two refreshes of the curves and the progress line.

    Attributes:
        preset: the recipe, Quick / Better / Best (``tlw-preset``).
        preset_info: what the recipe does and how long it should take on this machine, or
            what is missing to tell (``tlw-preset-info``).
        epochs, batch_size, optimizer, lr, schedule, weight_decay, label_smoothing: option
            widgets; each change goes to ``session.configure`` and each change of
            ``session.config`` shows in them.
        train_button: starts :meth:`start` (``tlw-train``). stop_button: asks the run to stop (``tlw-stop``).
        hint: why Train is disabled, when it is (``tlw-train-hint``).
        progress: the recipe and its phase, epoch, batch, images/s, elapsed, ETA and how
            batches are fed (cached features or full passes); at the end what the recipe
            changed (``tlw-progress``); progress_bar: IntProgress.
        live: the :class:`LiveCurves` callback; curves_fig: its FigureWidget (``tlw-curves``).
        assessment: the :class:`Assessment` views, also reachable as accuracy_label,
            confusion_fig, per_class_table, misclassified, upload, predictions.
        export_bar: the :class:`ExportBar`: export_path (``tlw-export-path``), save_button
            (``tlw-save``), export_onnx_button (``tlw-export-onnx``), script_button (``tlw-script``),
            export_result (``tlw-export-result``).
        thread: the thread of the current or last run (``None`` before the first).
    """

    css_class = "tlw-training-panel"

    def __init__(self, session: Session | None = None, title: str | None = "Train", min_interval: float = 0.25) -> None:
        super().__init__(session, title)
        self.thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stop_requested = threading.Event()
        self._running = False
        self._failed = False
        self._syncing = False
        self._phase: tuple[int, int, presets.Phase] | None = None  # index, count, phase of the run
        self._changes: list[str] = []
        self._preset_name = "Quick"
        self._preset_epochs = 0
        self._preset_start = time.perf_counter()

        self.preset = widgets.ToggleButtons(
            options=list(presets.PRESETS), value="Quick", description="Recipe", style=_DESC,
            tooltips=list(presets.PRESETS.values()))
        self.preset.add_class("tlw-preset")
        self.preset.observe(self._on_preset_change, names="value")
        self.preset_info = widgets.HTML("")
        self.preset_info.add_class("tlw-preset-info")

        self.auto_epochs = widgets.Checkbox(
            value=True, description="Auto epochs: until the validation loss stops improving, keep the best",
            indent=False, layout=widgets.Layout(width="auto"))
        self.auto_epochs.add_class("tlw-opt-auto-epochs")
        self.auto_epochs.observe(self._on_auto_epochs, names="value")
        # Plain boxes, not bounded ones: a value out of range gets a message in plain words from
        # the session's own check, instead of being silently clamped.
        self._epochs_number = 20
        self.epochs = widgets.IntText(value=20, description="Epochs", style=_DESC)
        self.batch_size = widgets.BoundedIntText(description="Batch size", min=1, max=4096, style=_DESC)
        self.optimizer = widgets.Dropdown(description="Optimizer", options=list(OPTIMIZERS), style=_DESC)
        self.lr = widgets.Text(description="Learning rate", placeholder="e.g. 3e-3", continuous_update=False,
                               style=_DESC)
        self.schedule = widgets.Dropdown(description="LR schedule", options=list(SCHEDULES), style=_DESC)
        self.weight_decay = widgets.BoundedFloatText(
            description="Weight decay", min=0.0, max=1.0, step=1e-4, style=_DESC
        )
        self.label_smoothing = widgets.BoundedFloatText(
            description="Label smoothing", min=0.0, max=0.99, step=0.05, style=_DESC
        )
        self.options = {
            "epochs": self.epochs, "batch_size": self.batch_size, "optimizer": self.optimizer, "lr": self.lr,
            "schedule": self.schedule, "weight_decay": self.weight_decay, "label_smoothing": self.label_smoothing,
        }
        for name, widget in self.options.items():
            widget.add_class(f"tlw-opt-{name.replace('_', '-')}")
            widget.observe(self._on_option_change, names="value")

        self.train_button = widgets.Button(description="Train", icon="play", button_style="primary")
        self.train_button.add_class("tlw-train")
        self.train_button.on_click(self._on_train_click)
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="warning", disabled=True,
                                          tooltip="Stop after the current batch")
        self.stop_button.add_class("tlw-stop")
        self.stop_button.on_click(self._on_stop_click)
        self.hint = widgets.HTML("")
        self.hint.add_class("tlw-train-hint")
        self.progress = widgets.HTML(_IDLE_TEXT)
        self.progress.add_class("tlw-progress")
        self.progress_bar = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="320px"))
        self.progress_bar.add_class("tlw-progress-bar")

        self.live = LiveCurves(min_interval=min_interval)
        self.curves_fig = self.live.fig
        self.curves_fig.add_class("tlw-curves")
        self._progress = _Progress(self, min_interval)
        self.assessment = Assessment(self.session, on_error=self.show_error, on_clear_error=self.clear_error)
        self.accuracy_label = self.assessment.accuracy_label
        self.confusion_fig = self.assessment.confusion_fig
        self.per_class_table = self.assessment.per_class_table
        self.misclassified = self.assessment.misclassified
        self.upload = self.assessment.upload
        self.predictions = self.assessment.predictions
        self.export_bar = ExportBar(self.session, on_error=self.show_error, on_clear_error=self.clear_error)
        self.export_path, self.export_result = self.export_bar.path, self.export_bar.result
        self.save_button = self.export_bar.save_button
        self.export_onnx_button = self.export_bar.export_onnx_button
        self.script_button = self.export_bar.script_button

        names = list(self.options)
        self.set_body(
            self.preset,
            self.preset_info,
            self.auto_epochs,
            widgets.HBox([widgets.VBox([self.options[n] for n in names[:4]]),
                          widgets.VBox([self.options[n] for n in names[4:]])]),
            widgets.HBox([self.train_button, self.stop_button, self.hint]),
            widgets.HBox([self.progress_bar, self.progress]),
            self.curves_fig,
            self.assessment,
            self.export_bar,
        )
        self.observe_session(self._on_session_config, "config")
        self.observe_session(
            self._on_session_state, ["model", "model_version", "data", "data_version", "head", "classes", "frozen",
                                     "status"]
        )
        self.observe_session(self._on_session_history, "history")
        self.observe_session(self._on_session_preset_inputs, ["model_version", "data_version", "image_size", "config"])
        self.observe_session(self._on_session_freezing, ["frozen", "lr_factors"])
        self._on_session_freezing({})  # a session whose freezing was set by hand starts on Custom
        self._show_config()
        self._show_preset_info()
        self.live.load_history(self.session.history)
        self._sync_buttons()

    # ------------------------------------------------------------------ state
    def not_ready_reason(self) -> str | None:
        """Why training cannot start now, in plain words; ``None`` when it can."""
        # every recipe sets the freezing itself, so a frozen head is no obstacle here
        return self.session.readiness(require_trainable=False)

    @property
    def running(self) -> bool:
        """True from a Train click until its thread has finished (evaluation included)."""
        return self._running or self.session.status != Status.IDLE

    def _sync_buttons(self) -> None:
        running = self.running
        reason = None if running else self.not_ready_reason()
        self.train_button.disabled = running or reason is not None
        self.train_button.tooltip = "Training runs" if running else (reason or "Train in the background")
        self.stop_button.disabled = not running or self.session.status == Status.STOPPING or self._stop_requested.is_set()
        if running:
            self.hint.value = "<span style='color:#555'>Stopping…</span>" if self.session.status == Status.STOPPING else ""
        else:
            self.hint.value = f"<span style='color:#a60'>{html.escape(reason)}</span>" if reason else ""
        for widget in self.options.values():
            widget.disabled = running
        self.preset.disabled = running

    def _show_config(self) -> None:
        config = self.session.config
        self._syncing = True
        try:
            for name, widget in self.options.items():
                value = getattr(config, name)
                if name == "epochs":
                    self.auto_epochs.value = value == "auto"
                    widget.disabled = value == "auto"
                    if value == "auto":  # the box keeps the last number chosen, for when Auto is unticked
                        widget.value = self._epochs_number
                        continue
                    self._epochs_number = value
                widget.value = f"{value:g}" if name == "lr" else value
        finally:
            self._syncing = False

    def _phase_label(self) -> str:
        return "" if self._phase is None else presets.phase_label(self._preset_name, *self._phase)

    def _preset_summary(self) -> str:
        return "" if self._phase is None else presets.summary(self._preset_name, *self._phase[:2], self._changes)

    def _show_preset_info(self) -> None:
        if self.running:  # the run changes freezing and options: redraw once it ends
            return
        s, name = self.session, self.preset.value
        missing = [what for what, gone in (("a model", s.model is None), ("images", s.data is None)) if gone]
        if missing:
            estimate = f"Load {' and '.join(missing)} to see how long it takes."
        else:
            try:
                estimate = f"Time on this machine: {_about(presets.estimate_preset_seconds(s, name))}."
            except Exception as exc:  # noqa: BLE001 - the estimate must never block training
                estimate = f"No time estimate ({exc})."
        self.preset_info.value = (f"<b>{html.escape(name)}</b>: {html.escape(presets.PRESETS[name])} "
                                  f"<span style='color:#555'>{html.escape(estimate)}</span>")

    def _on_preset_change(self, change: dict) -> None:
        self._show_preset_info()

    def _on_session_preset_inputs(self, change: dict) -> None:
        self._show_preset_info()

    def _on_session_freezing(self, change: dict) -> None:
        """Freezing set by hand (Layers tab, code) makes Train use it: the recipe becomes Custom."""
        s = self.session
        if self.running or s.status != Status.IDLE or s.model is None or s.head is None:
            return
        head = s.head.path
        beyond_head = any(p.requires_grad and not (n == head or n.startswith(head + "."))
                          for n, p in s.model.named_parameters())
        if beyond_head or s.lr_factors:
            self.preset.value = "Custom"

    def _on_preset_phase(self, index: int, count: int, phase: presets.Phase) -> bool:
        if self._stop_requested.is_set():  # Stop between two phases: the next one does not start
            self.progress.value = html.escape(f"Stopped before phase {index} of {count}. {self._preset_summary()}")
            self.progress_bar.bar_style = "warning"
            return False
        self._phase = (index, count, phase)
        self._changes.append(phase.change)
        self.progress.value = html.escape(f"{self._phase_label()}…")
        return True

    def _on_auto_epochs(self, change: dict) -> None:
        if self._syncing:
            return
        self.session.configure(epochs="auto" if change["new"] else int(self.epochs.value))

    # ------------------------------------------------------------------ observers
    def _on_session_config(self, change: dict) -> None:
        self._show_config()

    def _on_session_state(self, change: dict) -> None:
        self._sync_buttons()

    def _on_session_history(self, change: dict) -> None:
        # From the training thread after a fit: the figure then shows the model's whole history.
        self.live.load_history(change["new"])
        if change["new"] is None:
            self.progress.value = _IDLE_TEXT
            self.progress_bar.value = 0
            self.progress_bar.bar_style = ""

    @guarded
    def _on_option_change(self, change: dict) -> None:
        if self._syncing:
            return
        name = next(n for n, w in self.options.items() if w is change["owner"])
        try:
            self.session.configure(**{name: _number(change["new"], "learning rate") if name == "lr" else change["new"]})
        except Exception:
            self._show_config()  # back to the valid value
            raise
        self.clear_error()

    # ------------------------------------------------------------------ actions
    def start(self) -> threading.Thread:
        """Start the chosen recipe (``preset``) in a background thread and return the thread at once.

        While a run lasts, calling again returns the running thread and starts nothing.

        Raises:
            BusyError: the session is training from elsewhere.
            TrainingError: training cannot start yet (no model, no data, head mismatch).
        """
        with self._start_lock:
            if self.thread is not None and self.thread.is_alive():
                return self.thread
            if self.session.status != Status.IDLE:
                raise BusyError("Training is already running: wait for it, or press Stop.")
            reason = self.not_ready_reason()
            if reason is not None:
                raise TrainingError(reason)
            self.clear_error()
            self._stop_requested.clear()
            self._failed = False
            self._progress.started = False
            self._phase, self._changes, self._preset_epochs = None, [], 0
            self._preset_name, self._preset_start = self.preset.value, time.perf_counter()
            self._running = True
            self._sync_buttons()
            self.progress.value = html.escape(f"Starting {self._preset_name}…")
            # The curves continue when the fit will continue the model's history.
            self.live.load_history(self.session.history if self.session.continues_history else None)
            self.thread = threading.Thread(target=self._run, name="tlwidgets-train", daemon=True)
            self.thread.start()
            return self.thread

    def _run(self) -> None:
        try:
            try:
                presets.run_preset(self.session, self._preset_name, callbacks=[self.live, self._progress],
                                   on_phase=self._on_preset_phase)
            except BaseException as exc:  # noqa: BLE001 - the thread's errors belong in the panel
                self._failed = True
                self.show_error(exc)
                if not self._progress.started:
                    self.progress.value = "Training did not start: see the error below."
                return
            bundle = self.session.data
            if bundle is not None and len(bundle.val) > 0:
                try:
                    self.session.evaluate()  # last_eval observer draws the results
                except Exception as exc:  # noqa: BLE001
                    self.show_error(exc)
        finally:
            self._running = False
            self._sync_buttons()
            self._show_preset_info()

    def stop(self) -> None:
        """Ask the run to stop after the current batch (what the Stop button does)."""
        self._stop_requested.set()
        self.session.request_stop()
        self._sync_buttons()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the current run (evaluation included); True when it has finished."""
        thread = self.thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def evaluate(self, folder: str | None = None) -> Any:
        """Evaluate now on the validation split or a folder, and show the results."""
        return self.assessment.evaluate(folder)

    def predict_files(self, files: Any, k: int = 3) -> Any:
        """Top-``k`` classes of ``[(name, bytes), ...]`` image files, shown as bars; returns the DataFrame."""
        return self.assessment.predict_files(files, k=k)

    @guarded
    def _on_train_click(self, _: Any) -> None:
        self.start()

    @guarded
    def _on_stop_click(self, _: Any) -> None:
        self.stop()

    def close(self) -> None:
        """Stop a run, detach from the session, close the widgets."""
        if self.running:
            self.session.request_stop()
        self.assessment.close()  # also when a subclass moved it out of the direct children
        self.export_bar.close()
        super().close()


def _number(text: Any, what: str) -> float:
    """A number typed into a text box; ConfigError in plain words when it is not one."""
    try:
        return float(str(text).strip())
    except ValueError:
        raise ConfigError(f"The {what} {str(text).strip()!r} is not a number: type one such as 3e-3 or 0.001.") from None
