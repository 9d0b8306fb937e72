"""A record of every training run of a session, for tables and side-by-side curves.

A :class:`RunRecorder` subscribes to a session's ``fit_start``/``fit_end`` events and,
when a fit ends (finished, stopped or failed), appends one :class:`Run` to the
session's ``runs`` trait: a new tuple each time, so observers fire. The recorder
can also listen to a second, short-lived session (the one a model comparison trains
in) and file its runs here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import TLWidgetsError

if TYPE_CHECKING:  # pragma: no cover
    from .session import Session
    from .training import History, Trainer

RUN_COLUMNS = (
    "run", "label", "model", "pretrained", "trained", "trainable_params", "epochs", "val_acc", "best_val_acc",
    "val_loss", "train_loss", "train_acc", "wall_time_s", "stopped", "failed", "optimizer", "lr", "batch_size",
    "image_size", "tag", "started",
)


@dataclass(frozen=True)
class Run:
    """One call to ``fit``: what was trained, how, and what came out.

    Attributes:
        id: 1-based number within the session.
        model: catalog name of the model.
        pretrained: True for pretrained weights, False for random ones, None when unknown.
        frozen: layers whose parameters were frozen.
        trainable_params: parameters that were trained; total_params: all parameters.
        head: the head (``HeadSpec`` fields as a dict), or None.
        options: the training options (``TrainConfig`` fields).
        history: per-batch and per-epoch logs of this fit alone (epochs from 1).
        first_epoch: epochs the model had been trained before this fit (a continued run).
        continues: id of the run this fit continued (same model, same head), or None.
        wall_time_s: seconds from start to end.
        started: local time the fit started.
        stopped: ended by a stop request; failed: ended by an error (``error`` says which).
        image_size: input side used.
        trained: what was trained, in words: ``"head only"``, ``"all layers"``, ``"5% of the weights"``.
        tag: free label (``"compare"`` for model comparisons).
        extra: further measurements, e.g. ``ms_per_image`` and ``size_mb``.
    """

    id: int
    model: str
    pretrained: bool | None
    frozen: tuple[str, ...]
    trainable_params: int
    total_params: int
    head: dict | None
    options: dict
    history: Any
    first_epoch: int = 0
    continues: int | None = None
    wall_time_s: float = math.nan
    started: datetime = field(default_factory=datetime.now)
    stopped: bool = False
    failed: bool = False
    error: str = ""
    image_size: int | None = None
    trained: str = ""
    tag: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def epochs(self) -> list[dict]:
        """Per-epoch logs of this fit."""
        return list(self.history.epochs) if self.history is not None else []

    def final(self, key: str) -> float:
        """Last epoch's value of ``key`` (``val_acc``, ``loss``, ...), NaN when no epoch ended."""
        epochs = self.epochs
        value = epochs[-1].get(key) if epochs else None
        return float(value) if value is not None else math.nan

    @property
    def best_val_acc(self) -> float:
        """Highest validation accuracy of any epoch (NaN when none)."""
        values = [float(e["val_acc"]) for e in self.epochs if e.get("val_acc") == e.get("val_acc")]
        return max(values) if values else math.nan

    @property
    def label(self) -> str:
        """Short name for menus and legends: ``"#2 resnet18 (random, all layers)"``."""
        weights = {True: "pretrained", False: "random", None: "weights ?"}[self.pretrained]
        parts = [weights, self.trained]
        if self.continues is not None:
            parts.append(f"after #{self.continues}")
        if self.tag:
            parts.append(self.tag)
        return f"#{self.id} {self.model} ({', '.join(parts)})"

    def row(self) -> dict[str, Any]:
        """This run as one row of :meth:`RunRecorder.frame`."""
        row = {
            "run": self.id, "label": self.label, "model": self.model, "pretrained": self.pretrained,
            "trained": self.trained, "trainable_params": self.trainable_params, "epochs": len(self.epochs),
            "val_acc": self.final("val_acc"), "best_val_acc": self.best_val_acc,
            "val_loss": self.final("val_loss"), "train_loss": self.final("loss"), "train_acc": self.final("acc"),
            "wall_time_s": self.wall_time_s, "stopped": self.stopped, "failed": self.failed,
            "optimizer": self.options.get("optimizer"), "lr": self.options.get("lr"),
            "batch_size": self.options.get("batch_size"), "image_size": self.image_size, "tag": self.tag,
            "started": pd.Timestamp(self.started),
        }
        row.update(self.extra)
        return row


