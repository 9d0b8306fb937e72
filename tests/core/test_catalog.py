"""The catalog: schema, every model builds and takes a new head, packaged weights, checkpoints."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms as T

from tlwidgets.core import catalog
from tlwidgets.core.catalog import (
    DEFAULT_MODEL,
    build_model,
    default_model,
    get_spec,
    list_models,
    register_checkpoint,
)
from tlwidgets.core.device import cpu_has_bf16
from tlwidgets.core.errors import ModelError
from tlwidgets.core.heads import head_spec, replace_head

CATALOG = list_models()
ALL_MODELS = CATALOG.loc[CATALOG["source"] != "timm", "name"].tolist()


def _timm_sample(n: int = 50) -> list[str]:
    """``n`` timm models across families: the cheapest of each family (giants left out),
    families spread evenly when there are more than ``n``."""
    timm_rows = CATALOG[(CATALOG["source"] == "timm") & (CATALOG["params_m"] <= 30) & (CATALOG["gflops"] <= 5)]
    cheapest = timm_rows.sort_values(["gflops", "name"]).groupby("family", sort=True).head(1)
    names = cheapest.sort_values("family")["name"].tolist()
    if len(names) > n:
        names = [names[round(i * (len(names) - 1) / (n - 1))] for i in range(n)]
    return names


TIMM_SAMPLE = _timm_sample()


@pytest.fixture
def no_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered checkpoints are global: keep them inside the test."""
    monkeypatch.setattr(catalog, "_CHECKPOINTS", {})


@pytest.mark.parametrize("name", ALL_MODELS + TIMM_SAMPLE)
def test_every_model_builds_and_classifies_into_a_new_head(name: str) -> None:
    size = get_spec(name).input_size
    model = build_model(name, pretrained=False)
    head = replace_head(model, 5)
    assert head.num_classes == 5
    assert not model.training
    # bf16 where the CPU has it: the same code path as prediction, and 4x quicker for the giants.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_bf16()):
        out = model(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_list_models_schema() -> None:
    df = list_models()
    assert list(df.columns) == [
        "name", "family", "source", "params_m", "gflops", "size_mb", "top1", "top5",
        "input_size", "weights", "ms_per_image", "license",
    ]
    assert len(df) >= 1000
    assert df["name"].is_unique
    assert df["name"].tolist() == sorted(df["name"])
    for col in ("name", "family", "source", "weights", "license"):
        assert pd.api.types.is_string_dtype(df[col]), col
    for col in ("params_m", "gflops", "size_mb", "top1", "top5", "ms_per_image"):
        assert pd.api.types.is_float_dtype(df[col]), col
    assert pd.api.types.is_integer_dtype(df["input_size"])
    known = df[df["source"] != "timm"]  # timm's accuracies arrive with update_accuracy()
    assert known["top1"].between(0, 100).all() and known["top5"].between(0, 100).all()
    assert (known["top5"] >= known["top1"]).all()
    assert (df["params_m"] > 0).all() and (df["size_mb"] > 0).all()
    assert (known["gflops"] > 0).all() and (df["gflops"].dropna() > 0).all()
    assert df["gflops"].isna().sum() < 0.05 * len(df)
    assert set(df["weights"]) <= {"cached", "download", "packaged", "checkpoint"}
    assert (df["license"] != "").all()
    assert set(torchvision.models.list_models(module=torchvision.models)) <= set(df["name"])

    lite = df.set_index("name").loc["efficientnet_lite0"]
    assert (lite["source"], lite["weights"], lite["family"]) == ("packaged", "packaged", "EfficientNet")
    resnet18 = df.set_index("name").loc["resnet18"]
    assert resnet18["params_m"] == pytest.approx(11.69, abs=0.01)
    assert resnet18["top1"] == pytest.approx(69.758)
    assert resnet18["input_size"] == 224
    assert df.set_index("name").loc["inception_v3", "input_size"] == 299


def test_specs_carry_preprocessing() -> None:
    r18 = get_spec("resnet18")
    assert (r18.resize_size, r18.interpolation) == (256, "bilinear")
    assert r18.mean == pytest.approx((0.485, 0.456, 0.406))
    assert r18.weights_url.endswith("resnet18-f37072fd.pth")
    assert len(r18.class_names) == 1000 and r18.class_names[985] == "daisy"
    lite = get_spec("efficientnet_lite0")
    assert (lite.arch, lite.interpolation, lite.input_size, lite.resize_size) == (
        "tf_efficientnet_lite0", "bicubic", 224, 256,
    )
    assert lite.mean == lite.std == (0.5, 0.5, 0.5)
    assert Path(lite.weights_path).is_file()
    assert lite.size_mb == pytest.approx(Path(lite.weights_path).stat().st_size / 2**20)


def test_family_filter() -> None:
    vgg = list_models(family="vgg")
    assert set(vgg["family"]) == {"VGG"}
    assert (vgg["source"] == "torchvision").sum() == 8
    assert set(vgg["source"]) == {"torchvision", "timm"}
    with pytest.raises(ModelError, match="ResNet"):
        list_models(family="Resnot")


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ModelError, match="resnet18"):
        get_spec("resnt18")
    assert get_spec("ResNet18").name == "resnet18"


def test_default_model_is_the_packaged_one() -> None:
    assert DEFAULT_MODEL == "efficientnet_lite0"
    assert default_model() == "efficientnet_lite0"


