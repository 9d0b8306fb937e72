"""The Cleaner panel: pages by loss with filters, duplicates and neighbours, choices, review,
apply and undo on a folder with planted problems; and its place under the assessment."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

import tlwidgets
from tests.planted import contents, planted_folder, trained_session, tree
from tlwidgets.widgets.cleaner import Cleaner
from tlwidgets.widgets.training_panel import TrainingPanel


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A train/val folder with planted problems and a session after a default fit on it.

    Tests that change the folder put it back (undo) before they end.
    """
    planted = planted_folder(tmp_path_factory.mktemp("cleaner") / "images", split_folders=True)
    return planted, trained_session(planted.root)


@pytest.fixture
def found(trained):
    """The trained session and a Cleaner that has looked for issues."""
    planted, s = trained
    cleaner = Cleaner(s)
    cleaner.find_button.click()
    assert cleaner.last_error == ""
    yield planted, s, cleaner
    cleaner.close()


def _shown(cleaner: Cleaner) -> list[str]:
    return [p for c in cleaner.cells if c.box.layout.display != "none" for p in c.paths]


def test_the_first_page_by_loss_shows_the_planted_wrong_labels(found) -> None:
    planted, s, cleaner = found
    assert tlwidgets.Cleaner is Cleaner
    assert cleaner.view.value == "loss" and len(cleaner.cells) == 12
    page = _shown(cleaner)
    assert len(page) == 12 and set(map(planted.path, planted.mislabelled)) <= set(page)
    assert "page 1 of" in cleaner.page_label.value and cleaner.prev_button.disabled
    assert "Scored" in cleaner.status.value and "near-duplicate pairs" in cleaner.status.value
    first = cleaner.cells[0]
    assert "loss" in first.html.value and "<img" in first.html.value
    options = dict(first.choices[0].options)
    label = cleaner.report.scores.iloc[0]["label"]
    assert options == {"keep": "keep", **{f"move to {c}": f"move:{c}" for c in s.data.classes if c != label},
                       "remove": "remove"}
    cleaner.next_button.click()
    assert cleaner.page == 1 and not set(_shown(cleaner)) & set(page)


def test_class_and_confusion_cell_filters(found) -> None:
    planted, _, cleaner = found
    cleaner.class_filter.value = "class_2"
    labels = set(cleaner.items()["label"])
    assert labels == {"class_2"} and cleaner.page == 0
    cleaner.class_filter.value = ""
    cell = next(v for label, v in cleaner.cell_filter.options if label.startswith("class_1 → class_0"))
    cleaner.cell_filter.value = cell
    assert planted.path("train/class_1/wrong_0.png") in _shown(cleaner)
    rows = cleaner.items()
    assert set(rows["label"]) == {"class_1"} and set(rows["predicted"]) == {"class_0"}


def test_duplicates_and_neighbours_views(found) -> None:
    planted, _, cleaner = found
    cleaner.view.value = "duplicates"
    pairs = {frozenset(c.paths) for c in cleaner.cells if c.box.layout.display != "none"}
    assert pairs == {frozenset(map(planted.path, pair)) for pair in planted.duplicates}
    crossing = next(c for c in cleaner.cells if planted.path("val/class_0/copy_of_train.png") in c.paths)
    assert "train and val" in crossing.html.value and "cosine 1.000" in crossing.html.value
    assert all(ch.layout.display != "none" for ch in crossing.choices)
    assert cleaner.cell_filter.layout.display == "none"
    cleaner.view.value = "neighbours"
    shown = _shown(cleaner)
    copy = planted.path("train/class_2/copy_of_class_1.png")
    assert copy in shown
    cell = next(c for c in cleaner.cells if c.paths == [copy])
    assert "neighbours say" in cell.html.value and "class_1" in cell.html.value
    assert cell.choices[1].layout.display == "none"


