"""Download buttons: the bundle, the ONNX file and the training script reach the user's browser.

The kernel may run far from the person using it (Binder, a lab server, Voilà), so a file
written on the kernel's disk is not yet in their hands. Each button writes its file into
a temporary folder through the session's own methods (:meth:`Session.save`,
:meth:`Session.export_onnx`, :meth:`Session.to_script`) and sends its bytes to the
browser, which hands them to its downloads.

Why an anywidget carrying the bytes over the widget's comm, and not a link to a Jupyter
server file route (``/files/...``): Voilà serves no file route, and on Binder or a shared
server the kernel's temporary folder is not under the server's root anyway. The comm exists
in JupyterLab, Notebook 7, Voilà, VS Code and Colab alike, and anywidget (already needed by
Plotly's ``FigureWidget``) runs there with no extension of its own. The front end
(``static/download.js``) gathers the pieces into a ``Blob`` and clicks an
``<a download>`` link with its object URL: a real browser download, named by us.

Files go in pieces of :data:`CHUNK_BYTES` (4 MiB), one binary buffer per widget message,
so no message is huge and nothing is kept in a synced trait (reopening the notebook resends
nothing). The browser checks the count and size of the pieces and answers whether the file
was handed to its downloads. Files above :data:`MAX_BYTES` (2 GiB) are refused: the browser
holds the whole file in memory before saving it. Bundles are usually tens of megabytes.
"""

from __future__ import annotations

import re
import tempfile
import unicodedata
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import anywidget
import ipywidgets as widgets

from ..core.errors import TLWidgetsError
from ..core.session import Session

_STATIC = Path(__file__).with_name("static")

#: Largest file sent to the browser, in bytes (2 GiB).
MAX_BYTES = 2 * 2**30
#: Bytes per widget message.
CHUNK_BYTES = 4 * 2**20
#: Longest file name stem offered to the browser.
MAX_NAME = 80

_KNOWN_SUFFIXES = (".zip", ".onnx", ".py")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


class DownloadError(TLWidgetsError, RuntimeError):
    """A file cannot be sent to the browser (too large, or it arrived incomplete)."""


def safe_filename(text: str, suffix: str = "", fallback: str = "model") -> str:
    """``text`` as a file name every browser and system accepts, plus ``suffix``.

    Only the last path part is kept; accents are dropped (``é`` → ``e``), every other
    character outside letters, digits, ``.``, ``_`` and ``-`` becomes ``_``, leading dots
    go (no hidden files, no ``..``), the stem is cut to :data:`MAX_NAME` characters, and a
    Windows device name (``con``, ``nul``, ...) gets a ``_`` in front. An empty result
    becomes ``fallback``.
    """
    name = re.split(r"[\\/]", str(text).strip())[-1]
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:MAX_NAME].rstrip("._-")
    if not name:
        name = fallback
    if name.split(".")[0].lower() in _WINDOWS_RESERVED:
        name = "_" + name
    return name + suffix


def file_stem(text: str, session: Session) -> str:
    """The safe stem of the downloads named by the path box ``text`` (``runs/flowers.zip`` → ``flowers``).

    An empty box names them after the session's model.
    """
    name = PurePath(str(text).strip().replace("\\", "/")).name
    for suffix in _KNOWN_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    model = safe_filename(session.spec.name) if session.spec is not None else "model"
    return safe_filename(name, fallback=model)


def _size_text(size: int) -> str:
    return f"{size / 2**30:.1f} GB" if size >= 2**30 else f"{size / 2**20:.1f} MB"


def check_size(size: int, name: str) -> None:
    """Refuse a file of ``size`` bytes above :data:`MAX_BYTES`, in one line that says what to do instead."""
    if size > MAX_BYTES:
        raise DownloadError(
            f"{name} would be {_size_text(size)}; a browser download takes at most {_size_text(MAX_BYTES)}. "
            "Use Save to write it on the server and copy it from there."
        )


@dataclass(frozen=True)
class Sent:
    """A file sent to the browser: its message id, file name, size and number of pieces."""

    id: str
    name: str
    size: int
    chunks: int


