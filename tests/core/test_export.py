"""ONNX export: the exported model computes what the PyTorch model computes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import make_image_folder
from tlwidgets import Session
from tlwidgets.core import export
from tlwidgets.core.errors import ModelError

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import FLOWERS

    if FLOWERS.is_dir():
        return FLOWERS
    return make_image_folder(tmp_path_factory.mktemp("export") / "images", classes=5, per_class=6, size=96)


@pytest.fixture(scope="module")
def session(images_dir: Path) -> Session:
    s = Session(device="cpu", image_size=160)
    s.load_model("efficientnet_lite0")  # pretrained: meaningful, varied logits
    s.load_data(images_dir, val_fraction=0.2, max_per_class=6)
    torch.manual_seed(0)
    s.replace_head(hidden=32, dropout=0.1)
    s.freeze_backbone()
    s.fit(epochs=1, batch_size=8, max_batches_per_epoch=2)
    return s


def _batch(s: Session, n: int) -> torch.Tensor:
    samples = (*s.data.val, *s.data.train)[:n]
    return torch.stack([s.data.eval_tf(export_image(p.path)) for p in samples])


def export_image(path: str):  # noqa: ANN201
    from tlwidgets.core.data import load_image

    return load_image(path)


def _onnx_logits(path: Path, x: torch.Tensor) -> torch.Tensor:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_onnx_matches_pytorch_on_images(session: Session, tmp_path: Path, exporter: str) -> None:
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    result = session.export_onnx(tmp_path / "model", exporter=exporter)
    assert result.path == (tmp_path / "model.onnx").resolve() and result.path.is_file()
    assert result.exporter == exporter and result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    assert result.batch_sizes == (1, 4)
    x = _batch(session, 6)  # a batch size the export never saw: the batch axis is dynamic
    with torch.no_grad():
        want = session.model.eval()(x).float()
    got = _onnx_logits(result.path, x)
    assert got.shape == (6, 5)
    assert float(want.std()) > 0.1  # real, varied logits, not a dead network
    assert float((got - want).abs().max()) <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert json.loads(meta["tlwidgets.classes"]) == list(session.classes)
    assert json.loads(meta["tlwidgets.transforms"])["input_size"] == 160
    assert session.model.training is False and next(session.model.parameters()).dtype == torch.float32
    assert "max abs difference" in session.message


def test_export_leaves_the_model_untouched_and_checks_given_images(session: Session, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    files = [s.path for s in session.data.train[:2]]
    result = session.export_onnx(tmp_path / "m.onnx", images=files, exporter="torchscript")
    assert result.batch_sizes == (1, 2)
    after = session.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_disagreement_raises_and_removes_the_file(session: Session, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(export, "_compare", lambda *a, **k: 0.5)
    with pytest.raises(ModelError, match="differs from PyTorch by up to 5.00e-01"):
        session.export_onnx(tmp_path / "bad.onnx", exporter="torchscript")
    assert not (tmp_path / "bad.onnx").exists()


def test_bad_arguments(session: Session, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="exporter='tflite'"):
        session.export_onnx(tmp_path / "x.onnx", exporter="tflite")
    with pytest.raises(ModelError, match="is a folder"):
        session.export_onnx(tmp_path)
    with pytest.raises(ModelError, match="N x 3 x 160 x 160"):
        export.export_onnx(session.model, tmp_path / "x.onnx", 160, torch.zeros(2, 3, 64, 64))
    with pytest.raises(ModelError, match="load a model"):
        Session(device="cpu").export_onnx(tmp_path / "x.onnx")
