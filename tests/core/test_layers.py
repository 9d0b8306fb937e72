"""Freezing, the BatchNorm policy, LR factors and the layer table."""

from __future__ import annotations

import time

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import TensorDataset

from tlwidgets.core import layers
from tlwidgets.core.errors import ModelError
from tlwidgets.core.training import TrainConfig, Trainer

FROZEN_STAGES = ("conv1", "bn1", "layer1", "layer2", "layer3")


@pytest.fixture
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=5)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {f"param:{n}": p.detach().clone() for n, p in model.named_parameters()}
    state.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return state


def _stage(key: str) -> str:
    return key.split(":", 1)[1].split(".", 1)[0]


def _assert_frozen_exact_and_rest_changed(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = _snapshot(model)
    frozen = [k for k in before if _stage(k) in FROZEN_STAGES]
    trained_params = [k for k in before if k.startswith("param:") and _stage(k) in ("layer4", "fc")]
    # every frozen weight and every frozen BatchNorm statistic, num_batches_tracked included
    assert frozen and any(k.endswith("running_mean") for k in frozen)
    assert any(k.endswith("num_batches_tracked") for k in frozen)
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    for key in trained_params:
        assert not torch.equal(before[key], after[key]), key
    # BatchNorm of the trainable stage kept updating its statistics
    assert not torch.equal(before["buffer:layer4.0.bn1.running_mean"], after["buffer:layer4.0.bn1.running_mean"])


def test_frozen_stages_stay_bit_identical_after_sgd_step(resnet: nn.Module) -> None:
    layers.freeze_up_to(resnet, "layer3")
    before = _snapshot(resnet)
    groups = layers.param_groups(resnet, 0.1, None)
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=1e-4)
    resnet.train()
    layers.set_bn_eval(resnet)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    nn.functional.cross_entropy(resnet(x), y).backward()
    opt.step()
    _assert_frozen_exact_and_rest_changed(resnet, before)
    for name, module in resnet.named_modules():
        if isinstance(module, _BatchNorm):
            assert module.training == name.startswith("layer4"), name


def test_frozen_stages_stay_bit_identical_after_trainer_fit(resnet: nn.Module) -> None:
    layers.freeze_up_to(resnet, "layer3")
    before = _snapshot(resnet)
    g = torch.Generator().manual_seed(1)
    ds = TensorDataset(torch.randn(16, 3, 64, 64, generator=g), torch.randint(0, 5, (16,), generator=g))
    config = TrainConfig(epochs=1, batch_size=4, optimizer="sgd", lr=0.05, schedule="constant",
                         weight_decay=1e-4, max_batches_per_epoch=2)
    history = Trainer(resnet, ds, None, config, device="cpu").fit()
    assert len(history.batches) == 2
    _assert_frozen_exact_and_rest_changed(resnet, before)
    assert not resnet.training


def test_layer_table_resnet18(resnet: nn.Module) -> None:
    n_leaves = sum(1 for m in resnet.modules() if next(m.children(), None) is None and any(True for _ in m.parameters()))
    table = layers.layer_table(resnet, input_size=64, head_path="fc")
    assert list(table.columns) == ["name", "type", "output_shape", "params", "trainable", "lr_factor", "group", "is_head"]
    assert len(table) == n_leaves == 41
    assert table["name"].tolist()[:3] == ["conv1", "bn1", "layer1.0.conv1"]
    rows = table.set_index("name")
    assert rows.loc["fc", "output_shape"] == (1, 5)
    assert rows.loc["conv1", "output_shape"] == (1, 64, 32, 32)
    assert rows.loc["layer3.0.conv1", "type"] == "Conv2d"
    assert table["params"].sum() == sum(p.numel() for p in resnet.parameters())
    assert table["is_head"].tolist() == [False] * 40 + [True]
    assert table["group"].unique().tolist() == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert table["trainable"].all() and (table["lr_factor"] == 1.0).all()

    resnet.train()
    layers.freeze_up_to(resnet, "layer3")
    table = layers.layer_table(resnet, input_size=64, head_path="fc", lr_factors={"layer4": 0.1})
    assert resnet.training and all(m.training for m in resnet.modules())  # mode restored
    frozen = table["group"].isin(FROZEN_STAGES)
    assert (table["trainable"] == ~frozen).all()
    assert (table.loc[frozen, "lr_factor"] == 0.0).all()
    assert (table.loc[table["group"] == "layer4", "lr_factor"] == 0.1).all()
    assert table.set_index("name").loc["fc", "lr_factor"] == 1.0
    assert layers.frozen_names(resnet) == tuple(table.loc[frozen, "name"])


def test_groups_for_indexed_stages_and_head_dropout() -> None:
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=3)
    table = layers.layer_table(model, input_size=32, head_path="classifier")
    assert table["group"].iloc[0] == "features.0"
    assert set(table["group"]) == {f"features.{i}" for i in range(19)} | {"classifier"}
    head = table[table["is_head"]]
    # the head's Dropout has no parameters but is still listed
    assert head["type"].tolist() == ["Dropout", "Linear"]
    assert head["output_shape"].tolist() == [(1, 1280), (1, 3)]


