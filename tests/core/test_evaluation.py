"""Metrics, confusion matrix, top losses and predict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from torchvision import transforms

from tlwidgets.core.errors import DataError, ModelError
from tlwidgets.core.evaluation import evaluate, predict

CLASSES = ["cat", "dog", "fox"]
LABELS = [0, 0, 1, 1, 2, 2]
# predictions: 0, 1, 1, 1, 2, 0  -> 4 of 6 correct
LOGITS = torch.tensor(
    [[3.0, 1.0, 0.0], [0.5, 2.0, 0.0], [0.0, 4.0, 1.0], [1.0, 1.5, 1.4], [0.0, 0.0, 5.0], [2.0, 0.0, 1.0]]
)


class FixedLogits(nn.Module):
    """Returns a stored row of logits; the sample index is written in pixel (0, 0, 0)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.register_buffer("table", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0].round().long()]


def indexed_images(n: int) -> torch.Tensor:
    x = torch.zeros(n, 3, 4, 4)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
    return x


@dataclass
class _Sample:
    path: str
    label: int


class PathDataset(Dataset):
    def __init__(self, samples: list) -> None:
        self.samples = samples
        self.images = indexed_images(len(samples))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        return self.images[i], (s.label if isinstance(s, _Sample) else s[1])


def test_accuracy_confusion_and_per_class_exact() -> None:
    model = FixedLogits(LOGITS)
    model.train()
    result = evaluate(model, TensorDataset(indexed_images(6), torch.tensor(LABELS)), CLASSES, batch_size=4)
    assert model.training  # mode restored
    assert result.accuracy == pytest.approx(4 / 6)
    expected_loss = nn.functional.cross_entropy(LOGITS, torch.tensor(LABELS), reduction="none")
    assert result.loss == pytest.approx(expected_loss.mean().item(), rel=1e-6)
    assert result.confusion.values.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result.confusion.index.tolist() == CLASSES and result.confusion.columns.tolist() == CLASSES
    assert result.confusion.index.name == "true" and result.confusion.columns.name == "predicted"
    pc = result.per_class
    assert pc.index.tolist() == CLASSES and list(pc.columns) == ["precision", "recall", "f1", "support"]
    assert pc["precision"].tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert pc["recall"].tolist() == pytest.approx([0.5, 1.0, 0.5])
    assert pc["f1"].tolist() == pytest.approx([0.5, 0.8, 2 / 3])
    assert pc["support"].tolist() == [2, 2, 2]
    preds = result.predictions
    assert list(preds.columns) == ["path", "true", "pred", "confidence", "loss"]
    assert preds["path"].tolist() == list(range(6))
    assert preds["true"].tolist() == ["cat", "cat", "dog", "dog", "fox", "fox"]
    assert preds["pred"].tolist() == ["cat", "dog", "dog", "dog", "fox", "cat"]
    assert preds["confidence"].tolist() == pytest.approx(LOGITS.softmax(1).max(1).values.tolist(), rel=1e-6)
    assert preds["loss"].tolist() == pytest.approx(expected_loss.tolist(), rel=1e-6)

    top = result.top_losses(3)
    assert top["loss"].tolist() == sorted(expected_loss.tolist(), reverse=True)[:3]
    assert top.index[0] == int(expected_loss.argmax())
    assert len(result.top_losses()) == 6


def test_predictions_carry_sample_paths() -> None:
    samples = [_Sample(f"/data/{CLASSES[y]}/{i}.jpg", y) for i, y in enumerate(LABELS)]
    result = evaluate(FixedLogits(LOGITS), PathDataset(samples), CLASSES)
    assert result.predictions["path"].tolist() == [s.path for s in samples]
    tuples = [(s.path, s.label) for s in samples]
    assert evaluate(FixedLogits(LOGITS), PathDataset(tuples), CLASSES).predictions["path"].iloc[5] == "/data/fox/5.jpg"


def test_evaluate_rejects_bad_inputs() -> None:
    ds = TensorDataset(indexed_images(6), torch.tensor(LABELS))
    with pytest.raises(ModelError, match="3 scores per image but there are 2 classes"):
        evaluate(FixedLogits(LOGITS), ds, ["a", "b"])
    with pytest.raises(DataError, match="Label 3 is outside"):
        evaluate(FixedLogits(LOGITS), TensorDataset(indexed_images(2), torch.tensor([0, 3])), CLASSES)
    with pytest.raises(DataError, match="empty"):
        evaluate(FixedLogits(LOGITS), TensorDataset(torch.zeros(0, 3, 4, 4), torch.zeros(0).long()), CLASSES)


def tiny_classifier(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes))


TRANSFORM = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])
NAMES = ["red", "green", "blue", "grey"]