class Download(anywidget.AnyWidget):
    """Sends files to the browser, which saves them as downloads.

    Example:
        >>> link = Download()
        >>> link  # must be displayed once so the browser holds it  # doctest: +SKIP
        >>> link.send_file("runs/flowers.zip")  # doctest: +SKIP

    Attributes:
        sent: every :class:`Sent` file, oldest first.
        delivered: ids of the files the browser handed to its downloads.
        failed: ``{id: reason}`` of files that arrived incomplete.
    """

    _esm = _STATIC / "download.js"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("tlw-download-link")
        self.sent: list[Sent] = []
        self.delivered: list[str] = []
        self.failed: dict[str, str] = {}
        self._callbacks: list[Callable[[Sent, str | None], Any]] = []
        self.on_msg(self._on_front_end_msg)

    def on_result(self, callback: Callable[[Sent, str | None], Any]) -> None:
        """Call ``callback(sent, None)`` when the browser saved a file, ``callback(sent, reason)`` when it failed."""
        self._callbacks.append(callback)

    def send_file(self, path: str | Path, name: str | None = None, mime: str = "application/octet-stream") -> Sent:
        """Send the file at ``path`` to the browser as a download named ``name`` (made safe).

        Raises:
            DownloadError: the file is larger than :data:`MAX_BYTES`.
        """
        path = Path(path)
        name = safe_filename(name if name is not None else path.name, fallback="download")
        size = path.stat().st_size
        check_size(size, name)
        chunks = max(1, -(-size // CHUNK_BYTES))
        sent = Sent(uuid.uuid4().hex, name, size, chunks)
        self.send({"type": "begin", "id": sent.id, "name": name, "size": size, "chunks": chunks, "mime": mime})
        with open(path, "rb") as fp:
            for index in range(chunks):
                piece = fp.read(CHUNK_BYTES)
                self.send({"type": "chunk", "id": sent.id, "index": index}, buffers=[piece])
        self.send({"type": "end", "id": sent.id})
        self.sent.append(sent)
        return sent

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: list[Any]) -> None:
        if not isinstance(content, dict) or content.get("type") not in ("delivered", "failed"):
            return
        sent = next((s for s in self.sent if s.id == content.get("id")), None)
        if sent is None:
            return
        reason = None
        if content["type"] == "delivered":
            self.delivered.append(sent.id)
        else:
            reason = " ".join(str(content.get("reason") or "incomplete").split())[:200]
            self.failed[sent.id] = reason
        for callback in list(self._callbacks):
            callback(sent, reason)


# ---------------------------------------------------------------------------- files
def bundle_file(session: Session, folder: Path, stem: str) -> Path:
    """``folder/<stem>.zip``: the session's bundle (:meth:`Session.save`)."""
    _check_weights(session, stem + ".zip")
    return Path(session.save(folder / f"{stem}.zip"))


def onnx_file(session: Session, folder: Path, stem: str) -> Path:
    """``folder/<stem>.onnx`` (:meth:`Session.export_onnx`)."""
    _check_weights(session, stem + ".onnx")
    return Path(session.export_onnx(folder / f"{stem}.onnx").path)


def script_file(session: Session, folder: Path, stem: str) -> Path:
    """``folder/<stem>_train.zip``: the training script and its split file (:meth:`Session.to_script`)."""
    files = session.to_script(folder / "script" / f"{stem}_train.py")
    archive = folder / f"{stem}_train.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(files.script, files.script.name)
        zf.write(files.split, files.split.name)
    return archive


def _check_weights(session: Session, name: str) -> None:
    """Refuse before writing anything when the weights alone exceed the bound."""
    model = session.model
    if model is not None:
        check_size(sum(t.numel() * t.element_size() for t in model.state_dict().values()), name)


_KINDS: dict[str, tuple[str, Callable[[Session, Path, str], Path], str]] = {
    "bundle": ("Bundle (.zip)", bundle_file, "application/zip"),
    "onnx": ("ONNX", onnx_file, "application/octet-stream"),
    "script": ("Script (.zip)", script_file, "application/zip"),
}
_TOOLTIPS = {
    "bundle": "Download the bundle as a .zip: Session.load opens it",
    "onnx": "Download the model as ONNX, checked against PyTorch",
    "script": "Download the training script and its split file (.zip)",
}


class DownloadButtons(widgets.HBox):
    """Download buttons for the bundle, the ONNX file and the training script.

    Args:
        session: the shared session.
        name: returns the text the downloads are named after (the export bar's path box).
        on_error: shows an exception in one plain line (the owning panel's error area).
        on_clear_error: hides it again.
        on_result: shows what was sent (one line of HTML).

    Attributes:
        buttons: ``{"bundle" | "onnx" | "script": Button}`` (``tlw-download-bundle``, ...).
        link: the :class:`Download` widget that carries the bytes.
    """

    def __init__(
        self,
        session: Session,
        name: Callable[[], str],
        on_error: Callable[[BaseException], Any],
        on_clear_error: Callable[[], Any],
        on_result: Callable[[str], Any],
    ) -> None:
        self.session = session
        self._name, self._on_error, self._on_clear_error, self._on_result = name, on_error, on_clear_error, on_result
        self.link = Download()
        self.link.on_result(self._on_browser_result)
        self.buttons: dict[str, widgets.Button] = {}
        for kind, (label, _make, _mime) in _KINDS.items():
            button = widgets.Button(description=label, icon="download", tooltip=_TOOLTIPS[kind],
                                    layout=widgets.Layout(width="auto"))
            button.add_class(f"tlw-download-{kind}")
            button.on_click(lambda _b, kind=kind: self._click(kind))
            self.buttons[kind] = button
        label = widgets.HTML("Download:", layout=widgets.Layout(width="110px"))
        super().__init__([label, *self.buttons.values(), self.link])
        self.add_class("tlw-downloads")

    def enable(self, **kinds: bool) -> None:
        """Enable or disable buttons, e.g. ``enable(bundle=True, onnx=True, script=False)``."""
        for kind, on in kinds.items():
            self.buttons[kind].disabled = not on

    def download(self, kind: str) -> Sent:
        """Write the ``kind`` file (``"bundle"``, ``"onnx"`` or ``"script"``) in a temporary folder and send it."""
        _label, make, mime = _KINDS[kind]
        stem = file_stem(self._name(), self.session)
        with tempfile.TemporaryDirectory(prefix="tlwidgets-download-") as tmp:
            path = make(self.session, Path(tmp), stem)
            return self.link.send_file(path, path.name, mime)

    def _click(self, kind: str) -> None:
        try:
            sent = self.download(kind)
        except Exception as exc:  # noqa: BLE001 - a button must never raise into the front end
            self._on_error(exc)
            return
        self._on_clear_error()
        self._on_result(f"Sent <code>{sent.name}</code> ({_size_text(sent.size)}) to the browser's downloads.")

    def _on_browser_result(self, sent: Sent, reason: str | None) -> None:
        if reason is not None:
            self._on_error(DownloadError(f"{sent.name} did not arrive whole in the browser ({reason}); "
                                         "press Download again."))
