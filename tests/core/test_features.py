"""Frozen-prefix feature cache: same results as full passes, reuse, and every invalidation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from torchvision import transforms as T

from tests.helpers import colour_task, ready_session
from tlwidgets import Session
from tlwidgets.core import features, splits
from tlwidgets.core.device import autocast_dtype
from tlwidgets.core.errors import TrainingError
from tlwidgets.core.training import TrainConfig, Trainer

SIZE = 16


class Stage(nn.Module):
    """conv-BN-ReLU with a residual connection, so fx splits see a skip inside a stage."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)) + x)


class TinyNet(nn.Module):
    def __init__(self, classes: int = 3, head_dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage1 = Stage(8)
        self.stage2 = Stage(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(head_dropout)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(self.drop(torch.flatten(self.pool(x), 1)))


def tiny_net(**kw: float) -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(**kw)


class Flipping(Dataset):
    """A dataset with a random transform: every read flips with probability 1/2."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base
        self.transform = T.RandomHorizontalFlip()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return self.transform(x), y


def freeze_all_but(model: nn.Module, *names: str) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(any(name.startswith(n + ".") for n in names))


def run(model: nn.Module, train: Dataset, val: Dataset | None, cache: features.FeatureCache | None = None,
        **options) -> tuple:
    config = TrainConfig(**{"epochs": 3, "batch_size": 8, "precision": "fp32", "lr": 0.05, **options})
    trainer = Trainer(model, train, val, config, device="cpu", feature_cache=cache)
    return trainer.fit(), trainer


@pytest.mark.parametrize(("trainable", "where"), [(("fc",), "head input"), (("stage2", "fc"), "input of stage2.conv")])
def test_cached_training_matches_full_passes(trainable: tuple[str, ...], where: str) -> None:
    histories = {}
    for mode in ("off", "on"):
        model = tiny_net()
        freeze_all_but(model, *trainable)
        histories[mode], trainer = run(model, colour_task(40, 0), colour_task(12, 1), cache_features=mode)
        assert trainer.mode == (f"cached features ({where})" if mode == "on" else "full passes: feature cache off")
    off, on = histories["off"], histories["on"]
    assert len(on.batches) == len(off.batches) == 15 and len(on.epochs) == len(off.epochs) == 3
    assert [set(b) for b in on.batches] == [set(b) for b in off.batches]
    assert [set(e) for e in on.epochs] == [set(e) for e in off.epochs]
    # Frozen BatchNorm uses stored statistics and no Dropout is frozen: the same numbers.
    assert on.batch_frame()["loss"].tolist() == pytest.approx(off.batch_frame()["loss"].tolist(), rel=1e-5, abs=1e-6)
    assert on.epoch_frame()["val_loss"].tolist() == pytest.approx(off.epoch_frame()["val_loss"].tolist(), rel=1e-5)
    assert on.epoch_frame()["val_acc"].tolist() == off.epoch_frame()["val_acc"].tolist()


def test_later_epochs_and_fits_reuse_features_and_report_rates() -> None:
    model = tiny_net()
    freeze_all_but(model, "fc")
    cache = features.FeatureCache()
    history, _ = run(model, colour_task(40, 0), colour_task(12, 1), cache, epochs=4)
    assert cache.stats["images_extracted"] == 52 and cache.stats["builds"] == 1  # one pass over train + val
    assert cache.stats["images_reused"] == 3 * 40 + 3 * 12
    first, later = history.epochs[0], history.epochs[1]
    assert first["feature_images_per_s"] > 0 and first["data_images_per_s"] > 0
    assert later["feature_images_per_s"] is None and later["data_images_per_s"] is None  # all cached
    assert later["compute_images_per_s"] > 0
    train, val = colour_task(40, 0), colour_task(12, 1)
    run(model, train, val, cache, epochs=1)
    assert cache.stats["builds"] == 2  # other dataset objects
    run(model, train, val, cache, epochs=2)
    assert cache.stats["builds"] == 2 and cache.stats["images_extracted"] == 104  # the same ones: reused
    with torch.no_grad():
        model.stage1.conv.weight.mul_(1.0)  # any in-place change of a frozen weight counts
    run(model, train, val, cache, epochs=1)
    assert cache.stats["builds"] == 3
    model.stage1.bn.running_mean += 0.0  # so does a buffer change
    model.stage1.bn.running_mean[0] = 1.0
    run(model, train, val, cache, epochs=1)
    assert cache.stats["builds"] == 4


def test_augmented_data_caches_views_and_epochs_cycle_through_them() -> None:
    model = tiny_net()
    freeze_all_but(model, "fc")
    cache = features.FeatureCache()
    train = Flipping(colour_task(16, 0))
    history, trainer = run(model, train, colour_task(8, 1), cache, epochs=6, augment_views=3)
    assert trainer.mode == "cached features (head input, 3 augmented views)"
    assert cache.stats["images_extracted"] == 3 * 16 + 8  # views 1-3 in epochs 1-3, reused in 4-6
    assert len(history.epochs) == 6 and len(history.batches) == 12
    entry = cache._entry
    assert entry.train.filled.all() and entry.val.filled.all()
    assert not torch.equal(entry.train.data[0], entry.train.data[1])  # the views differ


def test_full_passes_when_there_is_no_frozen_prefix_and_errors_when_forced() -> None:
    history, trainer = run(tiny_net(), colour_task(16, 0), None, epochs=1)
    assert trainer.mode == "full passes: all layers trainable" and len(history.epochs) == 1
    model = tiny_net()
    freeze_all_but(model, "stem", "fc")  # the first layer trains: nothing frozen in front of it
    _, trainer = run(model, colour_task(16, 0), None, epochs=1)
    assert trainer.mode.startswith("full passes: stem.0 trainable")
    with pytest.raises(TrainingError, match="cache_features='on' but there is no frozen prefix"):
        run(model, colour_task(16, 0), None, epochs=1, cache_features="on")


def test_features_over_the_memory_limit_go_to_disk_or_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "memory_budget", lambda device: 100)
    model = tiny_net()
    freeze_all_but(model, "fc")
    history, trainer = run(model, colour_task(16, 0), colour_task(8, 1), epochs=1)
    assert trainer.mode == "cached features on disk (head input)" and len(history.epochs) == 1
    monkeypatch.setattr(features, "disk_room", lambda: (10, "10 bytes free on disk"))  # no room there either
    history, trainer = run(model, colour_task(16, 0), colour_task(8, 1), epochs=1)
    assert trainer.mode.startswith("full passes: features need") and len(history.epochs) == 1
    _, trainer = run(model, colour_task(16, 0), None, epochs=1, cache_features="on")  # "on" ignores the limit
    assert trainer.mode == "cached features (head input)"


def test_frozen_dropout_is_off_in_the_prefix() -> None:
    """Dropout before the head is part of the frozen prefix: cached features are deterministic."""
    model = tiny_net(head_dropout=0.5)
    freeze_all_but(model, "fc")
    split = splits.find_split(model, "fc", torch.rand(2, 3, SIZE, SIZE))
    assert isinstance(split, splits.Split) and split.where == "head input"
    model.train()
    split.prefix_eval()
    x = torch.rand(4, 3, SIZE, SIZE)
    assert torch.equal(split.prefix(x), split.prefix(x))
    assert model.fc.training and model.drop.training is False


def test_random_transform_detection() -> None:
    assert not features.is_random_transform(T.Compose([T.Resize(8), T.CenterCrop(8), T.ToTensor()]))
    assert features.is_random_transform(T.Compose([T.Resize(8), T.RandomHorizontalFlip(), T.ToTensor()]))
    assert features.is_random_transform(lambda im: im)  # unknown: assumed random
    assert not features.dataset_is_random(colour_task(4, 0))


# ---------------------------------------------------------------------------- through the Session
@pytest.fixture
def session(image_folder: Path, tiny_size: int) -> Session:
    return ready_session(image_folder, "resnet18", image_size=tiny_size, torch_seed=0, batch_size=8, epochs=1)


def _builds_after_fit(s: Session) -> int:
    s.fit()
    return s.feature_cache.stats["builds"]


def test_session_reuses_features_until_something_changes(session: Session, image_folder: Path) -> None:
    s = session
    stats = s.feature_cache.stats
    assert _builds_after_fit(s) == 1 and stats["images_extracted"] == 24
    assert "Batches: cached features (head input)." in s.message
    assert _builds_after_fit(s) == 1 and stats["images_extracted"] == 24  # nothing changed: no new pass
    train_ds, _ = s._datasets()
    assert train_ds._cache  # decoded images are kept too
    s.configure(lr=0.01, epochs=2)  # options that do not touch the features
    assert _builds_after_fit(s) == 1
    # The other precision than the one "auto" picks on this CPU (fp32 where bf16 is not native).
    other = "fp32" if autocast_dtype("cpu") is not None else "bf16"
    changes = [  # (what, change, whether the features must be computed again)
        ("head replaced", s.replace_head, False),  # the features end before the head
        ("head with a hidden layer", lambda: s.replace_head(hidden=8, dropout=0.2), False),
        ("frozen set", lambda: s.freeze_up_to("layer3"), True),
        ("frozen set back", s.freeze_backbone, True),
        ("data reloaded", lambda: s.load_data(image_folder, val_fraction=0.25, seed=0), True),
        ("augmentation", lambda: s.set_augment(flip=True), True),
        ("image size", lambda: setattr(s, "image_size", 48), True),
        ("precision", lambda: s.configure(precision=other), True),
        ("model reloaded", lambda: (s.load_model("resnet18", pretrained=False), s.replace_head(), s.freeze_backbone()),
         True),
    ]
    builds = 1
    for what, change, rebuilds in changes:
        change()
        builds += rebuilds
        assert _builds_after_fit(s) == builds, what
    assert "cached features (head input, 4 augmented views)" in s.message  # flip is still on


def test_session_with_augmentation_says_views(session: Session) -> None:
    session.set_augment(flip=True, rotation=10)
    session.fit(epochs=2)
    assert "cached features (head input, 4 augmented views)" in session.message
    session.configure(cache_features="off")
    session.fit(epochs=1)
    assert "full passes: feature cache off" in session.message


def test_new_model_or_data_frees_the_features_at_once(session: Session, image_folder: Path) -> None:
    session.fit()
    bytes_per_value = 2 if autocast_dtype("cpu") == torch.bfloat16 else 4
    assert session.feature_cache.nbytes == 24 * 512 * bytes_per_value  # 18 + 6 images x 512 features
    session.load_data(image_folder, val_fraction=0.25, seed=0)
    assert session.feature_cache.nbytes == 0
    session.replace_head()
    session.freeze_backbone()
    session.fit()
    assert session.feature_cache.nbytes > 0
    session.load_model("resnet18", pretrained=False)
    assert session.feature_cache.nbytes == 0 and session.feature_cache._split is None