def test_choose_review_apply_and_undo(found) -> None:
    planted, s, cleaner = found
    before, files = tree(planted.root), contents(planted.root)
    n = int(s.data.report.counts.loc["class_1", "total"])
    wrong = planted.path("train/class_1/wrong_0.png")
    copy = planted.path("train/class_2/copy_of_class_1.png")
    cells = {c.paths[0]: c for c in cleaner.cells if c.paths}
    cells[wrong].choices[0].value = "move:class_0"
    cells[copy].choices[0].value = "remove"
    assert "2 changes chosen" in cleaner.status.value
    assert cleaner.apply_button.disabled  # nothing reviewed yet
    cleaner.review_button.click()
    assert "2 changes" in cleaner.review.value and "nothing has happened yet" in cleaner.review.value
    assert "train/class_0/wrong_0.png" in cleaner.review.value
    assert "_removed/train/class_2/copy_of_class_1.png" in cleaner.review.value
    assert tree(planted.root) == before and not cleaner.apply_button.disabled
    cleaner.apply_button.click()
    assert cleaner.last_error == ""
    after = tree(planted.root)
    assert set(before) - set(after) == {"train/class_1/wrong_0.png", "train/class_2/copy_of_class_1.png"}
    assert set(after) - set(before) == {"train/class_0/wrong_0.png", "_removed", "_removed/train",
                                        "_removed/train/class_2", "_removed/train/class_2/copy_of_class_1.png"}
    assert contents(planted.root) == files
    status = html.unescape(cleaner.status.value)
    assert "Moved 1, removed 1" in status and f"'class_1' {n} → {n - 1} images" in status
    assert wrong not in _shown(cleaner) and copy not in set(cleaner.report.scores["path"])
    assert cleaner.apply_button.disabled and not cleaner.undo_button.disabled and cleaner.review.value == ""
    cleaner.undo_button.click()
    assert cleaner.last_error == ""
    assert tree(planted.root) == before
    assert "Undid the last changes" in cleaner.status.value
    assert copy in set(cleaner.report.scores["path"]) and cleaner.undo_button.disabled


def test_apply_needs_a_review_of_the_current_choices_and_errors_show_in_the_panel(found) -> None:
    planted, _, cleaner = found
    before = tree(planted.root)
    cleaner.choose(planted.path("train/class_1/wrong_0.png"), "remove")
    cleaner.review_changes()
    cleaner.choose(planted.path("train/class_2/wrong_1.png"), "remove")  # changed after the review
    assert cleaner.apply_button.disabled
    cleaner.apply()
    assert "Review the changes first" in cleaner.last_error and tree(planted.root) == before
    cleaner.choose(planted.path("train/class_2/wrong_1.png"), ("move", "../x"))
    cleaner.review_button.click()
    assert "not allowed" in cleaner.last_error and cleaner.apply_button.disabled
    cleaner.choose(planted.path("train/class_2/wrong_1.png"), "keep")
    cleaner.choose(str(planted.root.parent / "elsewhere.png"), "remove")
    cleaner.review_button.click()
    assert "outside the data folder" in cleaner.last_error and cleaner.apply_button.disabled
    assert tree(planted.root) == before


def test_a_change_of_the_data_elsewhere_asks_for_a_new_look(found) -> None:
    planted, s, cleaner = found
    s.load_data(planted.root)
    assert cleaner.report is None and "press Find issues again" in cleaner.status.value
    assert all(c.box.layout.display == "none" for c in cleaner.cells)


def test_the_assessment_opens_a_cleaner_of_its_session(image_folder: Path) -> None:
    s = tlwidgets.Session(device="cpu", image_size=32)
    s.load_data(image_folder)
    panel = TrainingPanel(s)
    assessment = panel.assessment
    assert assessment.cleaner is None and assessment.clean_button in assessment.children
    assessment.clean_button.click()
    cleaner = assessment.cleaner
    assert isinstance(cleaner, Cleaner) and cleaner.session is s
    assert assessment.clean_area.children == (cleaner,)
    assessment.clean_button.click()
    assert assessment.cleaner is cleaner
    cleaner.find_button.click()  # no model yet: a plain message in the panel
    assert "No model loaded" in cleaner.last_error
    panel.close()
