"""Checkpoints of a fit: written atomically after every epoch, read back without running code.

``Session.fit(checkpoint=True)`` writes one file at the end of each epoch; after a
crash, a kill or a Stop, ``Session.fit(resume=True)`` goes on from the last finished
epoch with the same result as a run that was never interrupted. The file holds model
weights, optimizer and scheduler state, every random number generator (torch, CUDA,
numpy, Python and the data loader's shuffle), the history, the epoch and the options.

Only tensors, numbers, strings, lists and dicts are stored, so :func:`load` reads files
with ``torch.load(weights_only=True)``: a checkpoint from elsewhere can never run code.
A new checkpoint is written to a temporary file and renamed over the old one, so a kill
while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import layers
from ._cache import cache_dir
from .errors import TrainingError
from .paths import writable_file_target
from .training import Callback, History, TrainConfig, Trainer
from .weights import read_tensor_file

if TYPE_CHECKING:
    from .session import Session

FORMAT = "tlwidgets.checkpoint"
VERSION = 1
# Options that change how fast a run goes but not what it computes.
_FREE_OPTIONS = frozenset({"num_workers"})

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------------- files
def save(state: Mapping[str, Any], path: PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, flush to disk, rename)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`; never unpickles code.

    Raises:
        TrainingError: the file is missing, unreadable, holds Python objects other than
            plain data, or is not a tlwidgets checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TrainingError(f"No checkpoint at {path}: train with fit(checkpoint=...) to write one.")
    state = read_tensor_file(path, what="checkpoint", error=TrainingError)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainingError(f"{path} is not a tlwidgets training checkpoint (written by fit(checkpoint=...)).")
    if state.get("version") != VERSION:
        raise TrainingError(
            f"{path} is a version {state.get('version')!r} checkpoint; this tlwidgets reads version {VERSION}."
        )
    model, trainer, session = state.get("model"), state.get("trainer"), state.get("session")
    if not (isinstance(model, dict) and all(isinstance(v, torch.Tensor) for v in model.values())
            and isinstance(trainer, dict) and isinstance(session, dict)
            and {"epoch", "step", "config", "history", "optimizer", "rng"} <= set(trainer)
            and {"model", "classes", "trainable", "lr_factors", "base_history"} <= set(session)):
        raise TrainingError(f"The checkpoint {path} is incomplete or damaged; train again to write a new one.")
    return state


def default_path(session: Session) -> Path:
    """Where ``fit(checkpoint=True)`` writes: one file per model, head, classes and data source."""
    source = str(session.data.report.source) if session.data is not None else ""
    if source and Path(source).expanduser().exists():
        source = str(Path(source).expanduser().resolve())
    head = session.head
    key = json.dumps([session.spec.name, list(session.classes), source, head.path, head.num_classes])
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", session.spec.name)
    return cache_dir("checkpoints") / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.ckpt"


# ---------------------------------------------------------------------------- writing
class CheckpointCallback(Callback):
    """Writes a checkpoint at the end of every epoch.

    Args:
        path: the checkpoint file (replaced atomically each time).
        extra: more plain data stored alongside (the session's part of the state).
    """

    def __init__(self, path: PathLike, extra: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path).expanduser()
        self.extra = dict(extra or {})

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        model = {k: v.detach() for k, v in trainer.model.state_dict().items()}
        save({"format": FORMAT, "version": VERSION, **self.extra, "model": model,
              "trainer": trainer.state_dict()}, self.path)


# ---------------------------------------------------------------------------- a session's fit
@dataclasses.dataclass
class FitPlan:
    """Where a session's fit writes checkpoints and what it resumes from.

    Attributes:
        path: checkpoint file written after each epoch (``None``: none written).
        state: the checkpoint to resume from (``None``: a new run).
        note: one line on what was found, for the session's message.
    """

    path: Path | None = None
    state: dict[str, Any] | None = None
    note: str = ""

    def callbacks(self, session: Session) -> list[Callback]:
        """The checkpoint writer (first, so a failing callback after it cannot cost the epoch)."""
        if self.path is None:
            return []
        settings = session.settings()  # the session's settings, serialised as everywhere else
        base = self.state["session"]["base_history"] if self.state is not None else (
            settings.history if session.continues_history else None)
        extra = {"session": {
            "model": settings.model["name"], "classes": list(settings.classes), "head": settings.head,
            "trainable": [n for n, p in session.model.named_parameters() if p.requires_grad],
            "lr_factors": settings.lr_factors, "base_history": base,
        }}
        return [CheckpointCallback(self.path, extra)]

    def restore_session(self, session: Session) -> TrainConfig:
        """Load the checkpoint's weights, freezing, LR factors, options and prior history."""
        saved = self.state["session"]
        model = session.model
        model.load_state_dict(self.state["model"])
        trainable = set(saved["trainable"])
        for name, p in model.named_parameters():
            p.requires_grad_(name in trainable)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        config = TrainConfig(**{k: v for k, v in self.state["trainer"]["config"].items() if k in known})
        base = saved["base_history"]
        session.install_state(lr_factors=dict(saved["lr_factors"]), frozen=layers.frozen_names(model),
                              config=config, history=History(**base) if base is not None else None)
        return config

    def restore_trainer(self, trainer: Trainer) -> None:
        """Make the trainer continue after the checkpoint's last epoch."""
        if self.state is not None:
            trainer.restore(self.state["trainer"])


def plan_fit(
    session: Session, checkpoint: PathLike | bool | None, resume: PathLike | bool, options: Mapping[str, Any]
) -> FitPlan:
    """Check the checkpoint options of ``Session.fit`` and read the checkpoint to resume from.

    Nothing in the session changes here; :meth:`FitPlan.restore_session` does that.

    Args:
        checkpoint: ``True`` for :func:`default_path`, a file path, or ``None``/``False``.
        resume: ``True`` to go on from ``checkpoint`` (or the default file) when it
            exists, else train from the start; a path to go on from that file.
        options: the fit's option overrides; they must agree with a resumed run's.

    Raises:
        TrainingError: unreadable or foreign checkpoint, or options that differ from it.
    """
    path = None
    if checkpoint is True:
        path = default_path(session)
    elif checkpoint not in (None, False):
        path = Path(os.fspath(checkpoint)).expanduser()
    if path is not None:  # a checkpoint that cannot be written fails now, not after the first epoch
        writable_file_target(path, "checkpoint")
    if resume is False or resume is None:
        return FitPlan(path)
    if resume is True:
        source = path or default_path(session)
        if not source.is_file():
            return FitPlan(source, None, f"No checkpoint at {source} yet; training from the start.")
    else:
        source = Path(os.fspath(resume)).expanduser()
    state = load(source)
    _check_fits(session, state, source)
    config = state["trainer"]["config"]
    differ = [f"{k}={v!r} (the checkpoint has {config.get(k)!r})" for k, v in options.items()
              if k not in _FREE_OPTIONS and k in config and config[k] != v]
    if differ:
        raise TrainingError(
            f"Resuming continues the run saved in {source} with its own options, but these differ: "
            f"{', '.join(differ)}. Resume without them, or start a new run without resume=."
        )
    done, total = state["trainer"]["epoch"], config["epochs"]
    if total == "auto":  # the stopping callbacks start afresh from the resumed epoch
        total = int(state["trainer"].get("max_epochs") or done + 1)
    note = (f"Resumed from {source} after epoch {done} of {total}." if done < total
            else f"The run saved in {source} had finished ({total} epochs); its weights and history are restored.")
    return FitPlan(path or source, state, note)


def _check_fits(session: Session, state: Mapping[str, Any], source: Path) -> None:
    """Raise unless the checkpoint was written for this model, head and classes."""
    saved = state.get("session", {})
    model = session.model
    hint = (f"Load the same model, data and head as when it was written (model {saved.get('model')!r}, "
            f"{len(saved.get('classes', []))} classes), then resume.")
    if saved.get("model") != session.spec.name or list(saved.get("classes", [])) != list(session.classes):
        raise TrainingError(
            f"The checkpoint {source} is for model {saved.get('model')!r} with classes "
            f"{', '.join(map(str, saved.get('classes', [])[:5]))}..., not {session.spec.name!r} with "
            f"{', '.join(list(session.classes)[:5])}.... {hint}"
        )
    mine = model.state_dict()
    theirs = state["model"]
    wrong = sorted(set(mine) ^ set(theirs)) + [
        k for k in mine if k in theirs and tuple(mine[k].shape) != tuple(theirs[k].shape)
    ]
    if wrong:
        raise TrainingError(
            f"The checkpoint {source} does not fit the loaded model: {', '.join(wrong[:5])}"
            f"{' and more' if len(wrong) > 5 else ''} differ. {hint}"
        )
