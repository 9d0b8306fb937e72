"""Compare several catalog models on the session's own data: accuracy, speed, size.

Each model is loaded, given a new head for the data's classes, trained briefly with a
frozen backbone, and measured. The training happens in a separate working session that
shares the loaded images, so the user's model, head, history and options stay exactly
as they were (a comparison is a side trip, not a change of model); ``keep="best"``
installs the most accurate compared model, trained head included, at the end instead.
Every compared fit is recorded in ``session.runs`` with the tag ``"compare"``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import catalog, speed, training
from .errors import BusyError, ConfigError, DataError, ModelError, WeightsUnavailableError
from .status import Status

if TYPE_CHECKING:  # pragma: no cover
    from .session import Session

COMPARE_COLUMNS = (
    "name", "pretrained", "val_acc", "ms_per_image", "size_mb", "params_m", "train_time_s", "epochs", "run", "note",
)
KEEP = ("original", "best")
CLASSIC_SMALL = ("squeezenet1_1", "shufflenet_v2_x1_0", "mobilenet_v2", "resnet18", "googlenet")

Progress = Callable[[int, int, str], Any]


class _StopOn(training.Callback):
    """Turns a set ``threading.Event`` into a stop request within one batch."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_fit_start(self, trainer: training.Trainer) -> None:
        if self.event.is_set():
            trainer.request_stop()

    def on_batch_end(self, trainer: training.Trainer, batch: int, logs: dict) -> None:
        if self.event.is_set():
            trainer.request_stop()


def classic_small_models() -> list[str]:
    """SqueezeNet 1.1, ShuffleNet v2 1.0, MobileNet v2, ResNet-18 and GoogLeNet, those in the catalog."""
    known = set(catalog.list_models()["name"])
    return [name for name in CLASSIC_SMALL if name in known]


def model_size_mb(model: Any) -> float:
    """Size of the model's saved weights (its state dict) in MiB."""
    tensors = model.state_dict().values()
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def _check_names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    names = list(dict.fromkeys(str(n) for n in names))
    if not names:
        raise ModelError("compare_models() needs at least one model name, e.g. ['resnet18', 'mobilenet_v2'].")
    for name in names:
        catalog.get_spec(name)  # unknown names fail before anything is trained
    return names


def _working_session(session: Session) -> Session:
    from .session import Session

    work = Session(device=session.device, image_size=session.image_size)
    # same images, its own transforms
    work.install_state(config=session.config, augment=session.augment, data=dataclasses.replace(session.data))
    return work


def _speed(name: str, device: str, batch_size: int) -> float:
    cached = speed.cached_speed(name, device)
    if cached is not None:
        return float(cached)
    return float(speed.measure_speed(name, device, batch_size=batch_size)["ms_per_image"])