def run_to_dict(run: Run) -> dict[str, Any]:
    """``run`` as plain data for a bundle's JSON (the history as batches and epochs)."""
    values = dataclasses.asdict(dataclasses.replace(run, history=None))
    history = run.history
    values["history"] = None if history is None else {
        "batches": list(history.batches), "epochs": list(history.epochs),
        "stopped": bool(history.stopped), "config": dict(history.config),
    }
    values["frozen"] = list(run.frozen)
    values["started"] = run.started.isoformat(timespec="seconds")
    return values


def run_from_dict(values: dict[str, Any], history: Any) -> Run:
    """The :class:`Run` that :func:`run_to_dict` wrote; ``history`` is its rebuilt History.

    Unknown keys (from a newer tlwidgets) are ignored; a missing or unreadable start time
    becomes the epoch start of the Unix clock rather than failing the whole bundle.
    """
    names = {f.name for f in dataclasses.fields(Run)}
    known = {k: v for k, v in values.items() if k in names}
    known["frozen"] = tuple(known.get("frozen") or ())
    known["history"] = history
    try:
        known["started"] = datetime.fromisoformat(str(known["started"]))
    except (KeyError, ValueError):
        known["started"] = datetime.fromtimestamp(0)
    known["wall_time_s"] = float(known.get("wall_time_s", math.nan))
    return Run(**known)


def _trained_words(model: Any, head_path: str | None, trainable: int, total: int) -> str:
    if trainable >= total:
        return "all layers"
    if head_path:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        if names and all(n.startswith(head_path + ".") for n in names):
            return "head only"
    return f"{trainable / max(total, 1):.0%} of the weights"


