"""Holding Capture: the burst messages the webcam's front end sends, handled without a browser.

The front end sends each frame of a held Capture as ``{"type": "frame", "kind": "capture",
"burst": n, ...}`` with the encoded picture as its one buffer, and ``{"type": "burst-end",
"burst": n, "sent": k}`` after the last one; these tests send exactly those messages.
"""

from __future__ import annotations

import hashlib
import html
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import traitlets
from PIL import Image

from tlwidgets.core.session import Session
from tlwidgets.widgets import _burst
from tlwidgets.widgets.data_collector import DataCollector
from tlwidgets.widgets.webcam import BURST_MAX_FRAMES, BURST_RATE, Webcam

STAMP = "20250102-030405"


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _frame_msg(cam: Webcam, data: bytes, burst: object) -> None:
    """The message the front end sends for one frame of a held Capture."""
    cam._handle_custom_msg({"type": "frame", "kind": "capture", "mime": "image/jpeg", "width": 32, "height": 24,
                            "burst": burst}, [memoryview(data)])  # fmt: skip


def _end_msg(cam: Webcam, burst: int, sent: int) -> None:
    cam._handle_custom_msg({"type": "burst-end", "burst": burst, "sent": sent}, [])


def _text(widget: object) -> str:
    """What an HTML widget shows, as text."""
    return html.unescape(re.sub(r"<[^>]+>", "", widget.value))  # type: ignore[attr-defined]


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def _tree(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            out[os.fspath(path.relative_to(folder))] = (
                "dir" if path.is_dir() else hashlib.sha1(path.read_bytes()).hexdigest()
            )
    return out


@pytest.fixture
def collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_burst.time, "strftime", lambda _fmt: STAMP)  # every capture in the same second
    dc = DataCollector(Session(device="cpu"), folder=tmp_path / "mine", thumbnails_per_class=3)
    dc.create_class("me")
    dc.create_class("other")
    dc.class_choice.value = "me"
    sent: list[dict] = []

    def send(data: dict | None = None, buffers: object = None, **_k: object) -> None:
        if data and data.get("method") == "custom":  # messages to the front end, not state updates
            sent.append(data["content"])

    dc.webcam.comm.send = send  # type: ignore[method-assign]
    dc.sent_to_browser = sent  # type: ignore[attr-defined]
    yield dc
    dc.close()


def test_rate_and_cap_are_stated_and_reach_the_front_end() -> None:
    cam = Webcam()
    assert (BURST_RATE, BURST_MAX_FRAMES) == (4.0, 200)
    assert cam.burst_rate == BURST_RATE and cam.burst_max == BURST_MAX_FRAMES
    state = cam.get_state()
    assert state["burst_rate"] == 4.0 and state["burst_max"] == 200  # synced to the browser
    for handler in ("pointerdown", "pointerup", "pointerleave", "burst-end", "stop-burst", 'model.get("burst_max")'):
        assert handler in cam._esm
    for name, bad in (("burst_rate", -1), ("burst_rate", 11), ("burst_max", 0), ("burst_max", 1001)):
        with pytest.raises(traitlets.TraitError, match=name):
            setattr(cam, name, bad)
    cam.close()


def test_held_capture_frames_are_saved_into_the_class_with_a_live_counter(collector: DataCollector) -> None:
    dc = collector
    folder = dc.folder / "me"
    mine = _jpeg(999)
    (folder / f"webcam_{STAMP}.jpg").write_bytes(mine)  # a picture already under the first name
    dc.refresh()
    pictures = [_jpeg(i) for i in range(12)]
    for i, data in enumerate(pictures, start=1):
        _frame_msg(dc.webcam, data, burst=1)
        assert _text(dc.burst_recorder.counter).count(f"{i} frame") == 1  # live: after every frame
        assert len(_files(folder)) == 1 + i and dc.last_error == ""
        if i == 6:
            dc.class_choice.value = "other"  # switching class mid-burst does not split the burst
    _end_msg(dc.webcam, 1, 12)
    assert "12 frames" in _text(dc.burst_recorder.counter)
    assert "Saved 12 frames in 'me'" in _text(dc.status)
    assert _files(dc.folder / "other") == []
    # The collector's names, the earlier picture untouched, every frame kept byte for byte.
    assert _files(folder) == sorted([f"webcam_{STAMP}.jpg"] + [f"webcam_{STAMP}_{i}.jpg" for i in range(1, 13)])
    assert (folder / f"webcam_{STAMP}.jpg").read_bytes() == mine
    assert sorted((folder / f"webcam_{STAMP}_{i}.jpg").read_bytes() for i in range(1, 13)) == sorted(pictures)
    assert "13 pictures" in _text(dc.sections["me"][0]) and len(dc.shown_files()["me"]) == 3
    assert dc.balance.counts == {"me": 13, "other": 0}

    # The next press is a new burst with its own count, into the class selected now.
    for i in range(3):
        _frame_msg(dc.webcam, _jpeg(100 + i), burst=2)
    _end_msg(dc.webcam, 2, 3)
    assert "3 frames" in _text(dc.burst_recorder.counter) and len(_files(dc.folder / "other")) == 3
    # A plain click (a burst of one frame) and a capture asked from Python save one picture each.
    _frame_msg(dc.webcam, _jpeg(200), burst=3)
    _end_msg(dc.webcam, 3, 1)
    dc.webcam._handle_custom_msg({"type": "frame", "kind": "capture", "mime": "image/jpeg"}, [memoryview(_jpeg(201))])
    assert len(_files(dc.folder / "other")) == 5 and "1 frame" in _text(dc.burst_recorder.counter)
    assert dc.sent_to_browser == []  # nothing was stopped


