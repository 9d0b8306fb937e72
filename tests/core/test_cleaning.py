"""The Cleaner's core: scores, near-duplicates and neighbours on planted problems; plans
applied inside the data folder and undone byte for byte; hostile plans refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.planted import CLASSES, contents, planted_folder, trained_session, tree
from tlwidgets import Session
from tlwidgets.core import cleaning
from tlwidgets.core.cleaning import ChangePlan, apply_plan, preview_plan, undo_last
from tlwidgets.core.errors import BusyError, ConfigError, DataError
from tlwidgets.core.paths import check_class_name


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A train/val folder with planted problems and a session after a default fit on it."""
    planted = planted_folder(tmp_path_factory.mktemp("cleaning") / "images", split_folders=True)
    return planted, trained_session(planted.root)


def _rel(paths, root: Path) -> list[str]:
    return [Path(p).relative_to(root).as_posix() for p in paths]


# ---------------------------------------------------------------------------- finding
def test_planted_wrong_labels_fill_the_first_page_and_every_image_has_a_score(trained) -> None:
    planted, s = trained
    report = cleaning.review(s)
    n = len(s.data.train) + len(s.data.val)
    assert len(report.scores) == n and report.scores["loss"].notna().all()
    assert report.scores["loss"].is_monotonic_decreasing
    assert set(report.scores["split"]) == {"train", "val"}
    # Frozen backbone: training images are scored out of fold, validation images by the model.
    assert report.scored_by == "out-of-fold"
    assert (report.scores.loc[report.scores["split"] == "train", "scored_by"] == "out-of-fold").all()
    assert (report.scores.loc[report.scores["split"] == "val", "scored_by"] == "model").all()
    first_page = _rel(report.by_loss().head(12)["path"], planted.root)
    assert set(planted.mislabelled) <= set(first_page)
    for rel, shows in planted.mislabelled.items():  # each is predicted as the class it shows
        row = report.scores[report.scores["path"] == planted.path(rel)].iloc[0]
        assert row["predicted"] == shows and row["label"] != shows
    assert "out-of-fold" in report.summary()


def test_filters_by_class_and_by_confusion_cell(trained) -> None:
    planted, s = trained
    report = cleaning.review(s)
    in_class = report.by_loss(cls="class_1")
    assert len(in_class) == sum(1 for x in (*s.data.train, *s.data.val) if x.label == 1)
    assert set(in_class["label"]) == {"class_1"}
    cell = report.by_loss(cell=("class_1", "class_0"))
    assert planted.path("train/class_1/wrong_0.png") in set(cell["path"])
    assert set(cell["label"]) == {"class_1"} and set(cell["predicted"]) == {"class_0"}
    cells = report.cells()
    assert ((cells["true"] == "class_1") & (cells["predicted"] == "class_0")).any()
    assert (cells["true"] != cells["predicted"]).all()
    with pytest.raises(DataError, match="Unknown class 'dogs'"):
        report.by_loss(cls="dogs")


def test_planted_duplicates_are_found_across_classes_and_across_the_split(trained) -> None:
    planted, s = trained
    report = cleaning.review(s)
    pairs = {frozenset(_rel([a, b], planted.root)): row for a, b, row in
             zip(report.duplicates["path_a"], report.duplicates["path_b"], report.duplicates.itertuples())}
    for a, b in planted.duplicates:
        assert frozenset((a, b)) in pairs, f"{a} and {b} not found"
    across_classes = pairs[frozenset(planted.duplicates[0])]
    assert {across_classes.label_a, across_classes.label_b} == {"class_1", "class_2"}
    assert not across_classes.same_label and not across_classes.crosses_split
    across_split = pairs[frozenset(planted.duplicates[1])]
    assert across_split.crosses_split and across_split.same_label
    assert {across_split.split_a, across_split.split_b} == {"train", "val"}
    assert across_split.similarity > 0.99
    # Different drawings are not near-duplicates at the default threshold.
    assert len(report.duplicates) == len(planted.duplicates)


def test_neighbours_suggest_the_class_a_wrongly_labelled_image_shows(trained) -> None:
    planted, s = trained
    report = cleaning.review(s)
    rows = report.disagreements.set_index("path")
    copy = planted.path("train/class_2/copy_of_class_1.png")
    assert copy in rows.index
    assert rows.loc[copy, "suggested"] == "class_1" and rows.loc[copy, "agreement"] > 0.5
    suggested = {p: rows.loc[p, "suggested"] for p in map(planted.path, planted.mislabelled) if p in rows.index}
    assert len(suggested) >= 2
    assert all(cls == planted.mislabelled[Path(p).relative_to(planted.root).as_posix()]
               for p, cls in suggested.items())