class _WithToken(nn.Module):
    """A container holding its own parameter next to sub-modules, like ViT's class token."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 4))
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x) + self.token)


def test_container_parameters_are_rows_and_freezable() -> None:
    model = _WithToken()
    table = layers.layer_table(model, input_size=8, head_path="head")
    assert table["name"].tolist() == ["token", "body.0", "head"]
    assert table["type"].tolist() == ["Parameter", "Conv2d", "Linear"]
    assert table["output_shape"].iloc[0] is None
    layers.freeze_up_to(model, "token")
    assert layers.frozen_names(model) == ("token",)
    layers.freeze_up_to(model, "body")
    assert layers.frozen_names(model) == ("token", "body.0")
    assert model.head.weight.requires_grad


def test_freeze_unfreeze_containers_and_leaves(resnet: nn.Module) -> None:
    layers.freeze(resnet, ["layer2", "conv1"])
    frozen = set(layers.frozen_names(resnet))
    assert "conv1" in frozen and "layer2.1.bn2" in frozen and "layer2.0.downsample.0" in frozen
    assert not any(n.startswith(("layer1", "layer3", "bn1")) for n in frozen)
    layers.unfreeze(resnet, "layer2.0")
    assert not any(n.startswith("layer2.0.") for n in layers.frozen_names(resnet))
    assert "layer2.1.conv1" in layers.frozen_names(resnet)
    layers.unfreeze_all(resnet)
    assert layers.frozen_names(resnet) == ()

    layers.freeze_up_to(resnet, "layer2.0.conv2")  # a leaf: cut right after it
    frozen = layers.frozen_names(resnet)
    assert frozen[-1] == "layer2.0.conv2" and "layer2.0.bn2" not in frozen
    layers.freeze_backbone(resnet, "fc")
    assert [n for n, p in resnet.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_set_bn_eval_covers_timm_batchnorm_act() -> None:
    timm_layers = pytest.importorskip("timm.layers")
    model = nn.Sequential(nn.Conv2d(3, 4, 1), timm_layers.BatchNormAct2d(4), nn.BatchNorm2d(4, affine=False))
    model.train()
    layers.freeze(model, ["1"])
    layers.set_bn_eval(model)
    assert model[0].training and not model[1].training
    assert model[2].training  # no affine parameters: nothing frozen, keeps its mode


def test_unknown_names_suggest_close_matches(resnet: nn.Module) -> None:
    with pytest.raises(ModelError, match=r"'layr3'.*'layer3'"):
        layers.freeze(resnet, ["layr3"])
    with pytest.raises(ModelError, match=r"layer4\.0\.conv1"):
        layers.freeze_up_to(resnet, "layer4.0.conv")
    with pytest.raises(ModelError, match="Top-level layers are: conv1, bn1"):
        layers.unfreeze(resnet, ["zzzzzz"])
    with pytest.raises(ModelError, match="'fcc'"):
        layers.param_groups(resnet, 0.1, {"fcc": 0.5})
    with pytest.raises(ModelError, match="layer4"):
        layers.set_lr_factor(resnet, {}, "layer4", -1.0)
    assert layers.frozen_names(resnet) == ()  # nothing changed by the failed calls


def test_param_groups_factors_and_exclusions(resnet: nn.Module) -> None:
    n_layer4 = sum(1 for n, _ in resnet.named_parameters() if n.startswith("layer4."))
    n_all = sum(1 for _ in resnet.parameters())
    groups = layers.param_groups(resnet, 0.01, {"layer4": 0.1})
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.001)]
    assert [g["lr_factor"] for g in groups] == [1.0, 0.1]
    assert len(groups[1]["params"]) == n_layer4 and all(n.startswith("layer4.") for n in groups[1]["names"])
    assert len(groups[0]["params"]) == n_all - n_layer4
    # the longest matching prefix wins
    groups = layers.param_groups(resnet, 1.0, {"layer4": 0.1, "layer4.1": 0.5})
    by_factor = {g["lr_factor"]: g["names"] for g in groups}
    assert set(by_factor) == {1.0, 0.5, 0.1}
    assert all(n.startswith("layer4.1.") for n in by_factor[0.5])
    # factor 0 and frozen parameters are left out
    groups = layers.param_groups(resnet, 1.0, {"layer4": 0})
    assert len(groups) == 1 and len(groups[0]["params"]) == n_all - n_layer4
    layers.freeze(resnet, ["conv1", "bn1"])
    assert sum(len(g["params"]) for g in layers.param_groups(resnet, 1.0)) == n_all - 3


def test_set_lr_factor_keeps_freezing_in_step(resnet: nn.Module) -> None:
    factors = layers.set_lr_factor(resnet, {"layer3.0": 0.2}, "layer3", 0.5)
    assert factors == {"layer3": 0.5}  # the finer entry below layer3 is replaced
    factors = layers.set_lr_factor(resnet, factors, "layer2", 0)
    assert factors == {"layer3": 0.5}
    assert all(n.startswith("layer2.") for n in layers.frozen_names(resnet)) and layers.frozen_names(resnet)
    factors = layers.set_lr_factor(resnet, factors, "layer2", 0.1)
    assert factors == {"layer3": 0.5, "layer2": 0.1} and layers.frozen_names(resnet) == ()
    lrs = sorted(g["lr"] for g in layers.param_groups(resnet, 1.0, factors))
    assert lrs == [0.1, 0.5, 1.0]


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0"])
def test_layer_table_is_fast_on_large_models(name: str) -> None:
    model = getattr(torchvision.models, name)(weights=None)
    start = time.perf_counter()
    table = layers.layer_table(model, input_size=224)
    elapsed = time.perf_counter() - start
    print(f"layer_table({name}, 224): {len(table)} rows in {elapsed:.3f} s")
    assert table["params"].sum() == sum(p.numel() for p in model.parameters())
    assert table["output_shape"].iloc[-1] == (1, 1000)
    assert table["is_head"].sum() >= 1 and table["is_head"].iloc[-1]