def test_packaged_model_recognises_real_daisies(flowers_dir: Path) -> None:
    spec = get_spec("efficientnet_lite0")
    model = build_model("efficientnet_lite0")
    tf = T.Compose([
        T.Resize(spec.resize_size, interpolation=T.InterpolationMode(spec.interpolation)),
        T.CenterCrop(spec.input_size),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])
    files = sorted((flowers_dir / "daisy").glob("*.jpg"))[:5]
    assert len(files) == 5
    batch = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        top = model(batch).argmax(1)
    assert spec.class_names[985] == "daisy"
    assert int((top == 985).sum()) >= 3, top.tolist()


def test_register_checkpoint_with_arch_and_class_names(tmp_path: Path, no_checkpoints: None) -> None:
    torch.manual_seed(0)
    trained = torchvision.models.resnet18(num_classes=3).eval()
    path = tmp_path / "flowers3.pt"
    torch.save({"arch": "resnet18", "state_dict": trained.state_dict(), "class_names": ["a", "b", "c"]}, path)

    spec = register_checkpoint(path)
    assert (spec.name, spec.source, spec.arch, spec.num_classes) == ("flowers3", "checkpoint", "resnet18", 3)
    assert spec.class_names == ("a", "b", "c")
    assert spec.top1 is None and spec.input_size == 224
    assert spec.params_m == pytest.approx(sum(p.numel() for p in trained.parameters()) / 1e6)
    row = list_models().set_index("name").loc["flowers3"]
    assert (row["source"], row["weights"]) == ("checkpoint", "checkpoint")

    model = build_model("flowers3")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 3)
        assert torch.allclose(out, trained(x))
    random_init = build_model("flowers3", pretrained=False)
    assert head_spec(random_init).num_classes == 3
    assert not torch.equal(random_init.fc.weight, trained.fc.weight)


def test_register_bare_state_dict_with_hidden_head(tmp_path: Path, no_checkpoints: None) -> None:
    torch.manual_seed(1)
    trained = build_model("resnet18", pretrained=False)
    replace_head(trained, 4, dropout=0.2, hidden=16)
    path = tmp_path / "bare.pth"
    torch.save(trained.state_dict(), path)
    with pytest.raises(ModelError, match="arch="):
        register_checkpoint(path)
    spec = register_checkpoint(path, arch="resnet18", name="mine")
    assert spec.num_classes == 4 and spec.class_names == ()
    model = build_model("mine")
    assert head_spec(model).hidden == 16
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), trained(x))


def test_register_checkpoint_refuses_bad_input(tmp_path: Path, no_checkpoints: None) -> None:
    path = tmp_path / "resnet18.pt"
    torch.save({"arch": "resnet18", "state_dict": torchvision.models.resnet18(num_classes=2).state_dict()}, path)
    with pytest.raises(ModelError, match="built-in"):
        register_checkpoint(path)
    with pytest.raises(ModelError, match="vgg11"):
        register_checkpoint(path, arch="vgg11", name="x")
    with pytest.raises(ModelError, match="does not exist"):
        register_checkpoint(tmp_path / "missing.pt", arch="resnet18")
    wrong = tmp_path / "wrong.pt"
    torch.save({"arch": "mobilenet_v3_small", "state_dict": torchvision.models.resnet18().state_dict()}, wrong)
    with pytest.raises(ModelError, match="wrong.pt"):
        register_checkpoint(wrong)


class _Payload:
    """Unpickling this object creates a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_register_checkpoint_never_unpickles_code(tmp_path: Path, no_checkpoints: None) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    torch.save({"arch": "resnet18", "state_dict": state, "extra": _Payload(marker)}, path)

    with pytest.raises(ModelError, match="evil.pt"):
        register_checkpoint(path)
    assert not marker.exists()
    assert "evil" not in catalog._CHECKPOINTS

    # Control: an unrestricted unpickler does run the payload, so the refusal above matters.
    with open(path, "rb") as fh:
        torch.load(fh, weights_only=False)
    assert marker.exists()


def test_timm_rows_come_from_the_dated_snapshot() -> None:
    from tlwidgets.core import timm_catalog

    snap = timm_catalog.snapshot()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", snap["built"]) and snap["timm"]
    timm_rows = CATALOG[CATALOG["source"] == "timm"]
    assert len(timm_rows) == len(snap["rows"]) >= 1000
    assert timm_rows["name"].str.startswith("timm:").all()
    assert timm_rows["top1"].isna().all()  # until update_accuracy() fetched timm's table
    assert timm_catalog.SNAPSHOT.stat().st_size < 300_000
    r50 = get_spec("timm:resnet50.a1_in1k")
    assert (r50.arch, r50.family, r50.hub_id, r50.license) == (
        "resnet50.a1_in1k", "ResNet", "timm/resnet50.a1_in1k", "apache-2.0")
    assert r50.params_m == pytest.approx(25.557, abs=0.001)
    assert r50.gflops == pytest.approx(get_spec("resnet50").gflops, rel=0.01)  # the same network
    assert (r50.input_size, r50.resize_size, r50.interpolation) == (224, 235, "bicubic")  # crop_pct 0.95
    assert r50.class_names == get_spec("resnet50").class_names
    vit = get_spec("timm:vit_base_patch16_224.augreg2_in21k_ft_in1k")
    assert (vit.family, vit.mean, vit.input_size) == ("ViT", (0.5, 0.5, 0.5), 224)
    left_out = {s["id"]: s["reason"] for s in snap["skipped"]}
    assert "safetensors" in left_out["vit_base_patch16_224.augreg_in1k"]  # .npz weights