def test_the_features_the_last_fit_cached_are_used_without_a_pass(trained, monkeypatch) -> None:
    _, s = trained
    monkeypatch.setattr(cleaning, "one_pass", lambda *a, **k: pytest.fail("ran a pass over the images"))
    report = cleaning.review(s)
    assert "cached by the last fit" in report.features


def test_without_frozen_layers_training_images_get_the_models_own_loss(tmp_path: Path) -> None:
    planted = planted_folder(tmp_path / "images", per_class=6)
    s = Session(device="cpu", image_size=32)
    s.load_model("resnet18", pretrained=False)
    s.load_data(planted.root, val_fraction=0.25, seed=0)
    s.replace_head()  # nothing frozen, not trained
    report = cleaning.review(s)
    assert report.scored_by == "model" and (report.scores["scored_by"] == "model").all()
    assert len(report.scores) == len(s.data.train) + len(s.data.val)
    assert "model's own loss" in report.summary() and "has not been trained" in report.summary()
    assert "one pass of the model" in report.features


@pytest.mark.parametrize("option, value, words", [
    ("folds", 1, "folds=1 must be a whole number from 2 to 20"),
    ("folds", 2.5, "folds=2.5"),
    ("duplicate_threshold", 0, "duplicate_threshold=0 must be a number above 0 and at most 1"),
    ("duplicate_threshold", 1.5, "duplicate_threshold=1.5"),
    ("duplicate_threshold", float("nan"), "duplicate_threshold=nan"),
    ("neighbours", 0, "neighbours=0 must be a whole number from 1 to 100"),
])
def test_bad_options_are_refused_naming_them(trained, option: str, value, words: str) -> None:
    _, s = trained
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        cleaning.review(s, **{option: value})


# ---------------------------------------------------------------------------- the _removed folder
def test_the_removed_folder_is_not_a_class(tmp_path: Path) -> None:
    planted = planted_folder(tmp_path / "images", per_class=4)
    (planted.root / "_removed" / "class_0").mkdir(parents=True)
    (planted.root / "class_0" / "img_0.png").rename(planted.root / "_removed" / "class_0" / "img_0.png")
    s = Session(device="cpu")
    report = s.load_data(planted.root)
    assert report.classes == CLASSES
    assert (str(planted.root / "_removed"), "hidden folder") in set(report.skipped.itertuples(index=False))
    assert {Path(x.path).relative_to(planted.root).parts[0] for x in (*s.data.train, *s.data.val)} == set(CLASSES)
    with pytest.raises(DataError, match="not allowed"):
        check_class_name("_removed")


# ---------------------------------------------------------------------------- apply and undo
def _data_only(root: Path) -> Session:
    s = Session(device="cpu")
    s.load_data(root, val_fraction=0.25, seed=0)
    return s


def _samples(s: Session) -> tuple[list, list]:
    return [tuple(x) for x in s.data.train], [tuple(x) for x in s.data.val]


@pytest.fixture
def folder(tmp_path: Path):
    """A flat folder with planted problems, a hidden file beside the classes and one inside a class."""
    planted = planted_folder(tmp_path / "images", per_class=6)
    (planted.root / ".notes.txt").write_text("mine")
    (planted.root / "class_0" / ".DS_Store").write_bytes(b"\x00\x01")
    return planted


