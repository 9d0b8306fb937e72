"""Images per class and the imbalance warning, in the DataCollector and in the Data panel.

Both panels show the count of every class, and the warning exactly when the core rule
(``balance.imbalance_note``) gives one, with its words; it goes away once the classes are
balanced again. The collector redraws them after every picture added or deleted.
"""

from __future__ import annotations

import html
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_image_folder
from tlwidgets.core.balance import IMBALANCE_RATIO, imbalance_note
from tlwidgets.core.session import Session
from tlwidgets.widgets._balance_view import LISTED_CLASSES, BalanceView
from tlwidgets.widgets.data_collector import DataCollector
from tlwidgets.widgets.dataset_browser import DatasetBrowser


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _text(widget: object) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", widget.value))  # type: ignore[attr-defined]


def _on_disk(folder: Path) -> dict[str, int]:
    return {d.name: len(list(d.iterdir())) for d in sorted(folder.iterdir()) if d.is_dir()}


def _assert_shows_the_rule(view: BalanceView, counts: dict[str, int]) -> None:
    """The view shows ``counts`` and the core's warning for them, or no warning when it gives none."""
    assert view.counts == counts
    note = imbalance_note(counts)
    assert view.note == note
    if note is None:
        assert view.warning.value == ""
    else:
        assert _text(view.warning).endswith(note) and "Classes are imbalanced" in note
    line = _text(view.counts_line)
    for name, n in counts.items():
        assert f"{name} {n}" in line


@pytest.fixture
def collector(tmp_path: Path):
    dc = DataCollector(Session(device="cpu"), folder=tmp_path / "mine", camera=False, thumbnails_per_class=2)
    yield dc
    dc.close()


def test_the_collector_counts_each_class_and_warns_exactly_when_the_rule_does(collector: DataCollector) -> None:
    dc = collector
    assert dc.balance.counts == {} and dc.balance.warning.value == "" and dc.balance.counts_line.value == ""
    dc.create_class("cats")
    dc.create_class("dogs")
    _assert_shows_the_rule(dc.balance, {"cats": 0, "dogs": 0})
    dc.add_images([(f"c{i}.png", _png(i)) for i in range(3)], class_name="cats")
    _assert_shows_the_rule(dc.balance, {"cats": 3, "dogs": 0})  # an empty class is not "imbalanced"
    assert dc.balance.note is None
    dc.add_images([(f"d{i}.png", _png(10 + i)) for i in range(8)], class_name="dogs")
    _assert_shows_the_rule(dc.balance, {"cats": 3, "dogs": 8})  # 2.7 times: below the ratio
    assert dc.balance.note is None
    dc.add_images([("d8.png", _png(18))], class_name="dogs")
    _assert_shows_the_rule(dc.balance, {"cats": 3, "dogs": 9})  # 3 times: the warning appears
    assert dc.balance.note is not None and "cats (3)" in dc.balance.note
    assert 9 / 3 == IMBALANCE_RATIO

    dc.delete_image(dc.folder / "dogs" / "d0.png")  # deleting a picture redraws the counts
    _assert_shows_the_rule(dc.balance, {"cats": 3, "dogs": 8})
    assert dc.balance.warning.value == ""
    dc.add_images([("c3.png", _png(3))], class_name="cats")
    dc.add_images([(f"d{i}.png", _png(20 + i)) for i in range(9, 13)], class_name="dogs")
    _assert_shows_the_rule(dc.balance, {"cats": 4, "dogs": 12})
    assert dc.balance.note is not None
    dc.rename_class("cats", "kittens")
    _assert_shows_the_rule(dc.balance, {"dogs": 12, "kittens": 4})
    assert "kittens (4)" in dc.balance.note
    dc.delete_class("dogs", confirm=True)
    _assert_shows_the_rule(dc.balance, {"kittens": 4})
    assert dc.balance.warning.value == ""
    assert dc.balance.counts == _on_disk(dc.folder)


