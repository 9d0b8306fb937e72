"""Finding, describing and replacing classifier heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlwidgets.core.catalog import build_model
from tlwidgets.core.errors import ModelError
from tlwidgets.core.heads import ClassifierHead, HeadSpec, find_head, head_spec, replace_head


@pytest.mark.parametrize(
    ("name", "path", "layer", "in_features"),
    [
        ("resnet18", "fc", nn.Linear, 512),
        ("vgg16", "classifier.6", nn.Linear, 4096),
        ("squeezenet1_0", "classifier.1", nn.Conv2d, 512),
        ("vit_b_16", "heads.head", nn.Linear, 768),
        ("efficientnet_lite0", "classifier", nn.Linear, 1280),
    ],
)
def test_find_head_names_the_classifier(name: str, path: str, layer: type, in_features: int) -> None:
    model = build_model(name, pretrained=False)
    found_path, module = find_head(model)
    assert found_path == path
    assert isinstance(module, layer)
    assert module is model.get_submodule(path)
    spec = head_spec(model)
    assert spec == HeadSpec(
        num_classes=1000, in_features=in_features,
        kind="conv1x1" if layer is nn.Conv2d else "linear", path=path,
    )


def test_replace_head_with_hidden_layer_and_dropout(tiny_size: int) -> None:
    model = build_model("resnet18", pretrained=False)
    spec = replace_head(model, 5, dropout=0.3, hidden=64)
    assert spec == HeadSpec(num_classes=5, in_features=512, dropout=0.3, hidden=64, kind="linear", path="fc")
    assert head_spec(model) == spec

    head = model.fc
    assert isinstance(head, ClassifierHead)
    assert [name for name, _ in head.named_children()] == ["hidden", "act", "dropout", "out"]
    assert (head.hidden.in_features, head.hidden.out_features) == (512, 64)
    assert isinstance(head.act, nn.ReLU)
    assert head.dropout.p == pytest.approx(0.3)
    assert (head.out.in_features, head.out.out_features) == (64, 5)
    assert find_head(model) == ("fc", head)
    assert all(p.requires_grad for p in head.parameters())

    x = torch.randn(2, 3, tiny_size, tiny_size)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert first.shape == (2, 5)
    assert torch.equal(first, second), "an eval-mode model must keep the new dropout off"
    model.train()
    assert head.training


def test_replace_head_is_seeded_and_replaceable_again() -> None:
    a = build_model("resnet18", pretrained=False)
    b = build_model("resnet18", pretrained=False)
    torch.manual_seed(7)
    replace_head(a, 3, hidden=8)
    torch.manual_seed(7)
    replace_head(b, 3, hidden=8)
    assert torch.equal(a.fc.hidden.weight, b.fc.hidden.weight)
    assert torch.equal(a.fc.out.weight, b.fc.out.weight)

    spec = replace_head(a, 2)
    assert spec == HeadSpec(num_classes=2, in_features=512, path="fc")
    assert type(a.fc) is nn.Linear


def test_replace_head_inside_sequential_and_conv_heads(tiny_size: int) -> None:
    vgg = build_model("vgg11", pretrained=False)
    spec = replace_head(vgg, 4, hidden=32)
    assert spec.path == "classifier.6" and spec.in_features == 4096 and spec.hidden == 32
    assert isinstance(vgg.classifier[6], ClassifierHead)
    assert len(vgg.classifier) == 7

    squeeze = build_model("squeezenet1_1", pretrained=False)
    spec = replace_head(squeeze, 6, dropout=0.1, hidden=16)
    assert (spec.kind, spec.path, spec.in_features, spec.hidden) == ("conv1x1", "classifier.1", 512, 16)
    assert isinstance(squeeze.classifier[1].out, nn.Conv2d)
    with torch.no_grad():
        assert squeeze(torch.randn(2, 3, tiny_size, tiny_size)).shape == (2, 6)


def test_replace_head_of_timm_model_updates_its_class_count() -> None:
    model = build_model("efficientnet_lite0", pretrained=False)
    replace_head(model, 3)
    assert model.num_classes == 3
    assert model.get_classifier().out_features == 3
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_bad_head_arguments_are_refused() -> None:
    model = build_model("resnet18", pretrained=False)
    with pytest.raises(ModelError, match="num_classes"):
        replace_head(model, 0)
    with pytest.raises(ModelError, match="dropout"):
        replace_head(model, 3, dropout=1.5)
    with pytest.raises(ModelError, match="hidden"):
        replace_head(model, 3, hidden=0)
    assert head_spec(model).num_classes == 1000
    with pytest.raises(ModelError, match="Sequential"):
        find_head(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