def test_apply_moves_exactly_the_chosen_files_and_undo_restores_the_folder_byte_for_byte(folder) -> None:
    root = folder.root
    s = _data_only(root)
    before, files_before, samples_before = tree(root), contents(root), _samples(s)
    plan = (ChangePlan()
            .move(folder.path("class_1/wrong_0.png"), "class_0")
            .move(folder.path("class_1/img_3.png"), "class_0")  # class_0 has an img_3.png already
            .remove(folder.path("class_0/wrong_2.png"))
            .keep(folder.path("class_2/img_1.png")))
    expected = {"class_1/wrong_0.png": "class_0/wrong_0.png", "class_1/img_3.png": "class_0/img_3_1.png",
                "class_0/wrong_2.png": "_removed/class_0/wrong_2.png"}
    listed = preview_plan(s, plan)
    assert dict(zip(listed["from"], listed["to"])) == expected
    assert list(listed["action"]) == ["move", "move", "remove"]
    assert tree(root) == before  # listing changed nothing

    s.last_eval = "an evaluation that names the old places"
    result = apply_plan(s, plan)
    assert s.last_eval is None
    after = tree(root)
    assert sorted(result.moved) == sorted((a, b) for a, b in expected.items() if not b.startswith("_removed"))
    assert result.removed == [("class_0/wrong_2.png", "_removed/class_0/wrong_2.png")]
    for old, new in expected.items():
        assert old not in after and after[new] == before[old]
    made = {"_removed": "<dir>", "_removed/class_0": "<dir>"}
    assert {k: v for k, v in after.items() if k not in expected.values()} == {
        **{k: v for k, v in before.items() if k not in expected}, **made}
    assert contents(root) == files_before  # nothing deleted: every content is still there, as often
    # The session's data: each image keeps its split, moved ones their new class, removed ones gone.
    moved = {folder.path("class_1/wrong_0.png"): folder.path("class_0/wrong_0.png"),
             folder.path("class_1/img_3.png"): folder.path("class_0/img_3_1.png")}
    for split_before, split_after in zip(samples_before, _samples(s)):
        want = sorted(((moved.get(p, p), 0 if p in moved else label) for p, label in split_before
                       if p != folder.path("class_0/wrong_2.png")), key=lambda x: (x[1], x[0]))
        assert split_after == want
    assert s.message == result.message
    assert result.message.startswith("Moved 2, removed 1; 'class_0' 7 → 8 images, 'class_1' 7 → 5 images")
    assert s.data.report.counts.loc["class_0", "total"] == 8
    reloaded = _data_only(root)  # a new scan sees the same: _removed is no class
    assert reloaded.data.classes == CLASSES
    assert sorted(x.path for x in (*reloaded.data.train, *reloaded.data.val)) == sorted(
        x.path for x in (*s.data.train, *s.data.val))

    result = undo_last(s)
    assert tree(root) == before
    assert contents(root) == files_before
    assert _samples(s) == samples_before
    assert result.undone and result.message.startswith("Undid the last changes: moved 2 back and put back 1")
    assert sorted(result.frame()["to"]) == sorted(expected)
    with pytest.raises(DataError, match="Nothing to undo"):
        undo_last(s)


def test_two_applies_are_undone_last_first(folder) -> None:
    root = folder.root
    s = _data_only(root)
    original = tree(root)
    apply_plan(s, ChangePlan().remove(folder.path("class_0/wrong_2.png")))
    first = tree(root)
    apply_plan(s, ChangePlan().remove(folder.path("class_1/wrong_0.png")).move(folder.path("class_2/img_0.png"),
                                                                                "class_1"))
    assert first != tree(root)
    undo_last(s)
    assert tree(root) == first  # _removed/ stays: the first apply made it
    undo_last(s)
    assert tree(root) == original


# ---------------------------------------------------------------------------- hostile plans
@pytest.fixture
def with_victim(folder):
    """The folder, a victim file and folder beside it, and a session on the folder."""
    victim = folder.root.parent / "victim"
    victim.mkdir()
    (victim / "precious.png").write_bytes((folder.root / "class_0" / "img_0.png").read_bytes())
    return folder, victim, _data_only(folder.root)


def assert_unchanged(planted, victim: Path, s: Session, plan: ChangePlan, words: str) -> None:
    before, victim_before, samples = tree(planted.root), tree(victim), _samples(s)
    for call in (preview_plan, apply_plan):
        with pytest.raises(DataError, match=words):
            call(s, plan)
    assert tree(planted.root) == before and tree(victim) == victim_before and _samples(s) == samples


@pytest.mark.parametrize("path", ["VICTIM/precious.png", "ROOT/../victim/precious.png", "/etc/passwd",
                                  "ROOT/../images-other/x.png"])
def test_a_plan_naming_a_path_outside_the_data_folder_is_refused(with_victim, path: str) -> None:
    planted, victim, s = with_victim
    given = path.replace("VICTIM", str(victim)).replace("ROOT", str(planted.root))
    plan = ChangePlan().move(planted.path("class_1/wrong_0.png"), "class_0").remove(given)
    assert_unchanged(planted, victim, s, plan, "outside the data folder")


@pytest.mark.parametrize("to_class", ["../x", "../victim", "/tmp", "class_0/../../victim", "..", ".hidden",
                                      "dogs", "class_0/sub", ""])
def test_a_move_to_a_class_that_is_not_one_of_the_data_is_refused(with_victim, to_class: str) -> None:
    planted, victim, s = with_victim
    plan = ChangePlan().remove(planted.path("class_0/wrong_2.png")).move(planted.path("class_1/wrong_0.png"), to_class)
    assert_unchanged(planted, victim, s, plan, "not allowed|no such class|class name")


