"""Save, export and scale out: a path box and three buttons under the training panel.

One path names everything: ``runs/flowers`` saves the bundle folder ``runs/flowers``
(``runs/flowers.zip`` saves a zip), exports ``runs/flowers.onnx``, writes the training
script ``runs/flowers_train.py`` with its split ``runs/flowers_train.split.json``, and the
web page ``runs/flowers_web/`` (a static folder that classifies in the browser).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from ..core.session import Session
from ..core.status import Status
from .download import DownloadButtons

_SUFFIXES = (".zip", ".onnx", ".py")
_STATE = ["model", "model_version", "data", "data_version", "head", "classes", "status"]


def targets(text: str) -> dict[str, Path]:
    """The bundle, ONNX, script and web page paths one path box names."""
    path = Path(text.strip() or "my_model").expanduser()
    stem = path.with_suffix("") if path.suffix.lower() in _SUFFIXES else path
    return {
        "bundle": path if path.suffix.lower() == ".zip" else stem,
        "onnx": stem.with_name(stem.name + ".onnx"),
        "script": stem.with_name(stem.name + "_train.py"),
        "webapp": stem.with_name(stem.name + "_web"),
    }


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


class ExportBar(widgets.VBox):
    """Path box with Save / Export ONNX / Generate script / Web page buttons, Download buttons and a result line.

    Args:
        session: the shared session.
        on_error: shows an exception (the owning panel's error area).
        on_clear_error: hides it again.

    Attributes:
        path: the Text naming the outputs (``tlw-export-path``).
        save_button (``tlw-save``), export_onnx_button (``tlw-export-onnx``),
        script_button (``tlw-script``), webapp_button (``tlw-webapp``): the actions.
        result: what was written (``tlw-export-result``).
        downloads: the :class:`~tlwidgets.widgets.download.DownloadButtons` (``tlw-download-bundle``,
            ``tlw-download-onnx``, ``tlw-download-script``): the same files, sent to the browser.
    """

    def __init__(
        self,
        session: Session,
        on_error: Callable[[BaseException], Any],
        on_clear_error: Callable[[], Any],
    ) -> None:
        self.session = session
        self._on_error, self._on_clear_error = on_error, on_clear_error
        self.path = widgets.Text(
            value="my_model", description="Save as", placeholder="e.g. runs/flowers",
            style={"description_width": "110px"}, layout=widgets.Layout(width="360px"),
        )
        self.path.add_class("tlw-export-path")
        self.save_button = widgets.Button(description="Save", icon="save",
                                          tooltip="Bundle folder: weights (safetensors) and settings; Session.load opens it")
        self.save_button.add_class("tlw-save")
        self.export_onnx_button = widgets.Button(description="Export ONNX", icon="download",
                                                 tooltip="<path>.onnx, checked against PyTorch")
        self.export_onnx_button.add_class("tlw-export-onnx")
        self.script_button = widgets.Button(description="Generate script", icon="file-code-o",
                                            tooltip="<path>_train.py: the same training for python or torchrun")
        self.script_button.add_class("tlw-script")
        self.webapp_button = widgets.Button(description="Web page", icon="globe",
                                            tooltip="<path>_web/: a page that classifies pictures and the webcam "
                                                    "in the browser; any static host serves it")
        self.webapp_button.add_class("tlw-webapp")
        self.result = widgets.HTML("")
        self.result.add_class("tlw-export-result")
        self.save_button.on_click(lambda _: self._act(self.save))
        self.export_onnx_button.on_click(lambda _: self._act(self.export_onnx))
        self.script_button.on_click(lambda _: self._act(self.write_script))
        self.webapp_button.on_click(lambda _: self._act(self.write_webapp))
        self.downloads = DownloadButtons(session, lambda: self.path.value, on_error, on_clear_error, self._show)
        super().__init__([widgets.HBox([self.path, self.save_button, self.export_onnx_button, self.script_button,
                                        self.webapp_button]),
                          self.downloads, self.result])
        self.add_class("tlw-export-bar")
        self.session.observe(self._on_session_state, names=_STATE)
        self._observing = True
        self._sync()

    # ------------------------------------------------------------------ state
    def _on_session_state(self, change: dict) -> None:
        self._sync()

    def _sync(self) -> None:
        s = self.session
        idle = s.status == Status.IDLE and s.model is not None
        self.save_button.disabled = self.export_onnx_button.disabled = not idle
        ready = idle and s.data is not None and tuple(s.classes) == tuple(s.data.classes)
        self.script_button.disabled = not ready
        self.webapp_button.disabled = not (idle and len(s.classes) > 0)
        self.downloads.enable(bundle=idle, onnx=idle, script=ready)
        self.script_button.tooltip = ("<path>_train.py: the same training for python or torchrun" if ready
                                      else "Needs a model, data, and a head for the data's classes")

    def _show(self, text: str) -> None:
        self.result.value = f"<div style='margin:4px 0'>{text}</div>"

    def _act(self, action: Callable[[], Any]) -> Any:
        try:
            out = action()
        except Exception as exc:  # noqa: BLE001 - a button must never raise into the front end
            self._on_error(exc)
            return None
        self._on_clear_error()
        return out

    # ------------------------------------------------------------------ actions
    def save(self) -> Path:
        """Save the session as a bundle at the path (what the Save button does)."""
        path = self.session.save(targets(self.path.value)["bundle"])
        self._show(f"Saved <code>{html.escape(str(path))}</code> ({_size_mb(path):.1f} MB). "
                   f"Open it with <code>Session.load({html.escape(repr(str(path)))})</code>.")
        return path

    def export_onnx(self) -> Any:
        """Export ``<path>.onnx`` and show how well it matches PyTorch."""
        result = self.session.export_onnx(targets(self.path.value)["onnx"])
        self._show(html.escape(result.summary()))
        return result

    def write_script(self) -> Any:
        """Write ``<path>_train.py`` and its split file; show how to run it."""
        files = self.session.to_script(targets(self.path.value)["script"])
        runs = "".join(f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in files.commands().items())
        self._show(f"Wrote <code>{html.escape(str(files.script))}</code> and "
                   f"<code>{html.escape(files.split.name)}</code>. Run it from its folder:<ul>{runs}</ul>")
        return files

    def write_webapp(self) -> Any:
        """Write the web page folder ``<path>_web/``; show how to try it."""
        result = self.session.export_webapp(targets(self.path.value)["webapp"])
        self._show(f"Wrote the web page <code>{html.escape(str(result.folder))}</code>. Put the folder on any "
                   f"static host (GitHub Pages), or try it here: <code>{html.escape(result.serve_command())}</code>, "
                   "then open http://localhost:8000")
        return result

    def close(self) -> None:
        """Stop observing the session and close the widgets (safe to call twice)."""
        if self._observing:
            self._observing = False
            self.session.unobserve(self._on_session_state, names=_STATE)
        for child in self.children:
            for grandchild in getattr(child, "children", ()):
                grandchild.close()
            child.close()
        super().close()
