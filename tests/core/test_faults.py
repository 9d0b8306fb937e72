"""Training faults end in a clear message, an idle session and an intact model.

NaN/inf loss, running out of memory, an error in a callback or in a subscriber, a file
that vanished mid-run, Train pressed twice, changes requested while training: through
the Session and through the TrainingPanel (its background thread).
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import pytest
import torch

from tests.conftest import make_image_folder
from tlwidgets import Session
from tlwidgets.core import recovery
from tlwidgets.core.errors import BusyError, DataError, TrainingError
from tlwidgets.core.training import LambdaCallback
from tlwidgets.widgets.training_panel import TrainingPanel

OPTIONS = {"epochs": 2, "batch_size": 8, "precision": "fp32"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("faults") / "images", classes=3, per_class=8, size=32)


def _session(folder: Path) -> Session:
    torch.manual_seed(0)
    s = Session(device="cpu", image_size=32)
    s.load_model("mobilenet_v3_small", pretrained=False)  # BatchNorm everywhere, dropout in the head
    s.load_data(folder, val_fraction=0.25, seed=0)
    s.replace_head()
    return s


def _state(s: Session) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in s.model.state_dict().items()}


def _assert_state(s: Session, expected: dict[str, torch.Tensor]) -> None:
    for name, value in s.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
        assert not value.is_floating_point() or torch.isfinite(value).all(), name


class _Snapshots:
    """Subscriber keeping the weights (buffers included) after every completed step."""

    def __init__(self, s: Session) -> None:
        self.session = s
        self.last: dict[str, torch.Tensor] = _state(s)
        self.steps = 0
        s.on_batch_end(self)

    def __call__(self, logs: dict) -> None:
        self.last = _state(self.session)
        self.steps += 1


def _poison_after(s: Session, epoch: int, batch: int, value: float) -> torch.utils.hooks.RemovableHandle:
    """From the step after (epoch, batch) on, the model's input holds ``value`` (NaN or inf)."""
    armed = threading.Event()
    s.on_batch_end(lambda logs: armed.set() if (logs["epoch"], logs["batch"]) == (epoch, batch) else None)

    def hook(module, args):
        return (args[0] * value,) if armed.is_set() and module.training else None

    return s.model.register_forward_pre_hook(hook)


# ---------------------------------------------------------------------------- NaN / inf
@pytest.mark.parametrize("value,shown", [(math.nan, "nan"), (math.inf, "nan|inf")])
def test_nan_or_inf_loss_stops_with_the_last_good_weights(folder: Path, value: float, shown: str) -> None:
    s = _session(folder)
    snaps = _Snapshots(s)
    handle = _poison_after(s, epoch=2, batch=1, value=value)
    with pytest.raises(TrainingError, match=rf"loss became ({shown}) at epoch 2 batch 2; lower the learning rate"):
        s.fit(**OPTIONS)
    handle.remove()
    assert s.status == "idle" and s._trainer is None
    assert snaps.steps == 4  # three steps of epoch 1, one of epoch 2
    # Parameters *and* BatchNorm statistics: the poisoned forward pass had already updated the latter.
    _assert_state(s, snaps.last)
    assert s.predict(s.data.val[0].path)["probability"].notna().all()


def test_nan_loss_through_the_training_panel(folder: Path) -> None:
    s = _session(folder)
    s.configure(**OPTIONS)
    snaps = _Snapshots(s)
    handle = _poison_after(s, epoch=1, batch=2, value=math.nan)
    panel = TrainingPanel(s)
    panel.start()
    assert panel.wait(120)
    handle.remove()
    assert "loss became nan at epoch 1 batch 3" in panel.last_error
    assert panel.progress.value.startswith("Failed after 0 epochs and 2 batches")
    assert s.status == "idle" and not panel.running
    assert not panel.train_button.disabled and panel.stop_button.disabled
    _assert_state(s, snaps.last)
    panel.close()


