"""Presets: Quick trains the head, Better also the last stage at a lower LR, Best everything
with stage LRs; each through the session's methods, and a time estimate made from measured speeds."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from tests.conftest import make_image_folder
from tests.helpers import loaded_session, ready_session
from tlwidgets import Session
from tlwidgets.core import presets, speed
from tlwidgets.core.errors import BusyError, ConfigError
from tlwidgets.core.training import Callback

HEAD = {"fc.weight", "fc.bias"}


class _OnePhaseEpoch(Callback):
    """Ends every fit after its first epoch, the way early stopping does (not a Stop)."""

    def on_fit_start(self, trainer) -> None:
        trainer.stop_training = True


class _Seen(Callback):
    """Records, per fit, the options, the feeding mode and the LR factor of every optimizer group."""

    def __init__(self) -> None:
        self.fits: list[dict] = []

    def on_fit_start(self, trainer) -> None:
        self.fits.append({"epochs": trainer.config.epochs, "patience": trainer.config.patience,
                          "lr": trainer.config.lr, "mode": trainer.mode,
                          "factors": sorted({g["lr_factor"] for g in trainer.optimizer.param_groups})})


@pytest.fixture
def session(image_folder: Path, tiny_size: int) -> Session:
    # the backbone starts trainable: every preset has to set the freezing itself
    return ready_session(image_folder, "resnet18", image_size=tiny_size, torch_seed=0, batch_size=4,
                         freeze_backbone=False)


def _trainable(s: Session) -> set[str]:
    return {n for n, p in s.model.named_parameters() if p.requires_grad}


def _stage_factors_in_order(s: Session) -> list[float]:
    table = s.layers()
    body = table[~table["is_head"] & (table["params"] > 0)]
    groups = list(dict.fromkeys(body["group"]))
    return [float(body.loc[body["group"] == g, "lr_factor"].iloc[0]) for g in groups]


def test_quick_freezes_the_backbone_and_trains_only_the_head(session: Session) -> None:
    s = session
    assert _trainable(s) != HEAD
    before = {k: v.clone() for k, v in s.model.state_dict().items()}
    config = s.config
    seen = _Seen()
    phases: list[tuple[int, int, str]] = []
    history = presets.run_preset(s, "Quick", callbacks=[seen],
                                 on_phase=lambda i, n, p: phases.append((i, n, p.title)))
    assert phases == [(1, 1, "backbone frozen, head only")]
    assert _trainable(s) == HEAD
    assert [f["epochs"] for f in seen.fits] == ["auto"]  # the session's default: until val loss stalls
    assert seen.fits[0]["mode"] == "cached features (head input)"
    after = s.model.state_dict()
    backbone = [k for k in before if not k.startswith("fc.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # BatchNorm statistics included
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert history is s.history and len(history.epochs) >= 1 and not history.stopped
    assert s.config == config and s.status == "idle"


def test_quick_trains_with_the_options_the_user_set(session: Session) -> None:
    session.configure(epochs=2, lr=0.01)
    seen = _Seen()
    history = presets.run_preset(session, "quick", callbacks=[seen])  # any case
    assert len(history.epochs) == 2
    assert seen.fits[0]["epochs"] == 2 and seen.fits[0]["lr"] == pytest.approx(0.01)
    assert session.config.epochs == 2


def test_better_ends_with_the_last_stage_and_head_trainable_at_a_lower_lr(session: Session) -> None:
    s = session
    s.configure(epochs=3)  # an explicit option: Better still runs auto phases, then puts it back
    seen = _Seen()
    titles: list[str] = []
    history = presets.run_preset(s, "Better", callbacks=[_OnePhaseEpoch(), seen],
                                 on_phase=lambda i, n, p: titles.append(presets.phase_label("Better", i, n, p)))
    assert titles == ["Better, phase 1 of 2: backbone frozen, head only",
                      "Better, phase 2 of 2: last stage (layer4) unfrozen (LR ×0.1)"]
    assert [f["epochs"] for f in seen.fits] == ["auto", "auto"]
    assert [f["mode"] for f in seen.fits] == ["cached features (head input)",
                                              "cached features (input of layer4.0.conv1)"]
    assert seen.fits[1]["factors"] == [pytest.approx(0.1), 1.0]  # the optimizer got both rates
    assert _trainable(s) == {n for n, _ in s.model.named_parameters() if n.startswith(("layer4.", "fc."))}
    assert s.lr_factors["layer4"] == pytest.approx(0.1) and s.lr_factors["fc"] == 1.0
    table = s.layers().set_index("name")
    assert table.loc["layer4.1.conv2", "lr_factor"] == pytest.approx(0.1)
    assert table.loc["layer3.1.conv2", "lr_factor"] == 0.0 and table.loc["fc", "lr_factor"] == 1.0
    assert [e["epoch"] for e in history.epochs] == [1, 2]  # one history over both phases
    assert s.config.epochs == 3


def test_best_unfreezes_everything_with_rates_rising_toward_the_head(session: Session) -> None:
    s = session
    patience = s.config.patience
    seen = _Seen()
    history = presets.run_preset(s, "Best", callbacks=[_OnePhaseEpoch(), seen])
    assert _trainable(s) == {n for n, _ in s.model.named_parameters()}
    factors = _stage_factors_in_order(s)
    assert factors[0] == pytest.approx(1 / presets.BEST_LR_MULT)
    assert all(a < b for a, b in itertools.pairwise(factors)) and factors[-1] < 1.0
    assert s.lr_factors["fc"] == 1.0
    assert [f["epochs"] for f in seen.fits] == ["auto", "auto"]
    assert seen.fits[1]["patience"] == min(s.config.patience, presets.FULL_PASS_PATIENCE)
    assert seen.fits[1]["mode"] == "full passes: all layers trainable"
    assert s.config.patience == patience  # the session's own patience is back
    assert len(history.epochs) == 2


def test_a_stop_ends_the_preset_in_its_phase(session: Session) -> None:
    s = session

    class StopAtOnce(Callback):
        def on_batch_end(self, trainer, batch, logs) -> None:
            trainer.request_stop()

    history = presets.run_preset(s, "Better", callbacks=[StopAtOnce()])
    assert history.stopped and _trainable(s) == HEAD  # phase 2 never unfroze layer4
    # on_phase returning False ends the preset before the phase changes anything
    s.unfreeze_all()
    started: list[int] = []
    presets.run_preset(s, "Best", on_phase=lambda i, n, p: started.append(i) or False)
    assert started == [1] and _trainable(s) == {n for n, _ in s.model.named_parameters()}


def test_unknown_presets_and_a_busy_session_are_refused(session: Session) -> None:
    with pytest.raises(ConfigError, match="Quick, Better, Best"):
        presets.run_preset(session, "Fastest")
    with pytest.raises(ConfigError, match="Quick, Better, Best"):
        presets.estimate_preset_seconds(session, "")
    session.status = "training"
    with pytest.raises(BusyError):
        presets.run_preset(session, "Quick")
    session.status = "idle"
    assert _trainable(session) != HEAD  # nothing was changed


def test_last_stage_is_the_last_group_before_the_head(session: Session, tiny_size: int) -> None:
    assert presets.last_stage(session) == ["layer4"]
    # ConvNeXt ends with a LayerNorm group of its own: the stage before comes with it
    s = Session(device="cpu", image_size=tiny_size)
    s.load_model("convnext_tiny", pretrained=False)
    assert presets.last_stage(s) == ["features.7", "classifier"]


def test_summary_and_phase_text() -> None:
    phase = presets.Phase("backbone frozen, head only", "trained the head with the backbone frozen", "head")
    assert presets.phase_label("Quick", 1, 1, phase) == "Quick: backbone frozen, head only"
    changes = ["trained the head with the backbone frozen", "unfroze layer4 with LR ×0.1"]
    assert presets.summary("Better", 2, 2, changes) == (
        "Better: trained the head with the backbone frozen, then unfroze layer4 with LR ×0.1.")
    assert presets.summary("Better", 1, 2, changes[:1]).startswith("Better ended in phase 1 of 2:")


def test_estimate_grows_with_the_data_and_the_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLWIDGETS_CACHE_DIR", str(tmp_path / "cache"))  # no speed measured yet
    small = loaded_session(make_image_folder(tmp_path / "small", per_class=20), image_size=64)
    large = loaded_session(make_image_folder(tmp_path / "large", per_class=40), image_size=64)
    for s in (small, large):
        s.replace_head()
    assert speed.cached_speed("resnet18", "cpu") is None
    first = presets.estimate_preset_seconds(small, "Quick")
    assert first > 0 and speed.cached_speed("resnet18", "cpu") is not None  # measured once, then cached

    def no_second_measurement(*args, **kwargs):
        raise AssertionError("the speed is measured only when none is cached")

    monkeypatch.setattr(speed, "measure_speed", no_second_measurement)
    estimates = {(size, name): presets.estimate_preset_seconds(s, name)
                 for size, s in (("small", small), ("large", large)) for name in presets.PRESETS}
    assert estimates["small", "Quick"] == pytest.approx(first)
    for name in presets.PRESETS:
        assert estimates["small", name] < estimates["large", name]
    for size in ("small", "large"):
        assert estimates[size, "Quick"] < estimates[size, "Better"] < estimates[size, "Best"]
    # the estimate follows the measured speed: twice as slow a forward pass, about twice the time
    ms = speed.cached_speed("resnet18", "cpu")
    monkeypatch.setattr(speed, "cached_speed", lambda name, device=None: 2 * ms)
    slower = presets.estimate_preset_seconds(large, "Best")
    assert 1.5 * estimates["large", "Best"] < slower < 2.0 * estimates["large", "Best"]
    # a fixed, larger number of epochs for Quick takes longer than the automatic one
    large.configure(epochs=200, cache_features="off")
    assert presets.estimate_preset_seconds(large, "Quick") > 20 * estimates["large", "Quick"]
