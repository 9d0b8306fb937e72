"""timm weights from the Hugging Face Hub: download through huggingface_hub, its cache, offline errors.

Every network call goes to a stand-in Hub on 127.0.0.1 (``HF_ENDPOINT``); ``HF_HOME`` is a
temporary folder. The weights are a randomly initialised timm resnet10t made by the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from tests.hub_server import hub_server
from tlwidgets.core import hub_weights
from tlwidgets.core.catalog import build_model, get_spec, list_models
from tlwidgets.core.errors import ModelError, WeightsUnavailableError
from tlwidgets.core.session import Session

timm = pytest.importorskip("timm")

NAME = "timm:resnet10t.c3_in1k"
REPO = "timm/resnet10t.c3_in1k"


@pytest.fixture(scope="module")
def served_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model("resnet10t", pretrained=False).state_dict()


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TLWIDGETS_CACHE_DIR", str(tmp_path / "tlwidgets"))  # files placed by hand stay here
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "hf" / "hub"


def test_catalog_lists_the_timm_model_with_its_hub_repository() -> None:
    spec = get_spec(NAME)
    assert (spec.source, spec.arch, spec.hub_id, spec.family) == ("timm", "resnet10t.c3_in1k", REPO, "ResNet")
    assert spec.num_classes == 1000 and spec.class_names[985] == "daisy"
    assert spec.params_m == pytest.approx(5.435, abs=0.01)


def test_download_through_huggingface_hub_reports_progress_lands_in_its_cache_and_fine_tunes(
    hf_home: Path, served_state: dict[str, torch.Tensor], image_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = save(served_state)
    with hub_server() as hub:
        hub.files[(REPO, "model.safetensors")] = body
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert list_models().set_index("name").loc[NAME, "weights"] == "download"
        session = Session(device="cpu", image_size=64)
        seen: list[tuple[int, int]] = []
        session.load_model(NAME, pretrained=True, progress=lambda done, total: seen.append((done, total)))
    assert f"GET /{REPO}/resolve/main/model.safetensors" in hub.requests
    assert seen and seen[-1] == (len(body), len(body))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    files = list(hf_home.glob("models--timm--resnet10t.c3_in1k/snapshots/*/model.safetensors"))
    assert len(files) == 1 and files[0].stat().st_size == len(body)
    loaded = session.model.state_dict()
    assert all(torch.equal(loaded[k].cpu(), v) for k, v in served_state.items())
    assert list_models().set_index("name").loc[NAME, "weights"] == "cached"

    # The server is gone: the cached file is found again, offline.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert isinstance(build_model(NAME), torch.nn.Module)

    session.load_data(image_folder, val_fraction=0.25, seed=0)
    session.replace_head()
    history = session.fit(epochs=2, batch_size=8, lr=1e-2)
    losses = [b["loss"] for b in history.batches]
    assert len(losses) >= 4 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] != losses[0]
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"] * 1.5


def test_no_network_and_no_cache_names_repository_file_and_where_to_place_it(
    hf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(WeightsUnavailableError) as err:
        build_model(NAME)
    msg = str(err.value)
    place = hub_weights.manual_path(REPO)
    assert REPO in msg and "model.safetensors" in msg and str(place) in msg and str(hf_home) in msg
    assert "http://127.0.0.1:9/timm/resnet10t.c3_in1k/resolve/main/model.safetensors" in msg

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        build_model(NAME)


def test_a_file_placed_by_hand_is_used_without_network(
    hf_home: Path, served_state: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    place = hub_weights.manual_path(REPO)
    place.parent.mkdir(parents=True)
    place.write_bytes(save(served_state))
    assert list_models().set_index("name").loc[NAME, "weights"] == "cached"
    model = build_model(NAME)
    assert torch.equal(model.state_dict()["fc.weight"], served_state["fc.weight"])


def test_random_weights_need_no_download(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    model = build_model(NAME, pretrained=False)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_hf_ids_load_timm_repositories_and_refuse_others(
    hf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(1)
    four = timm.create_model("resnet10t", pretrained=False, num_classes=4).state_dict()
    config = {"architecture": "resnet10t", "num_classes": 4, "label_names": ["a", "b", "c", "d"],
              "pretrained_cfg": {"input_size": [3, 160, 160], "crop_pct": 0.95, "interpolation": "bilinear",
                                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "license": "mit"}}
    bert = {"architectures": ["BertModel"], "auto_map": {"AutoModel": "modeling.MyModel"}}
    with hub_server() as hub:
        hub.files[("someone/tiny-resnet", "config.json")] = json.dumps(config).encode()
        hub.files[("someone/tiny-resnet", "model.safetensors")] = save(four)
        hub.files[("someone/bert-like", "config.json")] = json.dumps(bert).encode()
        hub.files[("someone/odd", "config.json")] = json.dumps({"architecture": "no_such_net"}).encode()
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        model = build_model("hf:someone/tiny-resnet")
        spec = get_spec("hf:someone/tiny-resnet")
        with pytest.raises(ModelError, match="never runs code"):
            get_spec("hf:someone/bert-like")
        with pytest.raises(ModelError, match="no architecture timm knows"):
            get_spec("hf:someone/odd")
    assert (spec.source, spec.arch, spec.num_classes, spec.input_size, spec.resize_size) == (
        "hub", "resnet10t", 4, 160, 168)
    assert (spec.interpolation, spec.mean, spec.license) == ("bilinear", (0.5, 0.5, 0.5), "mit")
    assert torch.equal(model.state_dict()["fc.weight"], four["fc.weight"])
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)
    assert not any("modeling" in r for r in hub.requests)  # no code file was ever asked for
    for bad in ("hf:../etc", "hf:a/b/c", "hf:"):
        with pytest.raises(ModelError, match="not a Hugging Face Hub model id"):
            get_spec(bad)
