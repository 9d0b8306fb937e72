"""Weights: the torch cache, real downloads from a local HTTP server, and offline errors.

Every network call goes to 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from tlwidgets.core import catalog
from tlwidgets.core.catalog import build_model, get_spec, list_models
from tlwidgets.core.errors import WeightsUnavailableError
from tlwidgets.core.weights import (
    BASE_URL_ENV,
    cache_path,
    download,
    expected_hash_prefix,
    load_state_dict,
    weights_status,
)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub directory for this test."""
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    return tmp_path / "torch" / "hub"


class _Server:
    """A tiny HTTP server on 127.0.0.1; ``routes`` maps a path to (body, truncate)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, bool]] = {}
        routes = self.routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path not in routes:
                    self.send_error(404)
                    return
                body, truncate = routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                # A truncated reply promises more bytes than it sends, then hangs up.
                self.send_header("Content-Length", str(len(body) + (1000 if truncate else 0)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/models"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def serve(self, name: str, body: bytes, truncate: bool = False) -> str:
        self.routes[f"/models/{name}"] = (body, truncate)
        return f"{self.base}/{name}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_cache_path_is_where_torchvision_looks(hub: Path) -> None:
    spec = get_spec("resnet18")
    assert cache_path(spec) == hub / "checkpoints" / "resnet18-f37072fd.pth"
    assert expected_hash_prefix(cache_path(spec).name) == "f37072fd"
    assert expected_hash_prefix("model.pth") is None
    assert weights_status(spec) == "download"
    assert weights_status(get_spec("efficientnet_lite0")) == "packaged"


def test_cached_weights_are_loaded_without_network(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, f"http://127.0.0.1:{_free_port()}/nowhere")
    spec = get_spec("resnet18")
    torch.manual_seed(3)
    state = torchvision.models.resnet18().state_dict()
    cache_path(spec).parent.mkdir(parents=True)
    torch.save(state, cache_path(spec))

    assert weights_status(spec) == "cached"
    assert list_models().set_index("name").loc["resnet18", "weights"] == "cached"
    model = build_model("resnet18", pretrained=True)
    assert torch.equal(model.fc.weight, state["fc.weight"])
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert not model.training


def test_unreachable_server_error_names_url_and_path(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = f"http://127.0.0.1:{_free_port()}/models"
    monkeypatch.setenv(BASE_URL_ENV, base)
    spec = get_spec("resnet18")
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("resnet18", pretrained=True)
    message = str(info.value)
    assert f"{base}/resnet18-f37072fd.pth" in message
    assert str(cache_path(spec)) in message
    assert _leftovers(hub) == []


def test_download_streams_with_progress(server: _Server, tmp_path: Path) -> None:
    torch.manual_seed(0)
    body = _state_bytes({"w": torch.randn(100_000)})  # ~400 KB: several chunks
    name = f"tiny-{_sha(body)[:8]}.pth"
    url = server.serve(name, body)
    calls: list[tuple[int, int]] = []
    dest = tmp_path / "cache" / name

    assert download(url, dest, progress=lambda done, total: calls.append((done, total))) == dest
    assert dest.read_bytes() == body
    assert len(calls) > 1
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (len(body), len(body))
    assert _leftovers(tmp_path / "cache") == [name]


def test_download_refuses_bytes_that_fail_the_hash(server: _Server, hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASE_URL_ENV, server.base)
    server.serve("resnet18-f37072fd.pth", _state_bytes(torchvision.models.resnet18().state_dict()))
    spec = get_spec("resnet18")
    with pytest.raises(WeightsUnavailableError, match="corrupt") as info:
        build_model("resnet18", pretrained=True)
    assert str(cache_path(spec)) in str(info.value)
    assert _leftovers(hub) == []
    assert weights_status(spec) == "download"


def test_interrupted_download_leaves_no_usable_file(server: _Server, hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"x" * 300_000
    name = f"cut-{_sha(body)[:8]}.pth"
    url = server.serve(name, body, truncate=True)
    dest = hub / "checkpoints" / name
    calls: list[tuple[int, int]] = []
    with pytest.raises(WeightsUnavailableError) as info:
        download(url, dest, progress=lambda d, t: calls.append((d, t)))
    assert url in str(info.value) and str(dest) in str(info.value)
    assert calls and calls[-1][1] == len(body) + 1000
    assert _leftovers(hub) == []

    # The same through the catalog: the cache stays empty, so the next try downloads again.
    monkeypatch.setenv(BASE_URL_ENV, server.base)
    server.serve("resnet18-f37072fd.pth", body, truncate=True)
    with pytest.raises(WeightsUnavailableError):
        build_model("resnet18", pretrained=True)
    assert _leftovers(hub) == []
    assert weights_status(get_spec("resnet18")) == "download"


def test_build_model_downloads_into_the_cache(server: _Server, hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(5)
    state = torchvision.models.resnet18().state_dict()
    body = _state_bytes(state)
    name = f"resnet18-{_sha(body)[:8]}.pth"
    # A spec whose file name carries the hash of the served bytes, as torchvision's names do.
    spec = dataclasses.replace(get_spec("resnet18"), weights_url=f"https://download.pytorch.org/models/{name}")
    monkeypatch.setitem(catalog._torchvision_specs(), "resnet18", spec)
    monkeypatch.setenv(BASE_URL_ENV, server.base)
    server.serve(name, body)
    calls: list[tuple[int, int]] = []

    model = build_model("resnet18", pretrained=True, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (len(body), len(body))
    assert cache_path(spec) == hub / "checkpoints" / name
    assert cache_path(spec).read_bytes() == body
    assert weights_status(spec) == "cached"
    assert torch.equal(model.fc.weight, state["fc.weight"])

    server.routes.clear()  # now offline: the cached file is enough
    again = load_state_dict(spec)
    assert torch.equal(again["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])


class _Opaque:
    """A class of this test module: a weights-only reader may not rebuild it."""


def test_tensor_file_reader_tells_damaged_files_from_refused_objects(tmp_path: Path) -> None:
    from tlwidgets.core.errors import ModelError, TrainingError
    from tlwidgets.core.weights import read_tensor_file

    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3.0)}, good)
    assert torch.equal(read_tensor_file(good)["w"], torch.arange(3.0))

    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ModelError, match=r"weights file .*damaged\.pt: it is damaged or not a file written by torch\.save"):
        read_tensor_file(damaged)

    objects = tmp_path / "objects.pt"
    torch.save({"w": _Opaque()}, objects)
    with pytest.raises(TrainingError, match=r"checkpoint .*objects\.pt: it holds Python objects .*never unpickled\. Try"):
        read_tensor_file(objects, what="checkpoint", advice="Try again.", error=TrainingError)
