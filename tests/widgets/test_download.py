"""Download buttons: what the widget sends to the browser, file names, the size bound, errors."""

from __future__ import annotations

import io
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import ready_session
from tlwidgets import Session
from tlwidgets.widgets import download as dl
from tlwidgets.widgets.download import Download, file_stem, safe_filename
from tlwidgets.widgets.training_panel import TrainingPanel


class Browser:
    """Records what a :class:`Download` widget sends and reassembles the files like download.js."""

    def __init__(self, link: Download) -> None:
        self.messages: list[tuple[dict[str, Any], list[bytes]]] = []
        link.send = self._send  # type: ignore[method-assign]

    def _send(self, content: dict[str, Any], buffers: list[Any] | None = None) -> None:
        self.messages.append((content, [bytes(b) for b in buffers or []]))

    def files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        begun: dict[str, dict[str, Any]] = {}
        for content, buffers in self.messages:
            kind = content["type"]
            if kind == "begin":
                begun[content["id"]] = {**content, "parts": []}
            elif kind == "chunk":
                file = begun[content["id"]]
                assert content["index"] == len(file["parts"]) and len(buffers) == 1
                file["parts"].append(buffers[0])
            elif kind == "end":
                file = begun.pop(content["id"])
                assert len(file["parts"]) == file["chunks"]
                data = b"".join(file["parts"])
                assert len(data) == file["size"]
                out[file["name"]] = data
        assert not begun, "every file is ended"
        return out


@pytest.fixture
def trained(image_folder: Path) -> Session:
    s = ready_session(image_folder, "resnet18", image_size=64)
    s.fit(epochs=2, batch_size=8)
    return s


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder the downloads are written in (checked empty afterwards)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _state(s: Session) -> dict[str, Any]:
    return {
        "weights": {k: v.clone() for k, v in s.model.state_dict().items()},
        "training_mode": s.model.training,
        "frozen": tuple(s.frozen), "classes": tuple(s.classes), "head": s.head, "config": s.config,
        "epochs": [dict(e) for e in s.history.epochs], "runs": len(s.runs), "status": str(s.status),
        "model_version": s.model_version, "data_version": s.data_version, "device": str(s.device),
    }


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    weights_equal = a["weights"].keys() == b["weights"].keys() and all(
        torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    rest = {k: v for k, v in a.items() if k != "weights"} == {k: v for k, v in b.items() if k != "weights"}
    return weights_equal and rest


def test_the_bytes_sent_are_the_files_bytes_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "CHUNK_BYTES", 1000)
    link = Download()
    browser = Browser(link)
    data = os.urandom(2500)
    (tmp_path / "weights.bin").write_bytes(data)
    (tmp_path / "empty.bin").write_bytes(b"")
    sent = link.send_file(tmp_path / "weights.bin", "my model.bin")
    assert (sent.name, sent.size, sent.chunks) == ("my_model.bin", 2500, 3)
    link.send_file(tmp_path / "empty.bin")
    assert browser.files() == {"my_model.bin": data, "empty.bin": b""}
    assert [len(b[0]) for c, b in browser.messages if c["type"] == "chunk"][:3] == [1000, 1000, 500]
    assert not any(c.get("value") for c, _ in browser.messages), "nothing goes through a synced trait"


def test_the_bundle_button_sends_a_zip_that_opens_and_predicts_the_same(trained: Session, own_tmp: Path) -> None:
    panel = TrainingPanel(trained)
    downloads = panel.export_bar.downloads
    browser = Browser(downloads.link)
    panel.export_path.value = "runs/flowers"
    before = _state(trained)
    downloads.buttons["bundle"].click()
    assert panel.last_error == ""
    files = browser.files()
    assert list(files) == ["flowers.zip"]
    assert "flowers.zip" in panel.export_result.value and "browser" in panel.export_result.value
    received = own_tmp.parent / "received.zip"
    received.write_bytes(files["flowers.zip"])
    image = trained.data.val[0].path
    loaded = Session.load(received, device="cpu")
    mine, theirs = trained.predict(image, k=3), loaded.predict(image, k=3)
    assert list(theirs["class"]) == list(mine["class"])
    assert theirs["probability"].to_numpy() == pytest.approx(mine["probability"].to_numpy(), abs=1e-5)
    assert _same_state(before, _state(trained)), "downloading changes nothing in the session"
    assert list(own_tmp.iterdir()) == [], "the temporary folder is gone"
    assert not Path("runs").exists(), "nothing is written where the path box points"