def compare_models(
    session: Session,
    names: Iterable[str] | None = None,
    epochs: int = 2,
    stop_event: threading.Event | None = None,
    progress: Progress | None = None,
    *,
    pretrained: bool = True,
    keep: str = "original",
    on_result: Callable[[dict], Any] | None = None,
    speed_batch_size: int = 8,
    **fit_options: Any,
) -> pd.DataFrame:
    """Train each model briefly on the session's data and measure it.

    For every name: load the model (pretrained weights where available, else random
    ones, said in ``note``), replace the head for the data's classes, freeze the
    backbone, train ``epochs`` epochs, then read the last validation accuracy and time
    predictions with :func:`~tlwidgets.core.speed.measure_speed` (a cached measurement
    on the same device is reused). One failing model does not end the comparison.

    Args:
        session: a session with data loaded; its model and options are left unchanged.
        names: catalog names; default :func:`classic_small_models`.
        epochs: training epochs per model.
        stop_event: set it (from any thread) to stop within one batch; models not
            started yet are skipped.
        progress: ``progress(done, total, text)`` before each step of each model.
        pretrained: start from pretrained weights (False: random weights for all).
        keep: ``"original"`` keeps the session's model; ``"best"`` installs the compared
            model with the highest validation accuracy, trained head and history included.
        on_result: called with each model's row as soon as it is measured.
        speed_batch_size: batch size of the prediction-time measurement.
        **fit_options: :class:`~tlwidgets.core.training.TrainConfig` fields for these fits
            (``lr``, ``batch_size``, ``max_batches_per_epoch`` ...); the session's own
            options are the defaults and stay unchanged.

    Returns:
        One row per model that was started, in the given order: name, pretrained,
        val_acc, ms_per_image, size_mb (the adapted model's weights), params_m,
        train_time_s, epochs (completed), run (id in ``session.runs``), note.

    Raises:
        DataError: no data loaded. ModelError: no or unknown names.
        ConfigError: a bad ``keep`` or training option. BusyError: the session is training.
    """
    session.require_idle("compare models")  # it records runs and shares the cores with the fit
    if session.data is None:
        raise DataError("compare_models() trains on the session's data: load data first (session.load_data(...)).")
    if keep not in KEEP:
        raise ConfigError(f"keep={keep!r} is not one of {', '.join(map(repr, KEEP))}.")
    names = _check_names(classic_small_models() if names is None else names)
    session.config.replaced(epochs=epochs, **fit_options)
    stop_event = stop_event if stop_event is not None else threading.Event()
    stopper = _StopOn(stop_event)
    work = _working_session(session)
    total = len(names)
    report = progress if progress is not None else (lambda done, total, text: None)
    rows: list[dict] = []
    best: dict[str, Any] | None = None
    for i, name in enumerate(names):
        if stop_event.is_set():
            break
        row: dict[str, Any] = dict.fromkeys(COMPARE_COLUMNS, math.nan)
        row.update(name=name, pretrained=None, run=None, note="", epochs=0)
        rows.append(row)
        try:
            report(i, total, f"Loading {name} ({i + 1}/{total})")
            row["pretrained"] = _load(work, name, pretrained, row)
            work.replace_head()
            work.freeze_backbone()
            report(i, total, f"Training {name} ({i + 1}/{total})")
            with session.recorder.attached(work, tag="compare"):
                history = work.fit(epochs=epochs, callbacks=[stopper], **fit_options)
            run = next(r for r in reversed(session.runs) if r.tag == "compare" and r.model == name)
            last = history.epochs[-1] if history.epochs else {}
            row.update(val_acc=float(last.get("val_acc", math.nan)), train_time_s=run.wall_time_s,
                       epochs=len(history.epochs), run=run.id)
            row["size_mb"] = model_size_mb(work.model)
            row["params_m"] = sum(p.numel() for p in work.model.parameters()) / 1e6
            if history.stopped:
                row["note"] = _join(row["note"], "stopped")
                break
            report(i, total, f"Timing {name} ({i + 1}/{total})")
            row["ms_per_image"] = _speed(name, work.device, speed_batch_size)
            session.recorder.annotate(run.id, ms_per_image=row["ms_per_image"], size_mb=row["size_mb"])
            if keep == "best" and row["val_acc"] == row["val_acc"] and (best is None or row["val_acc"] > best["acc"]):
                best = {"acc": row["val_acc"], "name": name, "pretrained": row["pretrained"], "model": work.model,
                        "head": work.head, "classes": work.classes, "frozen": work.frozen, "history": work.history}
        except Exception as exc:  # noqa: BLE001 - one failing model must not end the comparison
            row["note"] = _join(row["note"], f"failed: {type(exc).__name__}: {exc}")
        finally:
            if on_result is not None:
                on_result(dict(row))
    stopped = stop_event.is_set()
    report(len(rows) if stopped else total, total,
           f"Stopped after {len(rows)} of {total} models." if stopped else f"Compared {total} models.")
    if best is not None:
        _install(session, best)
    return pd.DataFrame.from_records(rows, columns=list(COMPARE_COLUMNS))


def _join(note: str, more: str) -> str:
    return f"{note}; {more}" if note else more


def _load(work: Session, name: str, pretrained: bool, row: dict) -> bool:
    """Load ``name`` into the working session; returns whether pretrained weights were used."""
    if pretrained:
        try:
            work.load_model(name, pretrained=True)
            return True
        except WeightsUnavailableError:
            row["note"] = "pretrained weights unavailable offline: random weights"
    work.load_model(name, pretrained=False)
    return False


def _install(session: Session, best: dict[str, Any]) -> None:
    """Make the best compared model, with its trained head and history, the session's model."""
    if session.status != Status.IDLE:
        raise BusyError(f"Cannot make {best['name']} the session's model while training runs; the comparison "
                        "itself is in session.runs_frame().")
    # load_model sets the spec, weights flag and transforms the usual way; then the trained
    # parts replace the fresh ones.
    session.load_model(best["name"], pretrained=best["pretrained"])
    session.install_state(model=best["model"], head=best["head"], classes=best["classes"], frozen=best["frozen"],
                          history=best["history"],
                          message=f"Kept {best['name']}, the most accurate compared model "
                                  f"(validation accuracy {best['acc']:.1%}).")