def _image(colour: tuple[int, int, int], size: tuple[int, int] = (20, 20)) -> Image.Image:
    rng = np.random.default_rng(sum(colour))
    arr = np.clip(np.array(colour) + rng.normal(0, 30, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def test_predict_pil_images_top_k_sorted() -> None:
    model = tiny_classifier()
    images = [_image((200, 30, 30)), _image((30, 30, 200))]
    out = predict(model, images, TRANSFORM, NAMES, k=3)
    assert list(out.columns) == ["image", "rank", "class", "probability"]
    assert out["image"].tolist() == [0, 0, 0, 1, 1, 1] and out["rank"].tolist() == [1, 2, 3] * 2
    expected = model(torch.stack([TRANSFORM(im) for im in images])).softmax(1)
    for i, group in out.groupby("image"):
        probs = group["probability"].tolist()
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert probs == pytest.approx(expected[i].sort(descending=True).values[:3].tolist(), rel=1e-5)
        assert group["class"].iloc[0] == NAMES[int(expected[i].argmax())]
    clipped = predict(model, images[0], TRANSFORM, NAMES, k=10)
    assert len(clipped) == 4 and clipped["probability"].sum() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="k=0"):
        predict(model, images, TRANSFORM, NAMES, k=0)


def test_predict_paths_apply_exif_and_rgb(tmp_path: Path) -> None:
    model = tiny_classifier()
    png = tmp_path / "grey.png"
    _image((90, 90, 90)).convert("L").save(png)  # greyscale file -> RGB
    jpg = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    _image((200, 30, 30), size=(40, 20)).save(jpg, exif=exif)
    seen = []

    def recording(img: Image.Image) -> torch.Tensor:
        seen.append((img.mode, img.size))
        return TRANSFORM(img)

    out = predict(model, [str(png), jpg], recording, NAMES, k=2)
    assert out["image"].tolist() == [str(png)] * 2 + [str(jpg)] * 2
    assert seen == [("RGB", (20, 20)), ("RGB", (20, 40))]
    single = predict(model, png, TRANSFORM, NAMES, k=1)
    assert single["image"].tolist() == [str(png)] and single["rank"].tolist() == [1]


def test_predict_unreadable_path_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(DataError, match="notes.jpg"):
        predict(tiny_classifier(), [bad], TRANSFORM, NAMES)
    missing = tmp_path / "missing.png"
    with pytest.raises(DataError, match="missing.png"):
        predict(tiny_classifier(), str(missing), TRANSFORM, NAMES)


def test_a_photo_gets_the_same_probabilities_from_predict_as_from_evaluate(tmp_path: Path) -> None:
    from tlwidgets.core.data import make_transforms
    from tlwidgets.core.datasets import ImageDataset
    from tlwidgets.core.transforms import IMAGENET

    rng = np.random.default_rng(0)
    files = []
    for i in range(5):  # photos much larger than the resize: decoded at a reduced scale
        smooth = np.kron(rng.integers(0, 255, (30, 40, 3)), np.ones((40, 40, 1))).astype(np.uint8)
        path = tmp_path / f"photo_{i}.jpg"
        Image.fromarray(smooth).save(path, quality=90)
        files.append(path)
    _, eval_tf = make_transforms(IMAGENET, image_size=64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    dataset = ImageDataset([(str(f), i % 3) for i, f in enumerate(files)], eval_tf)
    result = evaluate(model, dataset, CLASSES, precision="fp32")
    out = predict(model, files, eval_tf, CLASSES, k=1)
    assert out["image"].tolist() == [str(f) for f in files]
    assert out["class"].tolist() == result.predictions["pred"].tolist()
    assert out["probability"].to_numpy() == pytest.approx(result.predictions["confidence"].to_numpy(), abs=1e-6)


@pytest.mark.parametrize("bf16", ["0", "1"], ids=["cpu-without-bf16", "cpu-with-bf16"])
def test_a_session_predicts_a_validation_photo_as_its_assessment_did(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bf16: str) -> None:
    from tests.conftest import make_image_folder
    from tests.helpers import ready_session

    monkeypatch.setenv("TLWIDGETS_CPU_BF16", bf16)  # the automatic precision of each kind of CPU
    folder = make_image_folder(tmp_path / "images", per_class=6, size=16)
    rng = np.random.default_rng(1)
    for path in folder.rglob("*.jpg"):  # photos with detail, decoded at a reduced scale
        detail = np.kron(rng.integers(0, 255, (15, 20, 3)), np.ones((20, 20, 1))).astype(np.uint8)
        Image.fromarray(detail).save(path, quality=90)
    s = ready_session(folder, "mobilenet_v3_small", image_size=64, torch_seed=0)
    result = s.evaluate()
    table = result.predictions
    out = s.predict(table["path"].tolist(), k=1)
    assert out["image"].tolist() == table["path"].tolist()
    assert out["class"].tolist() == table["pred"].tolist()
    assert out["probability"].to_numpy() == pytest.approx(table["confidence"].to_numpy(), abs=1e-6)
