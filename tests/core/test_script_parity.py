"""The generated training script re-implements a few core helpers (so it needs only torch and
torchvision); each is compared here with the core's own on the same inputs."""

from __future__ import annotations

import collections
import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import make_image_folder
from tlwidgets import Session
from tlwidgets.core import bundle, device, evaluation, heads, layers


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    root = make_image_folder(tmp_path_factory.mktemp("parity") / "images", classes=3, per_class=8)
    s = Session(device="cpu", image_size=32)
    s.load_model("resnet18", pretrained=False)
    s.load_data(root, val_fraction=0.25, seed=0)
    s.replace_head(hidden=16, dropout=0.1)
    s.freeze_up_to("layer2")
    s.set_lr_factor("layer3", 0.5)
    s.set_lr_factor("layer3.1", 0.25)  # the longest matching prefix wins
    return s


@pytest.fixture(scope="module")
def script(session: Session, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    files = session.to_script(tmp_path_factory.mktemp("parity-script") / "train")
    spec = importlib.util.spec_from_file_location("parity_train", files.script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the helpers; main() runs only as a program
    return module


def _shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize(("dropout", "hidden"), [(0.0, None), (0.2, None), (0.0, 8), (0.3, 8)])
def test_new_head_builds_what_core_builds(script: ModuleType, dropout: float, hidden: int | None) -> None:
    theirs = script.new_head(5, 512, dropout, hidden)
    ours = heads.build_head("linear", 512, 5, dropout, hidden)
    assert _shapes(theirs) == _shapes(ours)
    assert [type(m).__name__ for m in theirs.modules()][1:] == [type(m).__name__ for m in ours.modules()][1:]
    torch.manual_seed(0)
    a = script.new_head(5, 512, dropout, hidden)
    torch.manual_seed(0)
    b = heads.build_head("linear", 512, 5, dropout, hidden)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_build_model_freezes_and_shapes_like_the_session(session: Session, script: ModuleType) -> None:
    model = script.build_model()
    assert _shapes(model) == _shapes(session.model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in session.model.named_parameters() if p.requires_grad}


def test_param_groups_match_the_core_ones(session: Session, script: ModuleType) -> None:
    theirs = script.param_groups(session.model, 1e-3)
    ours = layers.param_groups(session.model, 1e-3, session.lr_factors)
    assert [g["lr"] for g in theirs] == pytest.approx([g["lr"] for g in ours])
    assert [[id(p) for p in g["params"]] for g in theirs] == [[id(p) for p in g["params"]] for g in ours]
    assert len(ours) == 3  # 1.0 (layer4 and head), 0.5 (layer3.0), 0.25 (layer3.1)


def test_logits_of_matches_on_every_output_kind(script: ModuleType) -> None:
    x = torch.randn(2, 3)
    Named = collections.namedtuple("Named", ["logits", "aux"])

    class WithLogits:
        logits = x

    for out in (x, (x, x + 1), [x, x * 2], Named(x, x - 1), WithLogits()):
        assert torch.equal(script.logits_of(out), evaluation.logits_of(out))


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16"])
def test_autocast_dtype_matches_on_the_cpu(script: ModuleType, monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    monkeypatch.delenv("TLWIDGETS_CPU_BF16", raising=False)  # the script reads the CPU flags only
    cpu = torch.device("cpu")
    assert script.autocast_dtype(cpu, precision) == device.autocast_dtype(cpu, precision)


def test_safetensors_files_are_the_same_format_both_ways(script: ModuleType, tmp_path: Path) -> None:
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "h": torch.randn(2).bfloat16(),
               "flag": torch.tensor([True, False]), "empty": torch.zeros(0)}
    script.save_safetensors(tensors, tmp_path / "theirs.safetensors")
    back = load_file(str(tmp_path / "theirs.safetensors"))
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)
    save_file(tensors, str(tmp_path / "ours.safetensors"))
    mine = script.load_safetensors(tmp_path / "ours.safetensors")
    assert set(mine) == set(tensors) and all(torch.equal(mine[k], tensors[k]) for k in tensors)


def test_strict_json_matches_the_bundle_writer(script: ModuleType) -> None:
    value = {"loss": math.nan, "curve": [math.inf, -math.inf, 0.5], "nested": {"x": (1, 2.5)}, 3: None}
    assert script.strict_json(value) == bundle._jsonable(value)