def test_a_burst_stops_at_its_cap_and_the_browser_is_told(collector: DataCollector) -> None:
    dc = collector
    data = _jpeg(0)
    for _ in range(BURST_MAX_FRAMES + 15):  # a stuck button, or a front end that does not stop
        _frame_msg(dc.webcam, data, burst=7)
    assert len(_files(dc.folder / "me")) == BURST_MAX_FRAMES == 200
    assert dc.sent_to_browser == [{"type": "stop-burst"}]  # once
    assert "200 frames" in _text(dc.burst_recorder.counter)
    _end_msg(dc.webcam, 7, 215)
    assert "Saved 200 frames in 'me', the most one burst records." in _text(dc.status)
    _frame_msg(dc.webcam, data, burst=8)  # the next press records again
    assert len(_files(dc.folder / "me")) == 201

    dc.webcam.burst_max = 2  # a smaller cap holds the same way
    for _ in range(5):
        _frame_msg(dc.webcam, data, burst=9)
    assert len(_files(dc.folder / "me")) == 203 and dc.sent_to_browser[-1] == {"type": "stop-burst"}


def test_a_burst_into_a_class_that_is_not_valid_is_refused(collector: DataCollector, tmp_path: Path) -> None:
    dc = collector
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.jpg").write_bytes(_jpeg(5))
    before = _tree(victim)
    # The selected class's folder was swapped for a link to a folder outside.
    shutil.rmtree(dc.folder / "me")
    (dc.folder / "me").symlink_to(victim, target_is_directory=True)
    for i in range(5):
        _frame_msg(dc.webcam, _jpeg(i), burst=1)
    assert "'me'" in dc.last_error
    assert _tree(victim) == before and _files(dc.folder / "other") == []
    assert dc.sent_to_browser == [{"type": "stop-burst"}]  # the first refusal stops the burst; the rest are dropped
    assert "Stopped: 0 frames saved" in _text(dc.burst_recorder.counter)
    (dc.folder / "me").unlink()
    dc.refresh()

    # The class is renamed on disk in the middle of a burst: nothing goes to the new name, nothing recreates the old.
    dc.class_choice.value = "other"
    for i in range(2):
        _frame_msg(dc.webcam, _jpeg(10 + i), burst=2)
    (dc.folder / "other").rename(dc.folder / "renamed")
    for i in range(3):
        _frame_msg(dc.webcam, _jpeg(20 + i), burst=2)
    assert "'other'" in dc.last_error and not (dc.folder / "other").exists()
    assert len(_files(dc.folder / "renamed")) == 2 and "Stopped: 2 frames saved" in _text(dc.burst_recorder.counter)
    assert dc.sent_to_browser == [{"type": "stop-burst"}] * 2
    _end_msg(dc.webcam, 2, 5)
    assert "Stopped: 2 frames saved" in _text(dc.burst_recorder.counter)  # the release does not hide the refusal

    # Bytes that are no picture stop a burst as well.
    dc.refresh(select="renamed")
    _frame_msg(dc.webcam, b"not a picture", burst=3)
    _frame_msg(dc.webcam, _jpeg(30), burst=3)
    assert "not a picture" in dc.last_error and len(_files(dc.folder / "renamed")) == 2


@pytest.mark.parametrize("burst", [0, -3, "7", True, None, 2.5e40, float("nan"), [1]])
def test_a_burst_number_that_is_not_a_positive_whole_number_is_a_single_capture(burst: object) -> None:
    cam = Webcam()
    got = []
    cam.on_capture(got.append)
    ended = []
    cam.on_burst_end(ended.append)
    _frame_msg(cam, _jpeg(0), burst)
    _end_msg(cam, burst, 1)  # type: ignore[arg-type]
    expected = 2**31 if burst == 2.5e40 else 0
    assert len(got) == 1 and got[0].burst == expected
    assert ended == ([expected] if expected else [])
    cam.close()
