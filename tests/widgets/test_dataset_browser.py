"""DatasetBrowser: choosing sources loads data; the report, split, augmentation and preview follow the session."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from tests.conftest import make_image_folder
from tlwidgets.core.session import Session
from tlwidgets.widgets.dataset_browser import DatasetBrowser


def _choose(chooser, parent: Path, name: str) -> None:
    """Do what a user does in an ipyfilechooser: open it, click an entry, press Select.

    Clicking a folder entry opens that folder; clicking a file entry selects it. The
    second Select press applies the selection and runs the registered callback.
    """
    chooser.reset(path=str(parent))
    chooser._select.click()  # opens the dialog at `parent`
    chooser._dircontent.value = chooser._map_name_to_disp[name]
    assert not chooser._select.disabled
    chooser._select.click()  # applies the selection -> callback


def _count(html_text: str, css_class: str) -> int:
    return len(re.findall(rf"class='{css_class}[ ']", html_text))


def _row(html_text: str, name: str) -> str:
    match = re.search(rf"<tr class='tlw-sample-row' data-class='{re.escape(name)}'>(.*?)</tr>", html_text)
    assert match, f"no sample row for {name}"
    return match.group(1)


@pytest.fixture
def session() -> Session:
    return Session(device="cpu", image_size=64)


@pytest.fixture
def folder_with_junk(image_folder: Path) -> Path:
    (image_folder / "class_0" / "notes.txt").write_text("not an image")
    (image_folder / "class_1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    return image_folder


def test_choosing_a_folder_loads_and_shows_its_report(session: Session, folder_with_junk: Path) -> None:
    panel = DatasetBrowser(session, path=folder_with_junk.parent)
    assert "tlw-dataset-browser" in panel._dom_classes
    assert panel.preview_button.disabled  # nothing to preview yet

    _choose(panel.folder_chooser, folder_with_junk.parent, folder_with_junk.name)

    assert panel.last_error == ""
    data = session.data
    assert data is not None
    assert data.classes == ["class_0", "class_1", "class_2"]
    counts = data.report.counts
    assert counts["total"].tolist() == [8, 8, 8]
    assert Path(panel.source).resolve() == folder_with_junk.resolve()

    train_bar, val_bar = panel.counts_fig.data
    assert (train_bar.name, val_bar.name) == ("train", "val")
    assert list(train_bar.x) == data.classes and list(val_bar.x) == data.classes
    assert list(train_bar.y) == counts.loc[data.classes, "train"].tolist()
    assert list(val_bar.y) == counts.loc[data.classes, "val"].tolist()
    assert sum(train_bar.y) == len(data.train) and sum(val_bar.y) == len(data.val)

    assert set(panel.sample_paths) == set(data.classes)
    for name in data.classes:
        assert len(panel.sample_paths[name]) == 4
        assert all(Path(p).parent.name == name for p in panel.sample_paths[name])
        row = _row(panel.samples.value, name)
        assert _count(row, "tlw-thumb") == 4
        assert "data:image/png;base64," in row

    assert panel.skipped.get_title(0) == f"Skipped files ({len(data.report.skipped)})"
    skipped_html = panel.skipped_table.value
    assert "notes.txt" in skipped_html and "not an image" in skipped_html
    assert "broken.jpg" in skipped_html and "cannot be decoded" in skipped_html
    assert "Image sizes" in panel.sizes.value and "32" in panel.sizes.value
    assert data.report.summary()[:20] in panel.summary.value.replace("&#x27;", "'")
    assert not panel.preview_button.disabled


def test_choosing_an_archive_loads_it(session: Session, image_folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "pictures.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(image_folder.rglob("*.jpg")):
            zf.write(file, file.relative_to(image_folder.parent))
    panel = DatasetBrowser(session, path=tmp_path)
    _choose(panel.archive_chooser, tmp_path, "pictures.zip")
    assert panel.last_error == ""
    assert session.data.classes == ["class_0", "class_1", "class_2"]
    assert list(panel.counts_fig.data[0].x) == ["class_0", "class_1", "class_2"]


def test_archive_chooser_without_a_file_asks_for_one(session: Session, tmp_path: Path) -> None:
    panel = DatasetBrowser(session, path=tmp_path)
    panel.archive_chooser.reset(path=str(tmp_path))
    panel.archive_chooser._select.click()
    panel.archive_chooser._select.click()  # no file picked: only the folder
    assert "archive file" in panel.last_error
    assert session.data is None


def test_demo_button_loads_ten_digit_classes(session: Session) -> None:
    panel = DatasetBrowser(session)
    panel.source_choice.value = "Demo"
    assert panel.source_stack.selected_index == 3
    panel.demo_button.click()
    assert panel.last_error == ""
    assert len(session.data.classes) == 10
    assert len(panel.counts_fig.data[0].x) == 10
    assert all(len(paths) == 4 for paths in panel.sample_paths.values())
    assert panel.source == "demo"


def test_a_folder_with_one_class_shows_an_error_and_keeps_the_data(
    session: Session, image_folder: Path, tmp_path: Path
) -> None:
    panel = DatasetBrowser(session, path=tmp_path)
    panel.load(image_folder)
    before, version = session.data, session.data_version
    bars = list(panel.counts_fig.data[0].y)

    single = make_image_folder(tmp_path / "single", classes=1, per_class=4)
    _choose(panel.folder_chooser, tmp_path, "single")

    assert panel.last_error
    assert "class" in panel.last_error.lower() and "single" in panel.last_error
    assert "tlw-error" in panel.error_area._dom_classes and panel.error_area.layout.display is None
    assert session.data is before and session.data_version == version
    assert list(panel.counts_fig.data[0].y) == bars
    assert Path(panel.source).resolve() == image_folder.resolve()  # a split change reloads the good data

    panel.load(image_folder)
    assert panel.last_error == "" and panel.error_area.layout.display == "none"
    assert single.is_dir()


def test_changing_the_split_reloads_with_new_counts(session: Session, tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "ten", classes=2, per_class=10, size=16)
    panel = DatasetBrowser(session, path=tmp_path)
    panel.load(folder)
    assert session.data.report.counts["val"].tolist() == [2, 2]
    version = session.data_version

    panel.val_fraction.value = 0.3
    assert session.data_version == version + 1
    assert session.data.report.counts["val"].tolist() == [3, 3]
    assert list(panel.counts_fig.data[1].y) == [3, 3]
    assert list(panel.counts_fig.data[0].y) == [7, 7]

    val_before = sorted(s.path for s in session.data.val)
    panel.seed.value = 5
    assert session.data_version == version + 2
    assert session.data.report.counts["val"].tolist() == [3, 3]
    assert sorted(s.path for s in session.data.val) != val_before


def test_augmentation_controls_set_the_session_and_preview_shows_views(
    session: Session, image_folder: Path
) -> None:
    panel = DatasetBrowser(session, preview_count=5)
    panel.load(image_folder)
    panel.flip.value = True
    panel.rotation.value = 20.0
    panel.random_resized_crop.value = True
    panel.color_jitter.value = 0.3
    aug = session.augment
    assert (aug.flip, aug.rotation, aug.random_resized_crop, aug.color_jitter) == (True, 20.0, True, 0.3)

    panel.preview_button.click()
    assert panel.last_error == ""
    assert len(panel.preview_images) == 5
    assert all(img.size == (64, 64) and img.mode == "RGB" for img in panel.preview_images)
    assert _count(panel.preview.value, "tlw-aug-view") == 5
    assert _count(panel.preview.value, "tlw-aug-original") == 1

    # A change in code moves the controls and redraws the shown preview.
    shown = panel.preview.value
    session.set_augment(flip=False, rotation=0.0)
    assert panel.flip.value is False and panel.rotation.value == 0.0
    assert session.augment.random_resized_crop is True  # the control sync did not overwrite the rest
    assert panel.preview.value != shown


def test_preview_undoes_normalisation(session: Session, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    folder = tmp_path / "flat"
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), colour).save(folder / name / f"{i}.png")
    panel = DatasetBrowser(session, preview_count=2)
    panel.load(folder)
    views = panel.show_preview()
    original = np.asarray(Image.open(session.data.train[0].path).convert("RGB"), dtype=float)
    for view in views:
        assert np.abs(np.asarray(view, dtype=float).mean(axis=(0, 1)) - original.mean(axis=(0, 1))).max() < 3


def test_preview_without_data_is_an_error(session: Session) -> None:
    panel = DatasetBrowser(session)
    assert panel.show_preview() is None
    assert "Load data first" in panel.last_error


def test_loading_in_code_updates_the_panel(session: Session, image_folder: Path, tmp_path: Path) -> None:
    panel = DatasetBrowser(session)
    assert list(panel.counts_fig.data[0].x) == []
    assert "No data loaded yet" in panel.summary.value

    session.load_data(image_folder, val_fraction=0.25, seed=0)
    assert list(panel.counts_fig.data[0].x) == ["class_0", "class_1", "class_2"]
    assert list(panel.counts_fig.data[1].y) == [2, 2, 2]
    assert set(panel.sample_paths) == {"class_0", "class_1", "class_2"}

    other = make_image_folder(tmp_path / "five", classes=5, per_class=5, size=16)
    session.load_data(other)
    assert len(panel.counts_fig.data[0].x) == 5
    assert len(re.findall("tlw-sample-row", panel.samples.value)) == 5

    # The split control reloads the source loaded in code.
    panel.val_fraction.value = 0.0
    assert panel.last_error == ""
    assert session.data.classes == [f"class_{i}" for i in range(5)]
    assert session.data.report.counts["val"].sum() == 0


def test_train_val_folders_keep_their_split(session: Session, tmp_path: Path) -> None:
    root = tmp_path / "split"
    make_image_folder(root / "train", classes=2, per_class=6, size=16)
    make_image_folder(root / "val", classes=2, per_class=2, size=16, seed=1)
    panel = DatasetBrowser(session)
    panel.load(root)
    assert session.data.report.counts["val"].tolist() == [2, 2]
    assert panel.val_fraction.disabled and "own train/val split" in panel.hint.value
    version = session.data_version
    panel.val_fraction.value = 0.4  # set in code: no pointless reload
    assert session.data_version == version

    panel.load(make_image_folder(tmp_path / "plain", classes=2, per_class=5, size=16))
    assert not panel.val_fraction.disabled and panel.hint.value == ""


def test_controls_are_disabled_while_training(session: Session, image_folder: Path) -> None:
    panel = DatasetBrowser(session)
    panel.load(image_folder)
    session.status = "training"  # what fit() sets while it runs
    assert panel.load_button.disabled and panel.demo_button.disabled and panel.flip.disabled
    assert "Training runs" in panel.hint.value
    session.status = "idle"
    assert not panel.load_button.disabled and not panel.flip.disabled


def test_load_button_uses_the_selected_source(session: Session, image_folder: Path, tmp_path: Path) -> None:
    panel = DatasetBrowser(session, path=tmp_path)
    panel.load_button.click()
    assert "Choose a folder first" in panel.last_error and session.data is None

    _choose(panel.folder_chooser, image_folder.parent, image_folder.name)
    version = session.data_version
    (image_folder / "class_0" / "img_0.jpg").unlink()
    panel.load_button.click()  # reload after files changed on disk
    assert session.data_version == version + 1
    assert session.data.report.counts.loc["class_0", "total"] == 7


def test_torchvision_source_loads_offline_fakedata(session: Session) -> None:
    panel = DatasetBrowser(session)
    if "FakeData" not in panel.tv_dataset.options:
        pytest.skip("no offline torchvision dataset")
    panel.source_choice.value = "torchvision"
    panel.tv_dataset.value = "FakeData"
    panel.load_button.click()
    assert panel.last_error == ""
    assert len(session.data.classes) == 4
    assert panel.source == "torchvision:FakeData"
    assert panel.progress.layout.display == "none"
    assert panel.val_fraction.disabled  # FakeData comes with its own validation split


def test_close_detaches_from_the_session(session: Session, image_folder: Path) -> None:
    panel = DatasetBrowser(session)
    panel.close()
    session.load_data(image_folder)
    assert list(panel.counts_fig.data[0].x) == []


def test_the_panel_warns_about_imbalanced_classes_and_not_about_balanced_ones(tmp_path) -> None:
    from tests.conftest import make_image_folder
    from tlwidgets import DatasetBrowser, Session

    even = make_image_folder(tmp_path / "even", classes=3, per_class=12)
    uneven = make_image_folder(tmp_path / "uneven", classes=3, per_class=12)
    for path in sorted((uneven / "class_1").iterdir())[2:]:
        path.unlink()
    session = Session(device="cpu")
    panel = DatasetBrowser(session)
    session.load_data(even, val_fraction=0.25)
    assert panel.imbalance.value == ""
    session.load_data(uneven, val_fraction=0.25)
    assert "Classes are imbalanced" in panel.imbalance.value and "class_1" in panel.imbalance.value
    session.load_data(even, val_fraction=0.25)
    assert panel.imbalance.value == ""