class RunRecorder:
    """Appends a :class:`Run` to ``session.runs`` at the end of every fit.

    Args:
        session: the session whose ``runs`` trait receives the runs; its own fits are recorded.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._lock = threading.Lock()
        self._pending: dict[int, dict[str, Any]] = {}  # id(source session) -> facts at fit start
        self._last: dict[int, tuple[int, int]] = {}  # id(source) -> (run id, id(model)) of its last run
        self._handlers: dict[int, tuple[_Handler, _Handler, _Handler]] = {}
        self.attach(session)

    def restore(self, runs: Iterable[Run], model: Any = None) -> None:
        """Put back the runs of a saved session; ``model`` is the one its last own run trained.

        A next fit of ``model`` then continues that run (``continues``), as it would have
        before saving.
        """
        runs = tuple(runs)
        self.session.install_state(runs=runs)
        own = [r for r in runs if not r.tag]
        if own and model is not None:
            self._last[id(self.session)] = (own[-1].id, id(model))

    # ------------------------------------------------------------------ wiring
    def attach(self, source: Session, tag: str = "") -> None:
        """Record the fits of ``source`` too (into this recorder's session), labelled ``tag``."""
        start = _Handler(self._on_fit_start, source, tag)
        end = _Handler(self._on_fit_end, source, tag)
        error = _Handler(self._on_exception, source, tag)
        source.on_fit_start(start)
        source.on_fit_end(end)
        source.on_exception(error)
        self._handlers[id(source)] = (start, end, error)

    def detach(self, source: Session) -> None:
        """Stop recording the fits of ``source``."""
        handlers = self._handlers.pop(id(source), None)
        if handlers is None:
            return
        start, end, error = handlers
        source.on_fit_start(start, remove=True)
        source.on_fit_end(end, remove=True)
        source.on_exception(error, remove=True)
        self._last.pop(id(source), None)

    @contextlib.contextmanager
    def attached(self, source: Session, tag: str = "") -> Iterator[None]:
        """Record the fits of ``source`` for the duration of a ``with`` block."""
        self.attach(source, tag)
        try:
            yield
        finally:
            self.detach(source)

    # ------------------------------------------------------------------ events
    def _on_fit_start(self, source: Session, tag: str, trainer: Trainer) -> None:
        model = source.model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        last = self._last.get(id(source))
        continues = None
        if source.history is not None and last is not None and last[1] == id(model):
            continues = last[0]
        self._pending[id(source)] = {
            "model": source.spec.name if source.spec is not None else type(model).__name__,
            "pretrained": getattr(source, "pretrained", None),
            "frozen": tuple(source.frozen),
            "trainable_params": int(trainable),
            "total_params": int(total),
            "trained": _trained_words(model, getattr(source.head, "path", None), trainable, total),
            "head": dataclasses.asdict(source.head) if dataclasses.is_dataclass(source.head) else None,
            "options": dataclasses.asdict(trainer.config),
            "first_epoch": len(source.history.epochs) if continues is not None else 0,
            "continues": continues,
            "image_size": source.input_size,
            "tag": tag,
            "started": datetime.now(),
            "_t0": time.perf_counter(),
            "_model": id(model),
            "error": "",
        }

    def _on_exception(self, source: Session, tag: str, exc: BaseException) -> None:
        facts = self._pending.get(id(source))
        if facts is not None:
            facts["error"] = f"{type(exc).__name__}: {exc}"

    def _on_fit_end(self, source: Session, tag: str, history: History) -> None:
        facts = self._pending.pop(id(source), None)
        if facts is None:
            return
        t0, model_id, error = facts.pop("_t0"), facts.pop("_model"), facts.pop("error")
        with self._lock:
            runs = tuple(self.session.runs)
            run = Run(
                id=(runs[-1].id if runs else 0) + 1, history=history, wall_time_s=time.perf_counter() - t0,
                stopped=bool(history.stopped) and not error, failed=bool(error), error=error, **facts,
            )
            self._last[id(source)] = (run.id, model_id)
            self.session.install_state(runs=(*runs, run))

    # ------------------------------------------------------------------ queries and edits
    def get(self, run_id: int) -> Run:
        """The run with this id; TLWidgetsError listing the ids there are when unknown."""
        for run in self.session.runs:
            if run.id == run_id:
                return run
        ids = ", ".join(str(r.id) for r in self.session.runs) or "none yet"
        raise TLWidgetsError(f"No run #{run_id}; recorded runs: {ids}.")

    def annotate(self, run_id: int, **extra: Any) -> Run:
        """Add measurements to a run (``annotate(3, ms_per_image=4.2)``); returns the new record."""
        with self._lock:
            old = self.get(run_id)
            new = dataclasses.replace(old, extra={**old.extra, **extra})
            self.session.install_state(runs=tuple(new if r.id == run_id else r for r in self.session.runs))
            return new

    def remove(self, run_ids: Iterable[int]) -> None:
        """Forget these runs (unknown ids are ignored)."""
        drop = set(run_ids)
        with self._lock:
            self.session.install_state(runs=tuple(r for r in self.session.runs if r.id not in drop))

    def frame(self) -> pd.DataFrame:
        """One row per run, oldest first (columns ``RUN_COLUMNS`` plus any measurements)."""
        rows = [run.row() for run in self.session.runs]
        frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=list(RUN_COLUMNS))
        extra = [c for c in frame.columns if c not in RUN_COLUMNS]
        return frame[[*RUN_COLUMNS, *extra]]


class _Handler:
    """A session event subscriber bound to its source session and tag (comparable for removal)."""

    def __init__(self, method: Any, source: Session, tag: str) -> None:
        self._method, self._source, self._tag = method, source, tag

    def __call__(self, arg: Any) -> None:
        self._method(self._source, self._tag, arg)