# ---------------------------------------------------------------------------- out of memory
def _memory_limit(s: Session, largest_batch: int, error: type[BaseException] = torch.cuda.OutOfMemoryError,
                  text: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> list[int]:
    """Batches larger than ``largest_batch`` raise an out-of-memory error in the forward pass."""
    seen: list[int] = []

    def hook(module, args):
        seen.append(args[0].shape[0])
        if args[0].shape[0] > largest_batch:
            raise error(text)

    s.model.register_forward_pre_hook(hook)
    return seen


def test_out_of_memory_halves_the_batch_size_and_retries(folder: Path) -> None:
    clean = _session(folder)
    expected = clean.fit(epochs=2, batch_size=4, precision="fp32")

    s = _session(folder)
    seen = _memory_limit(s, largest_batch=4)
    messages: list[str] = []
    s.observe(lambda change: messages.append(change["new"]), names="message")
    history = s.fit(epochs=2, batch_size=16, precision="fp32")

    assert messages[:2] == ["Out of memory with batch size 16; retrying with 8.",
                            "Out of memory with batch size 8; retrying with 4."]
    assert s.message.startswith("Out of memory with batch size 16; retrying with 8. Out of memory with batch "
                                "size 8; retrying with 4. Trained after 2 epochs")
    assert seen[:2] == [16, 8] and set(seen[2:]) <= {4, 2}
    assert s.config.batch_size == 4 and history.config["batch_size"] == 4
    assert s.status == "idle"
    # Each retry starts from the weights the run began with: the result is that of a batch-4 run.
    assert [e["loss"] for e in history.epochs] == pytest.approx([e["loss"] for e in expected.epochs], rel=1e-5)
    for name, value in clean.model.state_dict().items():
        assert torch.allclose(s.model.state_dict()[name].float(), value.float(), atol=1e-6), name


def test_out_of_memory_at_batch_size_one_gives_up_with_the_starting_weights(folder: Path) -> None:
    s = _session(folder)
    before = _state(s)
    _memory_limit(s, largest_batch=0, error=RuntimeError,
                  text="[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    with pytest.raises(TrainingError, match=r"Out of memory with batch size 1 \(RuntimeError: .*can't allocate "
                                            r"memory\)\. Use a smaller model or a smaller image size\. The "
                                            r"weights are those the run started with\."):
        s.fit(epochs=1, batch_size=4, precision="fp32")
    assert s.status == "idle" and s.config.batch_size == 1
    _assert_state(s, before)


def test_out_of_memory_is_recognised_only_for_memory_errors() -> None:
    assert recovery.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert recovery.is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert recovery.is_out_of_memory(MemoryError())
    wrapped = RuntimeError("Caught an error in DataLoader worker process 0")
    wrapped.__cause__ = MemoryError()
    assert recovery.is_out_of_memory(wrapped)
    assert not recovery.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not recovery.is_out_of_memory(ValueError("out of memory"))


def test_out_of_memory_through_the_training_panel(folder: Path) -> None:
    s = _session(folder)
    s.configure(epochs=1, batch_size=16, precision="fp32")
    _memory_limit(s, largest_batch=6)  # the evaluation after training sends the 6 validation images at once
    panel = TrainingPanel(s)
    panel.train_button.click()
    assert panel.wait(120)
    assert panel.last_error == ""
    notes = "Out of memory with batch size 16; retrying with 8. Out of memory with batch size 8; retrying with 4."
    assert panel.progress.value.startswith(f"{notes} Done: 1 epochs")
    assert panel.batch_size.value == 4 and s.status == "idle"
    assert s.message.startswith(notes)
    assert s.last_eval is not None
    panel.close()


def test_out_of_memory_in_a_resumed_run_keeps_the_checkpoint_weights(folder: Path, tmp_path: Path) -> None:
    s = _session(folder)
    path = tmp_path / "run.ckpt"
    s.on_epoch_end(lambda logs: s.request_stop())
    s.fit(checkpoint=path, **OPTIONS)
    s.events.clear("epoch_end")
    saved = _state(s)
    _memory_limit(s, largest_batch=4)
    with pytest.raises(TrainingError, match="Out of memory with batch size 8 .*A resumed run keeps its batch size"):
        s.fit(resume=path)
    assert s.status == "idle"
    _assert_state(s, saved)


# ---------------------------------------------------------------------------- errors in callbacks
def test_crash_in_a_callback_keeps_the_weights_of_the_last_step(folder: Path) -> None:
    s = _session(folder)
    snaps = _Snapshots(s)

    def crash(trainer, epoch) -> None:
        if epoch == 2:
            raise RuntimeError("plot server went away")

    with pytest.raises(RuntimeError, match="plot server went away"):
        s.fit(callbacks=[LambdaCallback(on_epoch_start=crash)], **OPTIONS)
    assert s.status == "idle" and snaps.steps == 3
    _assert_state(s, snaps.last)
    assert s.history is None  # a failed fit does not pretend to have trained
    assert len(s.fit(**OPTIONS).epochs) == 2  # and the session trains again


def test_exception_in_the_training_thread_reaches_the_panel(folder: Path) -> None:
    s = _session(folder)
    s.configure(**OPTIONS)
    snaps = _Snapshots(s)

    def boom(logs: dict) -> None:
        if logs["batch"] == 2:
            raise ValueError("subscriber failed")

    s.on_batch_end(boom)
    panel = TrainingPanel(s)
    thread = panel.start()
    assert panel.wait(120) and not thread.is_alive()
    assert panel.last_error.startswith("ValueError: subscriber failed")
    assert s.status == "idle" and not panel.running and not panel.train_button.disabled
    assert panel.progress_bar.bar_style == "danger"
    _assert_state(s, snaps.last)  # the step before the failing subscriber completed and is kept
    s.on_batch_end(boom, remove=True)
    panel.start()
    assert panel.wait(120) and panel.last_error == "" and len(s.history.epochs) == 2
    panel.close()


def test_image_deleted_during_training_names_the_file(tmp_path: Path) -> None:
    s = _session(make_image_folder(tmp_path / "imgs", classes=2, per_class=6, size=32))
    s.configure(**OPTIONS)
    snaps = _Snapshots(s)
    victim = s.data.train[-1].path
    os.remove(victim)  # deleted after the scan, before (or while) the images are read
    with pytest.raises(DataError, match=f"Image not found: {victim}. Check the path, or rescan the folder."):
        s.fit()
    assert s.status == "idle"
    _assert_state(s, snaps.last)
    s.load_data(s.data.report.source, val_fraction=0.25)  # the rescan the message suggests
    assert victim not in {x.path for x in s.data.train + s.data.val}
    assert len(s.fit().epochs) == 2


# ---------------------------------------------------------------------------- concurrency
def test_train_pressed_twice_starts_one_run(folder: Path) -> None:
    s = _session(folder)
    s.configure(**OPTIONS)
    starts: list[object] = []
    s.on_fit_start(starts.append)
    release = threading.Event()
    s.on_batch_end(lambda logs: release.wait(30))
    panel = TrainingPanel(s)
    panel.train_button.click()
    first = panel.thread
    panel.train_button.click()
    assert panel.start() is first
    assert panel.train_button.disabled and panel.epochs.disabled
    release.set()
    assert panel.wait(120)
    assert len(starts) == 1 and panel.last_error == "" and len(s.history.epochs) == 2
    panel.close()


def test_changes_are_refused_while_training(folder: Path, tmp_path: Path) -> None:
    s = _session(folder)
    started, release = threading.Event(), threading.Event()

    def hold(logs: dict) -> None:
        started.set()
        release.wait(30)

    s.on_batch_end(hold)
    worker = threading.Thread(target=s.fit, kwargs=OPTIONS)
    worker.start()
    assert started.wait(60)
    model, data, head = s.model, s.data, s.head
    attempts = {
        "load a model": lambda: s.load_model("resnet18", pretrained=False),
        "load data": lambda: s.load_data(folder),
        "replace the head": lambda: s.replace_head(num_classes=5),
        "freeze layers": lambda: s.freeze_backbone(),
        "unfreeze layers": lambda: s.unfreeze_all(),
        "change augmentation": lambda: s.set_augment(flip=True),
        "change learning-rate factors": lambda: s.set_lr_factor("features", 0.1),
        "save": lambda: s.save(tmp_path / "bundle"),
        "Training is already running": lambda: s.fit(epochs=1),
    }
    try:
        for words, attempt in attempts.items():
            with pytest.raises(BusyError, match=words) as err:
                attempt()
            assert "Stop" in str(err.value), words
    finally:
        release.set()
        worker.join(60)
    assert s.model is model and s.data is data and s.head == head
    assert s.status == "idle" and len(s.history.epochs) == 2