def test_onnx_and_script_buttons_send_their_files(trained: Session, own_tmp: Path) -> None:
    onnx = pytest.importorskip("onnx")
    panel = TrainingPanel(trained)
    downloads = panel.export_bar.downloads
    browser = Browser(downloads.link)
    panel.export_path.value = "  "
    before = _state(trained)
    downloads.buttons["onnx"].click()
    downloads.buttons["script"].click()
    assert panel.last_error == ""
    files = browser.files()
    assert sorted(files) == ["resnet18.onnx", "resnet18_train.zip"], "an empty box names them after the model"
    graph = onnx.load_from_string(files["resnet18.onnx"])
    assert graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 3
    with zipfile.ZipFile(io.BytesIO(files["resnet18_train.zip"])) as zf:
        assert sorted(zf.namelist()) == ["resnet18_train.py", "resnet18_train.split.json"]
        script = zf.read("resnet18_train.py").decode()
    assert "resnet18_train.split.json" in script
    compile(script, "resnet18_train.py", "exec")
    assert _same_state(before, _state(trained))
    assert list(own_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flowers", "flowers"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\model", "model"),
        ("..", "model"),
        (".hidden", "hidden"),
        ("Blüte à fleurs", "Blute_a_fleurs"),
        ("a/b:c*d?e\"f<g>h|i", "b_c_d_e_f_g_h_i"),
        ("bad\x00name\n", "bad_name"),
        ("🌸🌸", "model"),
        ("con", "_con"),
        ("NUL.txt", "_NUL.txt"),
        ("x" * 300, "x" * dl.MAX_NAME),
    ],
)
def test_file_names_are_safe(text: str, expected: str) -> None:
    assert safe_filename(text) == expected
    assert safe_filename(text, ".zip") == expected + ".zip"



@given(st.text(max_size=400))
def test_any_text_gives_a_plain_file_name(text: str) -> None:
    name = safe_filename(text, ".zip")
    stem = name[: -len(".zip")]
    assert re.fullmatch(r"_?[A-Za-z0-9][A-Za-z0-9._-]*", stem), name
    assert len(stem) <= dl.MAX_NAME + 1, "no path separators, no leading dot, bounded length"

def test_the_path_box_names_the_downloads(image_folder: Path) -> None:
    s = Session(device="cpu")
    assert file_stem("runs/flowers.zip", s) == "flowers"
    assert file_stem("runs/flowers.onnx", s) == "flowers"
    assert file_stem("", s) == "model"
    s.load_model("resnet18", pretrained=False)
    assert file_stem("  ", s) == "resnet18"
    assert file_stem("../../", s) == "resnet18"


def test_files_above_the_bound_are_refused_in_one_line(
    trained: Session, own_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dl.check_size(dl.MAX_BYTES, "exactly.zip")  # at the bound: accepted
    with pytest.raises(dl.DownloadError, match=r"2\.0 GB"):
        dl.check_size(dl.MAX_BYTES + 1, "over.zip")
    panel = TrainingPanel(trained)
    browser = Browser(panel.export_bar.downloads.link)
    monkeypatch.setattr(dl, "MAX_BYTES", 1000)
    panel.export_bar.downloads.buttons["bundle"].click()
    assert "a browser download takes at most" in panel.last_error and "Use Save" in panel.last_error
    assert "\n" not in panel.last_error and "Traceback" not in panel.last_error
    big = tmp_path / "big.bin"
    big.write_bytes(b"0" * 1001)
    with pytest.raises(dl.DownloadError):
        panel.export_bar.downloads.link.send_file(big)
    assert browser.messages == [], "nothing was sent"
    assert list(own_tmp.iterdir()) == []


def test_errors_show_as_one_plain_line(image_folder: Path, own_tmp: Path) -> None:
    s = Session(device="cpu", image_size=64)
    s.load_model("resnet18", pretrained=False)
    panel = TrainingPanel(s)
    downloads = panel.export_bar.downloads
    browser = Browser(downloads.link)
    assert downloads.buttons["script"].disabled and not downloads.buttons["bundle"].disabled
    downloads.buttons["script"].click()  # no data: the core says why, in words
    assert panel.last_error and "\n" not in panel.last_error and "Traceback" not in panel.last_error
    assert browser.messages == []
    # a file that arrived incomplete in the browser
    downloads.buttons["bundle"].click()
    assert panel.last_error == ""
    sent = downloads.link.sent[-1]
    downloads.link._handle_custom_msg({"type": "failed", "id": sent.id, "reason": "received 1\nof 2 pieces"}, [])
    assert panel.last_error.startswith(f"{sent.name} did not arrive whole in the browser (received 1 of 2 pieces)")
    assert "\n" not in panel.last_error
    downloads.link._handle_custom_msg({"type": "delivered", "id": sent.id, "size": sent.size}, [])
    downloads.link._handle_custom_msg({"type": "delivered", "id": "unknown"}, [])
    downloads.link._handle_custom_msg("junk", [])
    assert downloads.link.delivered == [sent.id]


def test_buttons_follow_the_session_state(image_folder: Path) -> None:
    s = Session(device="cpu", image_size=64)
    panel = TrainingPanel(s)
    buttons = panel.export_bar.downloads.buttons
    assert all(b.disabled for b in buttons.values())
    assert [f"tlw-download-{k}" in b._dom_classes for k, b in buttons.items()] == [True] * 3
    s.load_model("resnet18", pretrained=False)
    assert not buttons["bundle"].disabled and not buttons["onnx"].disabled and buttons["script"].disabled
    s.load_data(image_folder)
    s.replace_head()
    assert not buttons["script"].disabled
    s.status = "training"
    assert all(b.disabled for b in buttons.values())
    s.status = "idle"
    panel.close()