@pytest.mark.parametrize(
    "counts",
    [
        {"a": 1, "b": 1},
        {"a": 2, "b": 6},
        {"a": 2, "b": 5},
        {"a": 10, "b": 29, "c": 30},
        {"a": 10, "b": 29, "c": 29},
        {"a": 0, "b": 1, "c": 2},
        {"a": 0, "b": 1, "c": 3},
    ],
)
def test_files_changed_on_disk_show_after_refresh(collector: DataCollector, counts: dict[str, int]) -> None:
    dc = collector
    for name, n in counts.items():
        (dc.folder / name).mkdir()
        for i in range(n):
            (dc.folder / name / f"{i}.png").write_bytes(_png(i))
    dc.refresh()
    _assert_shows_the_rule(dc.balance, counts)
    shutil.rmtree(dc.folder / "a")
    dc.refresh()
    _assert_shows_the_rule(dc.balance, {k: v for k, v in counts.items() if k != "a"})


def test_many_classes_are_summed_up_in_one_line() -> None:
    view = BalanceView("Images per class")
    counts = {f"class_{i:02d}": 10 + i for i in range(LISTED_CLASSES + 8)}
    counts["class_07"] = 2
    view.show(counts)
    line = f"Images per class: {LISTED_CLASSES + 8} classes, from 2 (class_07) to 29 (class_19)"
    assert _text(view.counts_line) == line
    assert view.note == imbalance_note(counts) and "class_07 (2)" in _text(view.warning)
    view.show({"<b>x</b>": 1, "y": 1})
    assert "<b>x</b>" not in view.counts_line.value and "&lt;b&gt;x&lt;/b&gt; 1" in view.counts_line.value


def test_the_data_panel_counts_training_images_and_follows_the_rule(tmp_path: Path) -> None:
    even = make_image_folder(tmp_path / "even", classes=3, per_class=12, size=16)
    uneven = make_image_folder(tmp_path / "uneven", classes=3, per_class=12, size=16)
    for path in sorted((uneven / "class_1").iterdir())[3:]:
        path.unlink()
    session = Session(device="cpu")
    panel = DatasetBrowser(session)
    assert panel.balance.counts == {} and panel.imbalance.value == ""
    for folder, imbalanced in ((even, False), (uneven, True), (even, False)):
        session.load_data(folder, val_fraction=0.25)
        train = session.data.report.counts["train"].astype(int).to_dict()
        labels = [label for _path, label in session.data.train]
        assert panel.balance.counts == train == {name: labels.count(i) for i, name in enumerate(session.data.classes)}
        assert list(panel.counts_fig.data[0].y) == list(train.values())
        _assert_shows_the_rule(panel.balance, train)
        assert (panel.balance.note is not None) is imbalanced
        assert ("Classes are imbalanced" in panel.imbalance.value) is imbalanced
    assert "Training images per class: class_0 9 · class_1 9 · class_2 9" in _text(panel.balance.counts_line)
    panel.close()


def test_pictures_collected_and_used_show_in_the_data_panel(collector: DataCollector) -> None:
    dc = collector
    browser = DatasetBrowser(dc.session)
    dc.create_class("red")
    dc.create_class("blue")
    dc.add_images([(f"r{i}.png", _png(i)) for i in range(10)], class_name="red")
    dc.add_images([(f"b{i}.png", _png(50 + i)) for i in range(10)], class_name="blue")
    dc.use_data(val_fraction=0.2)
    assert browser.balance.note is None and browser.imbalance.value == ""
    _assert_shows_the_rule(browser.balance, {"blue": 8, "red": 8})
    for i in range(2, 10):
        dc.delete_image(dc.folder / "blue" / f"b{i}.png")
    assert dc.balance.note is not None  # the collector at once
    assert browser.balance.counts == {"blue": 8, "red": 8}  # the loaded data has not changed yet
    dc.use_data(val_fraction=0.2)
    train = dc.session.data.report.counts["train"].astype(int).to_dict()
    _assert_shows_the_rule(browser.balance, train)
    assert browser.balance.note is not None and "blue" in browser.balance.note
    browser.close()
