"""Checkpoints and resume: a run interrupted by Stop, an error or SIGKILL continues exactly.

A resumed run must give the same history and weights as a run that was never
interrupted (same seed, fp32 on the CPU, augmentation and dropout drawing random numbers).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from tests.conftest import make_image_folder
from tests.helpers import ready_session
from tlwidgets import Session
from tlwidgets.core import checkpoint as C
from tlwidgets.core.errors import TrainingError
from tlwidgets.core.training import LambdaCallback, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = {"epochs": 3, "batch_size": 8, "precision": "fp32", "lr": 3e-3}
BATCH_KEYS = ("epoch", "batch", "step", "loss", "acc", "lr")
EPOCH_KEYS = ("epoch", "loss", "acc", "val_loss", "val_acc", "lr")
# Random-init MobileNetV3-Small (dropout in the head) with flips: both draw random numbers.
SESSION = {"model": "mobilenet_v3_small", "image_size": 32, "torch_seed": 0, "augment": {"flip": True},
           "freeze_backbone": False}


def _session(folder: Path) -> Session:
    """The SESSION every test here trains, on the images in ``folder``."""
    return ready_session(folder, **SESSION)


def _rows(rows: list[dict], keys: tuple[str, ...]) -> list[tuple]:
    return [tuple(r[k] for k in keys) for r in rows]


def assert_same_run(a: dict, b: dict, state_a: dict, state_b: dict) -> None:
    """Histories (timings aside) and weights agree within float tolerance."""
    for part, keys in (("batches", BATCH_KEYS), ("epochs", EPOCH_KEYS)):
        ra, rb = _rows(a[part], keys), _rows(b[part], keys)
        assert len(ra) == len(rb), part
        for x, y in zip(ra, rb):
            assert x[:2] == y[:2]
            for u, v in zip(x, y):
                assert (math.isnan(u) and math.isnan(v)) or math.isclose(u, v, rel_tol=1e-5, abs_tol=1e-7), (part, x, y)
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.allclose(state_a[name].float(), state_b[name].float(), rtol=1e-5, atol=1e-6), name


def _as_dict(history) -> dict:
    return {"batches": history.batches, "epochs": history.epochs}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("resume") / "images", classes=3, per_class=8, size=32)


@pytest.fixture(scope="module")
def reference(folder: Path) -> tuple[dict, dict]:
    """History and weights of the uninterrupted run."""
    s = _session(folder)
    history = s.fit(**OPTIONS)
    return _as_dict(history), {k: v.clone() for k, v in s.model.state_dict().items()}


# ---------------------------------------------------------------------------- the file
def test_checkpoint_holds_plain_data_only_and_is_replaced_atomically(folder: Path, tmp_path: Path) -> None:
    s = _session(folder)
    path = tmp_path / "run.ckpt"
    written: list[int] = []
    s.on_epoch_end(lambda logs: written.append(C.load(path)["trainer"]["epoch"]))
    s.fit(checkpoint=path, **OPTIONS)
    assert written == [1, 2, 3]  # on disk before anyone hears of the epoch's end
    state = torch.load(path, map_location="cpu", weights_only=True)  # no code, no custom classes
    assert state["format"] == C.FORMAT and state["trainer"]["epoch"] == 3
    assert set(state["trainer"]) >= {"optimizer", "scheduler", "rng", "history", "config", "step"}
    assert set(state["trainer"]["rng"]) == {"torch", "cuda", "numpy", "python", "loader"}
    assert state["session"]["model"] == "mobilenet_v3_small" and state["session"]["classes"] == list(s.classes)
    assert state["trainer"]["config"]["epochs"] == 3 and len(state["trainer"]["history"]["epochs"]) == 3
    for name, value in s.model.state_dict().items():
        assert torch.equal(state["model"][name], value), name
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = C.save({"format": C.FORMAT, "version": C.VERSION, "n": torch.tensor(1)}, tmp_path / "c.ckpt")
    before = path.read_bytes()

    def killed(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # as if the process died between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        C.save({"format": C.FORMAT, "version": C.VERSION, "n": torch.tensor(2)}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt"]


# ---------------------------------------------------------------------------- resume in one process
def test_stop_then_resume_equals_an_uninterrupted_run(folder: Path, tmp_path: Path, reference) -> None:
    s = _session(folder)

    def stop(logs: dict) -> None:
        if (logs["epoch"], logs["batch"]) == (2, 2):
            s.request_stop()

    s.on_batch_end(stop)
    cut = s.fit(checkpoint=tmp_path / "run.ckpt", **OPTIONS)
    s.on_batch_end(stop, remove=True)
    assert cut.stopped and len(cut.epochs) == 1

    resumed = s.fit(checkpoint=tmp_path / "run.ckpt", resume=True)
    assert s.status == "idle" and not resumed.stopped
    assert s.message.startswith(f"Resumed from {tmp_path / 'run.ckpt'} after epoch 1 of 3.")
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3]
    assert [b["step"] for b in resumed.batches] == list(range(1, 10))
    assert s.history is resumed
    assert_same_run(reference[0], _as_dict(resumed), reference[1], s.model.state_dict())


def test_resume_after_an_error_in_a_callback(folder: Path, reference) -> None:
    s = _session(folder)

    def crash(trainer, epoch, logs) -> None:
        if epoch == 2:
            raise RuntimeError("display failed")

    with pytest.raises(RuntimeError, match="display failed"):
        s.fit(callbacks=[LambdaCallback(on_epoch_end=crash)], checkpoint=True, **OPTIONS)
    assert s.status == "idle"
    # The checkpoint is written before other callbacks hear of the epoch, so epoch 2 is kept.
    assert C.load(C.default_path(s))["trainer"]["epoch"] == 2
    resumed = s.fit(resume=True)
    assert_same_run(reference[0], _as_dict(resumed), reference[1], s.model.state_dict())


def test_resume_keeps_the_history_before_the_checkpointed_fit(folder: Path, tmp_path: Path) -> None:
    s = _session(folder)
    s.fit(epochs=1, batch_size=8, precision="fp32")
    s.freeze_backbone()
    path = tmp_path / "second.ckpt"
    s.fit(checkpoint=path, epochs=2, batch_size=8, precision="fp32")
    expected = [(e["epoch"], e["loss"]) for e in s.history.epochs]
    frozen = s.frozen

    fresh = _session(folder)  # a new process would start like this: nothing frozen, no history
    fresh.fit(resume=path)
    assert [(e["epoch"], e["loss"]) for e in fresh.history.epochs] == expected
    assert fresh.frozen == frozen and "finished" in fresh.message
    for name, value in s.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[name], value), name


def test_resume_true_without_a_checkpoint_trains_from_the_start(tmp_path: Path) -> None:
    s = _session(make_image_folder(tmp_path / "new", classes=2, per_class=4, size=32))
    history = s.fit(resume=True, epochs=1, batch_size=8, precision="fp32")
    assert len(history.epochs) == 1 and s.message.startswith("No checkpoint at ")
    assert C.load(C.default_path(s))["trainer"]["epoch"] == 1  # and it writes one from now on


def test_trainer_restore_without_a_session() -> None:
    """The Trainer hook alone: restore(trainer.state_dict()) at an epoch end continues exactly."""
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.rand(40, 3, 8, 8, generator=g), torch.arange(40) % 2)

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Dropout(0.3), nn.Linear(4, 2))

    config = TrainConfig(epochs=3, batch_size=8, optimizer="sgd", schedule="step", precision="fp32")
    full_model = net()
    full = Trainer(full_model, data, data, config, device="cpu").fit()
    saved: dict = {}

    def keep(trainer, epoch, logs) -> None:
        if epoch == 1:
            saved["trainer"] = trainer.state_dict()
            saved["model"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
            trainer.request_stop()

    Trainer(net(), data, data, config, device="cpu", callbacks=[LambdaCallback(on_epoch_end=keep)]).fit()
    model = net()
    model.load_state_dict(saved["model"])
    trainer = Trainer(model, data, data, config, device="cpu")
    trainer.restore(saved["trainer"])
    resumed = trainer.fit()
    assert_same_run(_as_dict(full), _as_dict(resumed), full_model.state_dict(), model.state_dict())


# ---------------------------------------------------------------------------- refusals
def test_resume_refuses_a_checkpoint_of_another_model_or_other_options(folder: Path, tmp_path: Path) -> None:
    s = _session(folder)
    path = tmp_path / "run.ckpt"
    s.fit(checkpoint=path, epochs=1, batch_size=8, precision="fp32", lr=1e-3)
    with pytest.raises(TrainingError, match=r"these differ: lr=0\.1 \(the checkpoint has 0\.001\)"):
        s.fit(resume=path, lr=0.1)
    other = Session(device="cpu", image_size=32)
    other.load_model("shufflenet_v2_x0_5", pretrained=False)
    other.load_data(folder, val_fraction=0.25)
    other.replace_head()
    before = {k: v.clone() for k, v in other.model.state_dict().items()}
    with pytest.raises(TrainingError, match=r"is for model 'mobilenet_v3_small' with classes class_0.*"
                                            r"not 'shufflenet_v2_x0_5'.*Load the same model"):
        other.fit(resume=path)
    assert other.status == "idle"
    assert all(torch.equal(before[k], v) for k, v in other.model.state_dict().items())
    with pytest.raises(TrainingError, match="No checkpoint at .*missing.ckpt"):
        s.fit(resume=tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(TrainingError, match="Refused to load the checkpoint .*junk.ckpt"):
        s.fit(resume=tmp_path / "junk.ckpt")
    torch.save({"format": "something else"}, tmp_path / "foreign.ckpt")
    with pytest.raises(TrainingError, match="not a tlwidgets training checkpoint"):
        s.fit(resume=tmp_path / "foreign.ckpt")
    torch.save({"format": C.FORMAT, "version": C.VERSION, "model": {"x": 1}}, tmp_path / "damaged.ckpt")
    with pytest.raises(TrainingError, match="incomplete or damaged"):
        s.fit(resume=tmp_path / "damaged.ckpt")
    assert s.status == "idle" and len(s.history.epochs) == 1


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_code_running_checkpoint_is_refused_and_runs_nothing(folder: Path, tmp_path: Path) -> None:
    s = _session(folder)
    path = tmp_path / "run.ckpt"
    s.fit(checkpoint=path, epochs=1, batch_size=8, precision="fp32")
    state = torch.load(path, weights_only=True)
    marker = tmp_path / "code-ran.txt"
    state["trainer"]["rng"]["python"] = _RunsCode(marker)  # a real checkpoint with one poisoned entry
    torch.save(state, path)
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    with pytest.raises(TrainingError, match="never unpickled"):
        s.fit(resume=path)
    with pytest.raises(TrainingError, match="never unpickled"):
        C.load(path)
    assert not marker.exists()
    assert s.status == "idle" and all(torch.equal(before[k], v) for k, v in s.model.state_dict().items())


# ---------------------------------------------------------------------------- SIGKILL
_SCRIPT = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    import torch
    from tests.helpers import ready_session

    mode, folder, ckpt, out, ready = sys.argv[1:]
    s = ready_session(folder, **json.loads(%r))  # _session(folder)

    def hang(logs):
        if (logs["epoch"], logs["batch"]) == (2, 1):
            Path(ready).write_text("epoch 2, batch 1 done")
            time.sleep(600)  # the parent kills this process here, mid-epoch

    if mode == "kill":
        s.on_batch_end(hang)
    options = json.loads(%r)
    history = s.fit(checkpoint=ckpt, resume=(mode == "resume"), **({} if mode == "resume" else options))
    torch.save({k: v.contiguous() for k, v in s.model.state_dict().items()}, out + ".pt")
    Path(out + ".json").write_text(json.dumps({"batches": history.batches, "epochs": history.epochs,
                                               "message": s.message}))
''') % (json.dumps(SESSION), json.dumps(OPTIONS))


def _start(script: Path, mode: str, folder: Path, tmp_path: Path, ckpt: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen(
        [sys.executable, str(script), mode, str(folder), str(ckpt), str(tmp_path / mode), str(tmp_path / "ready")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _result(tmp_path: Path, mode: str) -> tuple[dict, dict]:
    history = json.loads((tmp_path / f"{mode}.json").read_text())
    return history, torch.load(tmp_path / f"{mode}.pt", weights_only=True)


def test_training_killed_mid_epoch_resumes_to_the_same_result(folder: Path, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    ckpt = tmp_path / "ckpt" / "run.ckpt"

    reference = _start(script, "full", folder, tmp_path, tmp_path / "reference.ckpt")
    victim = _start(script, "kill", folder, tmp_path, ckpt)
    deadline = time.monotonic() + 120
    while not (tmp_path / "ready").exists():
        assert victim.poll() is None, victim.communicate()[0]
        assert time.monotonic() < deadline, "the training process never reached epoch 2"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    assert victim.returncode == -signal.SIGKILL
    assert C.load(ckpt)["trainer"]["epoch"] == 1  # the last finished epoch, intact
    assert not (tmp_path / "kill.json").exists()

    resumer = _start(script, "resume", folder, tmp_path, ckpt)
    for proc in (reference, resumer):
        output = proc.communicate(timeout=180)[0]
        assert proc.returncode == 0, output
    full, full_state = _result(tmp_path, "full")
    resumed, resumed_state = _result(tmp_path, "resume")
    assert resumed["message"].startswith(f"Resumed from {ckpt} after epoch 1 of 3.")
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert [b["step"] for b in resumed["batches"]] == list(range(1, 10))
    assert_same_run(full, resumed, full_state, resumed_state)
