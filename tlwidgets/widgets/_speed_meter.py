"""The model picker's "Measure speed" row: times models one by one in a background thread.

Each model is timed by :func:`tlwidgets.core.speed.measure_speed`, which runs it the way a
fit and a prediction will (the runtime chosen by measurement on a CPU), so the map shows
the speed the user gets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import ipywidgets as widgets

from ..core import speed
from ..core.device import describe


class SpeedMeter:
    """Measure / Stop buttons, batch size and progress; results kept per (device, model).

    Args:
        shown: the names a plain "Measure speed" times (the models on the map).
        device: the device to time on (the session's, read at each start).
        on_result: called after each model (timed or failed), to redraw the map.
        on_error: shows what could not be timed.
        on_idle: called when a measurement ends, to re-enable buttons by the session's state.
        batch_size: the batch the models are timed with.
    """

    def __init__(self, shown: Callable[[], list[str]], device: Callable[[], str],
                 on_result: Callable[[], None], on_error: Callable[[object], None],
                 on_idle: Callable[[], None], batch_size: int = 8) -> None:
        self._shown, self._device = shown, device
        self._on_result, self._on_error, self._on_idle = on_result, on_error, on_idle
        self.measured: dict[tuple[str, str], float] = {}
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.running = False
        self.button = widgets.Button(description="Measure speed", icon="clock-o",
                                     tooltip="Time the shown models on this machine")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.batch_size = widgets.BoundedIntText(value=batch_size, min=1, max=512, description="Batch",
                                                 layout=widgets.Layout(width="140px"))
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout=widgets.Layout(width="200px"))
        self.label = widgets.Label("")
        self.row = widgets.HBox([self.button, self.stop_button, self.batch_size, self.progress, self.label])
        self.button.add_class("tlw-measure")
        self.stop_button.add_class("tlw-measure-stop")
        self.stop_button.on_click(lambda _b: self._stop_clicked())

    def measure(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """Time models one by one (blocking); default: the shown ones.

        Stops between models once ``stop_event`` is set. Results go to the speed cache and
        to ``measured`` as each arrives. Returns ``{name: ms_per_image}`` of those timed.
        """
        todo = list(self._shown() if names is None else names)
        device = self._device()
        done: dict[str, float] = {}
        failed: list[str] = []
        self.running = True
        self.button.disabled = True
        self.stop_button.disabled = False
        self.progress.max, self.progress.value = max(len(todo), 1), 0
        try:
            for i, name in enumerate(todo):
                if self.stop_event.is_set():
                    self.label.value = f"Stopped after {i} of {len(todo)} models."
                    break
                self.label.value = f"Timing {name} ({i + 1}/{len(todo)})…"
                try:
                    result = speed.measure_speed(name, device, batch_size=int(self.batch_size.value))
                except Exception as exc:  # noqa: BLE001 - one failing model must not end the run
                    failed.append(f"{name} ({type(exc).__name__}: {exc})")
                else:
                    done[name] = self.measured[(device, name)] = float(result["ms_per_image"])
                self.progress.value = i + 1
                self._on_result()
            else:
                self.label.value = f"Timed {len(done)} models on {describe(device)}."
        finally:
            self.running = False
            self.stop_event.clear()
            self.stop_button.disabled = True
            self._on_idle()
        if failed:
            self._on_error("Could not time: " + "; ".join(failed))
        return done

    def start(self, names: Iterable[str] | None = None) -> threading.Thread:
        """Run :meth:`measure` in a background thread so Stop stays clickable; returns the thread."""
        if self.thread is not None and self.thread.is_alive():
            return self.thread
        self.stop_event.clear()
        todo = list(self._shown() if names is None else names)

        def run() -> None:
            try:
                self.measure(todo)
            except Exception as exc:  # noqa: BLE001 - errors of the thread reach the panel
                self._on_error(exc)

        self.thread = threading.Thread(target=run, name="tlwidgets-measure", daemon=True)
        self.thread.start()
        return self.thread

    def stop(self) -> None:
        """Ask a running measurement to stop after the current model."""
        self.stop_event.set()

    def _stop_clicked(self) -> None:
        self.stop()
        self.label.value = "Stopping after the current model…"
