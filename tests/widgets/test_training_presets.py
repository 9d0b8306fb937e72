"""TrainingPanel recipes: Quick / Better / Best with what each does and its time, Train runs the
chosen one in the background and says which phase runs and, at the end, what it changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ready_session
from tlwidgets import Session
from tlwidgets.widgets._preset_picker import about as _about
from tlwidgets.widgets.training_panel import TrainingPanel

WAIT_S = 180  # generous: CI machines may be busy


@pytest.fixture
def session(image_folder: Path) -> Session:
    return ready_session(image_folder, "resnet18", image_size=64, batch_size=4)


def _one_epoch_per_phase(s: Session) -> None:
    """Every fit ends after its first epoch, as early stopping would end it (the run goes on)."""
    s.on_fit_start(lambda trainer: setattr(trainer, "stop_training", True))


def _record(panel: TrainingPanel) -> list[str]:
    seen: list[str] = []
    panel.progress.observe(lambda change: seen.append(change["new"]), names="value")
    return seen


def _trainable(s: Session) -> set[str]:
    return {n for n, p in s.model.named_parameters() if p.requires_grad}


def test_recipe_defaults_to_quick_and_tells_what_it_does_and_how_long(session: Session) -> None:
    panel = TrainingPanel(session)
    assert panel.preset.options == ("Quick", "Better", "Best", "Custom") and panel.preset.value == "Quick"
    assert "tlw-preset" in panel.preset._dom_classes and "tlw-preset-info" in panel.preset_info._dom_classes
    info = panel.preset_info.value
    assert "Quick" in info and "trains only the new head" in info and "Time on this machine: about" in info
    panel.preset.value = "Better"
    assert "last stage" in panel.preset_info.value and "about" in panel.preset_info.value
    panel.preset.value = "Best"
    assert "every layer" in panel.preset_info.value and "about" in panel.preset_info.value


def test_recipe_info_says_what_is_missing(image_folder: Path) -> None:
    s = Session(device="cpu", image_size=64)
    panel = TrainingPanel(s)
    assert "Load a model and images" in panel.preset_info.value
    s.load_model("resnet18", pretrained=False)
    assert "Load images" in panel.preset_info.value
    s.load_data(image_folder, val_fraction=0.25, seed=0)
    assert "Load" not in panel.preset_info.value and "about" in panel.preset_info.value


@pytest.mark.parametrize(("preset", "phase_text", "changed", "trainable"), [
    ("Quick", "Quick: backbone frozen, head only", "Quick: trained the head with the backbone frozen.", "fc."),
    ("Better", "Better, phase 2 of 2: last stage (layer4) unfrozen (LR ×0.1)",
     "Better: trained the head with the backbone frozen, then unfroze layer4 with LR ×0.1.", ("layer4.", "fc.")),
    ("Best", "Best, phase 2 of 2: every layer unfrozen, LR ×0.01 (conv1) rising to ×1 (head)",
     "then unfroze every layer with LR ×0.01 (conv1) rising to ×1 (head).", ""),
], ids=["Quick", "Better", "Best"])
def test_train_runs_the_chosen_recipe_and_says_phase_and_change(
    session: Session, preset: str, phase_text: str, changed: str, trainable: str | tuple[str, ...]
) -> None:
    session.unfreeze_all()  # the recipe sets the freezing itself
    _one_epoch_per_phase(session)
    panel = TrainingPanel(session)
    panel.preset.value = preset
    seen = _record(panel)
    panel.train_button.click()
    assert panel.preset.disabled  # no switching recipes while one runs
    assert panel.wait(WAIT_S)
    assert panel.last_error == ""
    assert any(phase_text in text for text in seen), seen
    final = panel.progress.value
    assert "Done: " in final and changed in final, final
    phases = 1 if preset == "Quick" else 2
    assert len(session.history.epochs) == phases  # one history over the phases
    assert _trainable(session) == {n for n, _ in session.model.named_parameters() if n.startswith(trainable)}
    assert not panel.preset.disabled and not panel.train_button.disabled
    assert session.last_eval is not None  # the assessment follows, as after any run


def test_quick_keeps_the_options_the_user_set_and_better_puts_them_back(session: Session) -> None:
    panel = TrainingPanel(session)
    panel.auto_epochs.value = False
    panel.epochs.value = 2
    panel.train_button.click()
    assert panel.wait(WAIT_S)
    assert len(session.history.epochs) == 2 and "Done: 2 epochs" in panel.progress.value
    epochs: list[object] = []
    session.on_fit_start(lambda trainer: epochs.append(trainer.config.epochs))
    _one_epoch_per_phase(session)
    panel.preset.value = "Better"
    panel.train_button.click()
    assert panel.wait(WAIT_S)
    assert epochs == ["auto", "auto"]  # every Better phase trains until the validation loss stalls
    assert session.config.epochs == 2 and panel.epochs.value == 2 and panel.auto_epochs.value is False


def test_stop_between_phases_skips_the_next_phase(session: Session) -> None:
    _one_epoch_per_phase(session)
    panel = TrainingPanel(session)
    panel.preset.value = "Best"
    session.on_fit_end(lambda history: panel.stop())  # Stop pressed as phase 1 ends
    panel.train_button.click()
    assert panel.wait(WAIT_S)
    assert panel.last_error == ""
    assert "Stopped before phase 2 of 2" in panel.progress.value
    assert "Best ended in phase 1 of 2: trained the head with the backbone frozen." in panel.progress.value
    assert _trainable(session) == {"fc.weight", "fc.bias"}  # nothing was unfrozen
    assert session.status == "idle" and not panel.train_button.disabled


def test_about_rounds_durations() -> None:
    assert _about(0.2) == "about 1 s" and _about(7.4) == "about 7 s"
    assert _about(41) == "about 40 s" and _about(170) == "about 3 min"
    assert _about(4800) == "about 1 h 20 min"


def test_freezing_set_by_hand_makes_train_use_it(image_folder) -> None:
    from tests.helpers import ready_session
    from tlwidgets import TrainingPanel

    session = ready_session(image_folder, "resnet18", torch_seed=0, batch_size=8, epochs=1, precision="fp32")
    panel = TrainingPanel(session, min_interval=0)
    assert panel.preset.value == "Quick"
    session.unfreeze("layer4")  # what the Layers tab does
    assert panel.preset.value == "Custom"
    assert "as they are set in the Layers tab" in panel.preset_info.value
    panel.start().join(120)
    trainable = {n.split(".")[0] for n, p in session.model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}  # Train kept the hand-set freezing
    assert len(session.history.epochs) == 1
