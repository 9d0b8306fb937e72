"""Keeping a session's model intact when a fit fails, and retrying when memory runs out.

:func:`fit` runs a trainer for a :class:`~tlwidgets.core.session.Session`:

* a failing step (NaN loss, an error in a callback, out of memory) leaves the weights
  and the BatchNorm statistics as they were after the last completed step (a forward pass
  in training mode updates BatchNorm statistics before the loss is known: every trainer's
  :class:`~tlwidgets.core.callbacks.BufferGuard` puts them back);
* when memory runs out, the weights go back to where the run started, the batch size is
  halved and the run starts again, down to a batch of one.
"""

from __future__ import annotations

import dataclasses
import gc
import traceback
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import TrainingError
from .callbacks import BufferGuard  # noqa: F401 - every Trainer holds one; importable from here too
from .training import History, Trainer

if TYPE_CHECKING:
    from .session import Session

_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA, MPS and CPU allocation failures (also when wrapped by another error)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
            return True
        if isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _OOM_TEXT):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies (on the CPU) of everything a fit can change: trainable parameters and buffers."""
    state = {f"p:{n}": p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
    state.update({f"b:{n}": b.detach().to("cpu", copy=True) for n, b in model.named_buffers()})
    return state


def _put_back(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    tensors = {f"p:{n}": p for n, p in model.named_parameters()}
    tensors.update({f"b:{n}": b for n, b in model.named_buffers()})
    with torch.no_grad():
        for key, saved in state.items():
            tensors[key].copy_(saved)


def _free(trainer: Trainer) -> None:
    """Drop what the failed attempt allocated, so the retry starts with the memory it needs."""
    trainer.optimizer = trainer.scheduler = None
    for name in ("train_loader", "val_loader"):
        if hasattr(trainer, name):
            setattr(trainer, name, None)
    for p in trainer.model.parameters():
        p.grad = None
    gc.collect()
    if trainer.device.type == "cuda":
        torch.cuda.empty_cache()
    elif trainer.device.type == "mps":
        torch.mps.empty_cache()


def fit(session: Session, trainer: Trainer, retry: bool = True) -> History:
    """Run ``trainer.fit()`` for ``session``, halving the batch size when memory runs out.

    Each retry says so in ``session.message`` ("Out of memory with batch size 64;
    retrying with 32.") and keeps the smaller batch size in ``session.config``; the
    notes are also left in ``trainer.notes``.

    Args:
        retry: ``False`` for a resumed run, whose saved schedule fits only its batch size.

    Raises:
        TrainingError: out of memory with a batch size of one (or when ``retry`` is False);
            the weights are then those the run started with.
    """
    trainer.notes = []
    start = _snapshot(trainer.model)
    while True:
        try:
            return trainer.fit()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            size = trainer.config.batch_size
            detail = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__
            traceback.clear_frames(exc.__traceback__)  # the frames hold the failed batch's tensors
            error = None
            if size <= 1 or not retry:
                error = (f"Out of memory with batch size {size} ({detail}). "
                         + ("Use a smaller model or a smaller image size." if size <= 1 else
                            "A resumed run keeps its batch size: start a new run with a smaller batch_size.")
                         + " The weights are those the run started with.")
        # Outside the except block, so the exception and its tensors are gone.
        _put_back(trainer.model, start)
        _free(trainer)
        if error is not None:
            raise TrainingError(error)
        note = f"Out of memory with batch size {size}; retrying with {size // 2}."
        trainer.notes.append(note)
        trainer.config = dataclasses.replace(trainer.config, batch_size=size // 2)
        session.install_state(config=trainer.config, message=note)
