"""Train and assess: a recipe (Quick, Better, Best), options bound to ``session.config``,
Train/Stop, live curves, results.

Training runs in one background thread, so the cell returns at once and a Stop click
reaches the kernel while the model trains. That thread only *sets values* of widgets
built here in ``__init__`` (and the FigureWidget, which it alone mutates while a run
lasts); errors raised in it go to the panel's error area.

The panel owns its parts: the recipe picker (``_preset_picker.py``), the options form
(``_training_options.py``), the progress line with the run's account (``_run_progress.py``),
the live curves (``live_curves.py``), the assessment (``assessment.py``) and the export bar
(``export_bar.py``); this module holds Train and Stop, the run's thread, and the layout.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets

from ..core import presets
from ..core.errors import BusyError, TrainingError
from ..core.session import Session
from ..core.status import Status
from ._panel import Panel, guarded
from ._preset_picker import PresetPicker
from ._run_progress import RunProgress
from ._training_options import TrainingOptions
from .assessment import Assessment
from .export_bar import ExportBar
from .live_curves import LiveCurves


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

        self._picker = PresetPicker(self.session, running=lambda: self.running)
        self.preset, self.preset_info = self._picker.preset, self._picker.preset_info
        self._form = TrainingOptions(self.session, on_error=self.show_error, on_clear_error=self.clear_error)
        self.auto_epochs, self.options = self._form.auto_epochs, self._form.options
        self.epochs, self.batch_size = self._form.epochs, self._form.batch_size
        self.optimizer, self.lr, self.schedule = self._form.optimizer, self._form.lr, self._form.schedule
        self.weight_decay, self.label_smoothing = self._form.weight_decay, self._form.label_smoothing

        self.train_button = widgets.Button(description="Train", icon="play", button_style="primary")
        self.train_button.add_class("tlw-train")
        self.train_button.on_click(self._on_train_click)
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="warning", disabled=True,
                                          tooltip="Stop after the current batch")
        self.stop_button.add_class("tlw-stop")
        self.stop_button.on_click(self._on_stop_click)
        self.hint = widgets.HTML("")
        self.hint.add_class("tlw-train-hint")
        self._progress = RunProgress(self._stop_requested, min_interval)
        self.progress, self.progress_bar = self._progress.line, self._progress.bar

        self.live = LiveCurves(min_interval=min_interval)
        self.curves_fig = self.live.fig
        self.curves_fig.add_class("tlw-curves")
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

        self.set_body(
            self.preset,
            self.preset_info,
            *self._form.rows(),
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
        self.observe_session(self._picker.on_inputs_change, ["model_version", "data_version", "image_size", "config"])
        self.observe_session(self._picker.on_freezing_change, ["frozen", "lr_factors"])
        self._picker.on_freezing_change({})  # a session whose freezing was set by hand starts on Custom
        self._form.show()
        self._picker.show_info()
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
        self._form.set_running(running)
        self.preset.disabled = running

    # ------------------------------------------------------------------ observers
    def _on_session_config(self, change: dict) -> None:
        self._form.show()

    def _on_session_state(self, change: dict) -> None:
        self._sync_buttons()

    def _on_session_history(self, change: dict) -> None:
        # From the training thread after a fit: the figure then shows the model's whole history.
        self.live.load_history(change["new"])
        if change["new"] is None:
            self._progress.clear()

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
            self._progress.begin(self.preset.value)
            self._running = True
            self._sync_buttons()
            self.progress.value = html.escape(f"Starting {self._progress.preset_name}…")
            # The curves continue when the fit will continue the model's history.
            self.live.load_history(self.session.history if self.session.continues_history else None)
            self.thread = threading.Thread(target=self._run, name="tlwidgets-train", daemon=True)
            self.thread.start()
            return self.thread

    def _run(self) -> None:
        try:
            try:
                presets.run_preset(self.session, self._progress.preset_name, callbacks=[self.live, self._progress],
                                   on_phase=self._progress.on_phase)
            except BaseException as exc:  # noqa: BLE001 - the thread's errors belong in the panel
                self._progress.failed = True
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
            self._picker.show_info()

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

