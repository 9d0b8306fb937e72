"""DataCollector and Webcam without a browser: set widget values, click, send front-end messages."""

from __future__ import annotations

import io
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import traitlets
from PIL import Image

from tlwidgets.core.session import Session
from tlwidgets.widgets.data_collector import DataCollector
from tlwidgets.widgets.dataset_browser import DatasetBrowser
from tlwidgets.widgets.webcam import Frame, Webcam

RED, GREEN, BLUE = (210, 30, 30), (30, 190, 30), (30, 40, 210)


def _picture(colour: tuple[int, int, int], fmt: str = "PNG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour) + rng.normal(0, 12, (36, 36, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _upload_entry(name: str, content: bytes, mime: str = "image/png") -> dict:
    """One entry of ``FileUpload.value`` as ipywidgets 8 deserialises it from the front end."""
    return {"name": name, "type": mime, "size": len(content), "content": memoryview(content),
            "last_modified": datetime.now(timezone.utc)}


def _upload(dc: DataCollector, files: list[tuple[str, bytes]]) -> None:
    dc.upload.value = tuple(_upload_entry(n, c) for n, c in files)


def _on_disk(folder: Path) -> dict[str, list[str]]:
    return {d.name: sorted(f.name for f in d.iterdir()) for d in sorted(folder.iterdir()) if d.is_dir()}


def _tile_of(dc: DataCollector, name: str):
    return next(t for t in dc.tiles.values() if Path(t.path).name == name)


@pytest.fixture
def collector(tmp_path: Path) -> DataCollector:
    dc = DataCollector(Session(device="cpu", image_size=32), folder=tmp_path / "mine")
    yield dc
    dc.close()


def _add(dc: DataCollector, name: str) -> None:
    dc.class_name.value = name
    dc.add_class_button.click()
    assert dc.last_error == ""


def test_folder_is_created_and_controls_wait_for_it(tmp_path: Path) -> None:
    dc = DataCollector(Session(device="cpu"), camera=False)
    assert "tlw-data-collector" in dc._dom_classes and "tlw-panel" in dc._dom_classes
    assert dc.folder is None and dc.add_class_button.disabled and dc.upload.disabled
    dc.create_class("cats")  # no folder yet: a message, no exception
    assert "Open a folder first" in dc.last_error
    dc.folder_text.value = str(tmp_path / "new" / "images")
    dc.folder_button.click()
    assert (tmp_path / "new" / "images").is_dir() and dc.folder == (tmp_path / "new" / "images").resolve()
    assert not dc.add_class_button.disabled and dc.upload.disabled  # no class to upload into yet
    (tmp_path / "file.txt").write_text("x")
    dc.open_folder(tmp_path / "file.txt")
    assert "is a file, not a folder" in dc.last_error and dc.folder == (tmp_path / "new" / "images").resolve()
    dc.close()


def test_existing_class_folders_are_shown(tmp_path: Path) -> None:
    root = tmp_path / "have"
    (root / "dog").mkdir(parents=True)
    (root / "dog" / "a.png").write_bytes(_picture(RED))
    (root / "dog" / "notes.txt").write_text("not a picture")
    (root / ".hidden").mkdir()
    (root / "stray.png").write_bytes(_picture(RED))
    dc = DataCollector(Session(device="cpu"), folder=root, camera=False)
    assert dc.classes == ["dog"] and dc.shown_files() == {"dog": ["a.png"]}
    assert "1 picture outside class folders ignored" in dc.status.value
    dc.close()


def test_upload_delete_and_disk_matches_panel(collector: DataCollector) -> None:
    dc = collector
    _add(dc, "red")
    _add(dc, "blue")
    assert dc.classes == ["blue", "red"] and dc.class_choice.value == "blue"  # the new class is selected
    dc.class_choice.value = "red"
    _upload(dc, [(f"r{i}.png", _picture(RED, seed=i)) for i in range(3)])
    assert dc.upload.value == ()  # cleared, so the same file can be chosen again
    dc.class_choice.value = "blue"
    _upload(dc, [("b0.jpg", _picture(BLUE, "JPEG")), ("b1.png", _picture(BLUE, seed=1))])
    assert dc.last_error == ""
    assert _on_disk(dc.folder) == {"blue": ["b0.jpg", "b1.png"], "red": ["r0.png", "r1.png", "r2.png"]}
    assert dc.shown_files() == _on_disk(dc.folder)

    _tile_of(dc, "r1.png").children[1].click()  # the tile's delete button
    assert _on_disk(dc.folder) == {"blue": ["b0.jpg", "b1.png"], "red": ["r0.png", "r2.png"]}
    assert dc.shown_files() == _on_disk(dc.folder)
    assert "2 pictures" in dc.sections["red"][0].value
    # Every thumbnail holds a real PNG of the file.
    tile = _tile_of(dc, "b0.jpg")
    assert Image.open(io.BytesIO(tile.children[0].value)).size[0] <= 64


def test_existing_files_are_never_overwritten(collector: DataCollector) -> None:
    dc = collector
    _add(dc, "green")
    original = _picture(GREEN, seed=99)
    (dc.folder / "green" / "leaf.png").write_bytes(original)
    (dc.folder / "green" / "leaf_1.png").write_bytes(original)
    dc.refresh()
    _upload(dc, [("leaf.png", _picture(GREEN, seed=1))])
    _upload(dc, [("leaf.png", _picture(GREEN, seed=2))])
    files = _on_disk(dc.folder)["green"]
    assert files == ["leaf.png", "leaf_1.png", "leaf_2.png", "leaf_3.png"]
    assert (dc.folder / "green" / "leaf.png").read_bytes() == original
    assert (dc.folder / "green" / "leaf_1.png").read_bytes() == original
    assert dc.shown_files()["green"] == files


def test_bad_uploads_are_refused_and_names_cleaned(collector: DataCollector) -> None:
    dc = collector
    _add(dc, "red")
    _upload(dc, [("notes.txt", b"hello"), ("../../.evil name!.png", _picture(RED)), ("photo", _picture(RED, "JPEG"))])
    assert "notes.txt is not a picture" in dc.last_error
    assert _on_disk(dc.folder) == {"red": ["evil name.png", "photo.jpg"]}  # no path escape, no hidden file


def test_rename_and_remove_classes(collector: DataCollector) -> None:
    dc = collector
    for name in ("cat", "dog", "empty"):
        _add(dc, name)
    dc.add_images([("c.png", _picture(RED))], class_name="cat")
    dc.add_images([("d.png", _picture(BLUE))], class_name="dog")

    dc.class_choice.value = "cat"
    dc.rename_text.value = "dog"
    dc.rename_button.click()
    assert "there is already a class 'dog'" in dc.last_error
    dc.rename_text.value = "DOG"  # same name on case-insensitive disks: refused as well
    dc.rename_button.click()
    assert "already a class 'dog'" in dc.last_error
    assert _on_disk(dc.folder) == {"cat": ["c.png"], "dog": ["d.png"], "empty": []}

    dc.rename_text.value = "kitten"
    dc.rename_button.click()
    assert dc.last_error == "" and dc.class_choice.value == "kitten"
    assert _on_disk(dc.folder) == {"dog": ["d.png"], "empty": [], "kitten": ["c.png"]}
    assert dc.shown_files() == _on_disk(dc.folder)
    dc.rename_class("kitten", "Kitten")  # only the case changes
    assert dc.last_error == "" and "Kitten" in _on_disk(dc.folder)

    dc.class_choice.value = "dog"
    dc.remove_button.click()  # holds a picture: needs the box ticked
    assert "tick 'also delete its pictures'" in dc.last_error and (dc.folder / "dog" / "d.png").exists()
    dc.confirm_remove.value = True
    dc.remove_button.click()
    assert dc.last_error == "" and not (dc.folder / "dog").exists() and dc.confirm_remove.value is False
    dc.class_choice.value = "empty"
    dc.remove_button.click()  # empty: no confirmation needed
    assert dc.last_error == "" and _on_disk(dc.folder) == {"Kitten": ["c.png"]}
    assert dc.shown_files() == _on_disk(dc.folder) and list(dc.class_choice.options) == ["Kitten"]


@pytest.mark.parametrize("bad", ["", "  ", "a/b", "..", ".secret", "x" * 200])
def test_bad_class_names_are_refused(collector: DataCollector, bad: str) -> None:
    collector.create_class(bad)
    assert collector.last_error and collector.classes == []


def test_use_this_data_loads_the_session_and_the_browser_shows_it(collector: DataCollector) -> None:
    dc = collector
    browser = DatasetBrowser(dc.session)
    _add(dc, "red")
    dc.add_images([(f"r{i}.png", _picture(RED, seed=i)) for i in range(5)])
    dc.use_button.click()
    assert "at least 2 classes with pictures" in dc.last_error and dc.session.data is None
    _add(dc, "blue")
    dc.add_images([(f"b{i}.png", _picture(BLUE, seed=i)) for i in range(5)])
    dc.use_button.click()
    assert dc.last_error == ""
    assert dc.session.data.classes == ["blue", "red"]
    assert len(dc.session.data.train) + len(dc.session.data.val) == 10
    assert set(browser.sample_paths) == {"blue", "red"}
    assert all(Path(p).parent.parent == dc.folder for paths in browser.sample_paths.values() for p in paths)
    browser.close()


def test_webcam_capture_message_saves_into_the_selected_class(collector: DataCollector) -> None:
    dc = collector
    _add(dc, "me")
    jpeg = _picture(GREEN, "JPEG")
    # The exact message the front end sends: content plus one binary buffer.
    dc.webcam._handle_custom_msg({"type": "frame", "kind": "capture", "mime": "image/jpeg", "width": 36,
                                  "height": 36}, [memoryview(jpeg)])  # fmt: skip
    files = _on_disk(dc.folder)["me"]
    assert len(files) == 1 and files[0].startswith("webcam_") and files[0].endswith(".jpg")
    assert (dc.folder / "me" / files[0]).read_bytes() == jpeg
    dc.webcam._handle_custom_msg({"type": "frame", "kind": "stream", "mime": "image/jpeg"}, [memoryview(jpeg)])
    assert len(_on_disk(dc.folder)["me"]) == 1  # streamed frames are never saved


def test_webcam_widget_traits_and_messages() -> None:
    cam = Webcam()
    assert cam._esm.startswith("//") and "getUserMedia" in cam._esm and ".tlw-webcam" in cam._css
    with pytest.raises(traitlets.TraitError, match="interval_ms=10"):
        cam.interval_ms = 10
    with pytest.raises(traitlets.TraitError, match="quality"):
        cam.quality = 0
    sent: list[dict] = []
    cam.comm.send = lambda data=None, buffers=None, **_k: sent.append(data["content"])  # type: ignore[method-assign]
    cam.capture()
    cam.start()
    cam.stop()
    assert sent == [{"type": "capture"}, {"type": "start"}, {"type": "stop"}]
    captured: list[Frame] = []
    streamed: list[Frame] = []
    cam.on_capture(captured.append)
    cam.on_frame(streamed.append)
    png = _picture(RED)
    cam._handle_custom_msg({"type": "frame", "kind": "stream", "mime": "image/png", "width": 36, "height": 36},
                           [memoryview(png)])  # fmt: skip
    cam._handle_custom_msg({"type": "other"}, [])
    assert not captured and len(streamed) == 1 and streamed[0].extension == ".png"
    assert streamed[0].image().size == (36, 36) and cam.frames_received == 1
    cam.on_frame(streamed.append, remove=True)
    cam.receive(Frame(png, "image/png", kind="stream"))
    assert len(streamed) == 1 and cam.last_frame.kind == "stream"
    cam.close()


def test_live_preview_classifies_the_newest_frame_throttled(collector: DataCollector) -> None:
    dc = collector
    dc.preview_interval = 0.3
    for name, colour in (("blue", BLUE), ("red", RED)):
        _add(dc, name)
        dc.add_images([(f"{name}{i}.png", _picture(colour, seed=i)) for i in range(6)])
    s = dc.session
    dc.live_preview.value = True
    assert "does not predict these classes" in dc.predictions.value  # no model yet
    assert s.readiness(classes=["blue", "red"]) in dc.predictions.value  # the session's words for it
    dc.live_preview.value = False

    dc.use_data()
    s.load_model("mobilenet_v3_small", pretrained=False)
    assert dc.preview_blocker() == s.readiness(require_trainable=False, classes=["blue", "red"])
    assert not dc.model_matches()
    s.replace_head()
    assert dc.model_matches() and dc.preview_blocker() is None
    s.fit(epochs=1, batch_size=4, lr=1e-3)
    calls: list[float] = []
    predict = s.predict
    s.predict = lambda *a, **k: (calls.append(time.monotonic()), predict(*a, **k))[1]  # type: ignore[method-assign]

    dc.live_preview.value = True
    assert dc.webcam.streaming and dc.webcam.interval_ms == 300
    frame = Frame(_picture(RED, "JPEG"), kind="stream")
    start = time.monotonic()
    while time.monotonic() - start < 1.2:  # a camera far faster than the throttle
        dc.webcam.receive(frame)
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while "tlw-live-bars" not in dc.predictions.value and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "tlw-live-bars" in dc.predictions.value
    assert dc.predictions.value.count("tlw-live-row") == 2  # top-3, clipped to the two classes
    assert 1 <= len(calls) <= 6  # ~60 frames arrived, a handful were classified
    assert all(b - a >= 0.25 for a, b in zip(calls, calls[1:]))

    dc.live_preview.value = False
    assert not dc.webcam.streaming
    thread = dc.preview_worker.thread
    thread.join(timeout=5)
    assert not thread.is_alive()

    _add(dc, "green")  # a new class: the model no longer fits
    dc.add_images([("g.png", _picture(GREEN))])
    assert not dc.model_matches()
    assert dc.classify(Image.new("RGB", (8, 8))) is None and "does not predict" in dc.predictions.value


def test_app_shows_the_collector_only_when_asked(tmp_path: Path) -> None:
    from tlwidgets import App

    plain = App(Session(device="cpu"))
    assert not hasattr(plain, "data_collector") and plain.tabs.get_title(0) == "1. Model"
    plain.close()

    s = Session(device="cpu", image_size=32)
    app = App(s, collect=tmp_path / "class-pictures")
    dc = app.data_collector
    assert app.tabs.get_title(0) == "0. Collect" and app.tabs.children[0] is dc and app.panels[0] is dc
    assert dc.folder == (tmp_path / "class-pictures").resolve()
    for name, colour in (("blue", BLUE), ("red", RED)):
        dc.create_class(name)
        dc.add_images([(f"{name}{i}.png", _picture(colour, seed=i)) for i in range(4)])
    dc.use_button.click()
    assert dc.last_error == "" and s.data.classes == ["blue", "red"]
    assert set(app.dataset_browser.sample_paths) == {"blue", "red"}
    assert "2 classes" in app.status_line.value
    app.close()
    assert dc.comm is None  # closed with the App