def test_files_that_are_not_images_of_the_data_are_refused(with_victim) -> None:
    planted, victim, s = with_victim
    for path, words in [(planted.path(".notes.txt"), "not an image of the loaded data"),
                        (planted.path("class_0/.DS_Store"), "not an image of the loaded data"),
                        (planted.path("class_0/missing.png"), "not an image of the loaded data")]:
        assert_unchanged(planted, victim, s, ChangePlan().remove(path), words)
    twice = ChangePlan().remove(planted.path("class_0/img_1.png")).move(
        os.path.relpath(planted.path("class_0/img_1.png")), "class_1")
    assert_unchanged(planted, victim, s, twice, "named twice")
    with pytest.raises(DataError, match="already in class 'class_0'"):
        apply_plan(s, ChangePlan().move(planted.path("class_0/img_1.png"), "class_0"))
    with pytest.raises(DataError, match="changes nothing"):
        apply_plan(s, ChangePlan().keep(planted.path("class_0/img_1.png")))


def test_links_leading_out_of_the_data_folder_are_refused(with_victim) -> None:
    planted, victim, _ = with_victim
    (victim / "more").mkdir()
    (victim / "more" / "a.png").write_bytes((planted.root / "class_0" / "img_0.png").read_bytes())
    (planted.root / "linked").symlink_to(victim / "more", target_is_directory=True)  # a class the scan follows
    (planted.root / "class_0" / "evil.png").symlink_to(victim / "precious.png")  # a picture that is a link
    s = _data_only(planted.root)
    paths = {x.path for x in (*s.data.train, *s.data.val)}
    assert planted.path("linked/a.png") in paths and planted.path("class_0/evil.png") in paths
    assert_unchanged(planted, victim, s, ChangePlan().remove(planted.path("linked/a.png")), "link to another place")
    assert_unchanged(planted, victim, s, ChangePlan().move(planted.path("class_0/img_0.png"), "linked"),
               "link to another place")
    assert_unchanged(planted, victim, s, ChangePlan().remove(planted.path("class_0/evil.png")), "is a link")
    (planted.root / "_removed").symlink_to(victim, target_is_directory=True)
    assert_unchanged(planted, victim, s, ChangePlan().remove(planted.path("class_0/img_0.png")), "link to another place")


def test_data_that_did_not_come_from_a_folder_is_not_changed(tmp_path: Path) -> None:
    s = Session(device="cpu")
    s.load_data("demo", max_per_class=4)
    with pytest.raises(DataError, match="changes files only in a folder"):
        apply_plan(s, ChangePlan().remove(s.data.train[0].path))


def test_apply_and_undo_wait_for_training(folder) -> None:
    s = _data_only(folder.root)
    before = tree(folder.root)
    s.status = "training"
    try:
        with pytest.raises(BusyError, match="while training runs"):
            apply_plan(s, ChangePlan().remove(folder.path("class_0/wrong_2.png")))
        with pytest.raises(BusyError, match="while training runs"):
            undo_last(s)
    finally:
        s.status = "idle"
    assert tree(folder.root) == before


def test_undo_refuses_to_overwrite_and_names_the_file(folder) -> None:
    root = folder.root
    s = _data_only(root)
    apply_plan(s, ChangePlan().move(folder.path("class_1/wrong_0.png"), "class_0")
               .remove(folder.path("class_0/wrong_2.png")))
    # The moved file changed since.
    changed = root / "class_0" / "wrong_0.png"
    changed.write_bytes(changed.read_bytes() + b"edited")
    now = tree(root)
    with pytest.raises(DataError, match="class_0/wrong_0.png changed since the changes were applied"):
        undo_last(s)
    assert tree(root) == now
    # Put back as it was: then a new file at the old place of the removed one.
    changed.write_bytes(changed.read_bytes()[:-len(b"edited")])
    (root / "class_0" / "wrong_2.png").write_bytes(b"a new picture")
    now = tree(root)
    with pytest.raises(DataError, match="class_0/wrong_2.png exists again"):
        undo_last(s)
    assert tree(root) == now and (root / "class_0" / "wrong_2.png").read_bytes() == b"a new picture"
    # A moved file that vanished.
    (root / "class_0" / "wrong_2.png").unlink()
    (root / "_removed" / "class_0" / "wrong_2.png").rename(root / "elsewhere.png")
    with pytest.raises(DataError, match="_removed/class_0/wrong_2.png is no longer there"):
        undo_last(s)
    (root / "elsewhere.png").rename(root / "_removed" / "class_0" / "wrong_2.png")
    undo_last(s)
    assert not (root / "_removed").exists() and (root / "class_1" / "wrong_0.png").is_file()
