"""The classroom labs' helpers tell the story their notebooks tell (fast mode)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tlwidgets import DataCollector, Session

LABS = Path(__file__).resolve().parents[1] / "examples" / "labs"


@pytest.fixture
def labtools(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TLWIDGETS_FAST", "1")
    monkeypatch.syspath_prepend(str(LABS))
    sys.modules.pop("labtools", None)
    import labtools

    yield labtools
    sys.modules.pop("labtools", None)


@pytest.mark.slow
def test_freezing_table_time_falls_as_more_is_frozen(labtools) -> None:
    """The same helper and choices as lab 3: each row freezes more and trains faster."""
    assert labtools.FAST
    session = Session(device="cpu", image_size=labtools.SETTINGS["image_size"])
    session.load_data("demo", max_per_class=labtools.SETTINGS["max_per_class"])
    table = labtools.freezing_table(session, "efficientnet_lite0", [None, "blocks.3", "blocks.5", "backbone"],
                                    epochs=2, batch_size=16)  # fmt: skip
    assert list(table["frozen"]) == ["nothing (all layers train)", "input … blocks.3", "input … blocks.5",
                                     "everything but the head"]  # fmt: skip
    assert table["trainable_params"].is_monotonic_decreasing and table["trainable_pct"].iloc[0] == 100.0
    times = list(table["ms_per_image"])
    assert all(a > b for a, b in zip(times, times[1:])), table
    assert table["train_time_s"].iloc[0] > table["train_time_s"].iloc[-1], table
    assert table["val_acc"].between(0, 1).all()
    # The helper's warm-up fit is not left among the recorded runs: one run per row.
    assert len(session.runs) == 4


def test_example_pictures_fill_a_collector(labtools, tmp_path: Path) -> None:
    collector = DataCollector(Session(device="cpu"), folder=tmp_path / "pics", camera=False)
    labtools.add_example_pictures(collector, {"zero": 0, "one": 1}, per_class=5)
    assert {name: len(paths) for name, paths in collector.images.items()} == {"one": 5, "zero": 5}
    labtools.add_example_pictures(collector, {"zero": 0, "one": 1}, per_class=5)  # again: new names, none replaced
    assert {name: len(paths) for name, paths in collector.images.items()} == {"one": 10, "zero": 10}
    collector.close()


def test_lab_folder_is_temporary_in_fast_mode(labtools) -> None:
    folder = labtools.example_folder()
    assert folder.is_absolute() and folder.is_dir() and not any(folder.iterdir())
    assert LABS not in folder.parents
