"""DataCollector: make your own image classes from uploads and webcam pictures.

Pictures are saved at once as an ImageFolder (one sub-folder per class) in a folder the
user picks, so the data outlives the notebook and loads like any other folder. Nothing
is ever overwritten (a taken file name gets a ``_1``, ``_2``... suffix), renaming a class
onto an existing one is refused, and removing a class that still holds pictures needs
the "also delete its pictures" box ticked. Nothing outside the folder is ever touched:
every class name goes through one check (``_image_folder.check_class_name``), and
removing a class deletes only the pictures the panel shows.

Once the session's model predicts exactly these classes, *Live preview* classifies the
webcam's frames (or the last upload) continuously, at most every ``preview_interval``
seconds, in a background thread that always takes the newest frame and drops the rest.
"""

from __future__ import annotations

import html
import io
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd
from PIL import Image

from ..core.errors import DataError
from ..core.session import Session
from . import _images
from ._image_folder import ImageFolderStore
from ._live_preview import LatestOnly, top_k_html
from ._panel import Panel, guarded
from .webcam import Frame, Webcam

_THUMB = 64


def _tag(widget: Any, css_class: str) -> Any:
    widget.add_class(css_class)
    return widget


def _pictures(n: int) -> str:
    return f"{n} picture" if n == 1 else f"{n} pictures"


def _hint(text: str, colour: str = "#666") -> str:
    return f"<span style='color:{colour}'>{html.escape(text)}</span>"


class DataCollector(Panel):
    """Collect pictures for your own classes, by upload or webcam, into a folder on disk.

    Workflow: choose a folder (created if missing; class sub-folders already there are
    shown), add classes, pick the class to add to, then upload pictures or press
    *Capture* under the webcam. Every picture has a delete button. *Use this data*
    loads the folder into the session (``session.load_data``), so the DatasetBrowser
    and the training panel see it. After training on these classes, tick *Live preview*.

    Args:
        session: the shared session (a new one when omitted).
        folder: open this folder at once (``None``: the user types one).
        camera: show the webcam (``False`` for uploads only).
        thumbnails_per_class: newest pictures shown per class (the count shows all).
        preview_interval: seconds between live predictions, at least.
        title: heading above the panel.
    """

    css_class = "tlw-data-collector"

    def __init__(
        self,
        session: Session | None = None,
        folder: str | os.PathLike[str] | None = None,
        camera: bool = True,
        thumbnails_per_class: int = 40,
        preview_interval: float = 0.5,
        title: str | None = "Collect images",
        **kwargs: Any,
    ) -> None:
        super().__init__(session, title, **kwargs)
        self.store: ImageFolderStore | None = None
        self.images: dict[str, list[Path]] = {}
        self.thumbnails_per_class = int(thumbnails_per_class)
        self.preview_interval = float(preview_interval)
        self.tiles: dict[str, widgets.VBox] = {}
        self.sections: dict[str, tuple[widgets.HTML, widgets.Box, widgets.VBox]] = {}
        self.preview_worker = LatestOnly(self._classify_item, preview_interval, self.show_error, "tlw-live-preview")

        # ---- folder
        self.folder_text = _tag(widgets.Text(value=os.fspath(folder) if folder is not None else "my_images",
                                             description="Folder", placeholder="folder for your pictures",
                                             layout=widgets.Layout(width="420px")), "tlw-collector-folder")  # fmt: skip
        self.folder_button = _tag(widgets.Button(description="Open folder", icon="folder-open",
                                                 tooltip="Use this folder (created if missing)"), "tlw-open-folder")  # fmt: skip
        self.folder_button.on_click(lambda _b: self.open_folder(self.folder_text.value))

        # ---- classes
        self.class_name = _tag(widgets.Text(placeholder="new class, e.g. cat", layout=widgets.Layout(width="200px")),
                               "tlw-class-name")  # fmt: skip
        self.add_class_button = _tag(widgets.Button(description="Add class", icon="plus"), "tlw-add-class")
        self.add_class_button.on_click(lambda _b: self.create_class(self.class_name.value))
        self.class_choice = _tag(widgets.ToggleButtons(options=[], description="Add to",
                                                       style={"button_width": "auto"}), "tlw-class-choice")  # fmt: skip
        self.rename_text = _tag(widgets.Text(placeholder="new name", layout=widgets.Layout(width="160px")),
                                "tlw-rename-text")  # fmt: skip
        self.rename_button = _tag(widgets.Button(description="Rename", icon="pencil"), "tlw-rename-class")
        self.rename_button.on_click(lambda _b: self.rename_class(self.class_choice.value, self.rename_text.value))
        self.confirm_remove = _tag(widgets.Checkbox(value=False, description="also delete its pictures",
                                                    indent=False), "tlw-confirm-remove")  # fmt: skip
        self.remove_button = _tag(widgets.Button(description="Remove class", icon="trash", button_style="danger"),
                                  "tlw-remove-class")  # fmt: skip
        self.remove_button.on_click(
            lambda _b: self.delete_class(self.class_choice.value, confirm=bool(self.confirm_remove.value))
        )

        # ---- adding pictures
        self.upload = _tag(widgets.FileUpload(accept="image/*", multiple=True, description="Upload pictures"),
                           "tlw-collector-upload")  # fmt: skip
        self.upload.observe(self._on_upload_value, names="value")
        self.webcam: Webcam | None = None
        if camera:
            self.webcam = Webcam(capture_label="Capture into class")
            self.webcam.on_capture(self._on_capture)
            self.webcam.on_frame(self._on_stream_frame)

        # ---- gallery, data, preview
        self.gallery = _tag(widgets.VBox(), "tlw-gallery")
        self.status = _tag(widgets.HTML(), "tlw-collector-status")
        self.use_button = _tag(widgets.Button(description="Use this data", icon="check", button_style="primary",
                                              tooltip="Load this folder into the session"), "tlw-use-data")  # fmt: skip
        self.use_button.on_click(lambda _b: self.use_data())
        self.live_preview = _tag(widgets.ToggleButton(value=False, description="Live preview", icon="eye",
                                                      tooltip="Classify the webcam (or the last upload) "
                                                      "with the trained model"), "tlw-live-preview")  # fmt: skip
        self.live_preview.observe(self._on_live_preview, names="value")
        self.predictions = _tag(widgets.HTML(), "tlw-live-predictions")

        add_box = [widgets.HTML("<b>Add pictures</b> to the selected class"), self.upload]
        if self.webcam is not None:
            add_box.append(self.webcam)
        self.set_body(
            widgets.HBox([self.folder_text, self.folder_button]),
            widgets.HBox([self.class_name, self.add_class_button]),
            self.class_choice,
            widgets.HBox([self.rename_text, self.rename_button, self.remove_button, self.confirm_remove]),
            widgets.HBox([widgets.VBox(add_box), widgets.VBox([self.live_preview, self.predictions])]),
            self.status,
            self.gallery,
            self.use_button,
        )
        self.observe_session(self._on_session_change, ["classes", "model_version", "status"])
        if folder is not None:
            self.open_folder(folder)
        self._update_controls()

    # ------------------------------------------------------------------ folder and classes
    @property
    def folder(self) -> Path | None:
        """The open folder, or ``None`` before one is opened."""
        return self.store.root if self.store is not None else None

    @property
    def classes(self) -> list[str]:
        """Class names in the order a model trained on this folder predicts them."""
        return list(self.images)

    def _require_store(self) -> ImageFolderStore:
        if self.store is None:
            raise DataError("Open a folder first: type where your pictures go and press Open folder.")
        return self.store

    @guarded
    def open_folder(self, path: str | os.PathLike[str]) -> Path:
        """Open (or create) ``path`` and show the class sub-folders already in it."""
        if not os.fspath(path).strip():
            raise DataError("Type a folder for your pictures first (e.g. my_images).")
        self.store = ImageFolderStore(path)
        self.folder_text.value = os.fspath(self.store.root)
        self.clear_error()
        self._redraw()
        stray = self.store.stray_images()
        links = self.store.linked_folders()
        found = f"{len(self.classes)} classes found" if self.classes else "no classes yet: add one"
        note = f"; {_pictures(len(stray))} outside class folders ignored" if stray else ""
        if links:
            note += f"; links to other folders not shown: {', '.join(links)}"
        self._say(f"Folder {self.store.root}: {found}{note}.")
        return self.store.root

    @guarded
    def create_class(self, name: str) -> Path:
        """Add a class (an empty sub-folder) and select it for new pictures."""
        folder = self._require_store().add_class(name)
        self.class_name.value = ""
        self._redraw(select=folder.name)
        self._say(f"Class {folder.name!r} added: upload pictures or capture them with the webcam.")
        return folder

    @guarded
    def rename_class(self, old: str | None, new: str) -> Path:
        """Rename class ``old`` to ``new`` (refused when ``new`` exists already)."""
        if not old:
            raise DataError("Select the class to rename first.")
        folder = self._require_store().rename_class(old, new)
        for path in [p for p in self.tiles if Path(p).parent.name == old]:
            self.tiles.pop(path).close()  # their paths changed
        self.rename_text.value = ""
        self._redraw(select=folder.name)
        self._say(f"Class {old!r} is now {folder.name!r}.")
        return folder

    @guarded
    def delete_class(self, name: str | None, confirm: bool = False) -> int:
        """Remove class ``name``; with pictures in it, only when ``confirm`` is true.

        Only the pictures the panel shows are deleted; other files and hidden folders in
        the class folder stay (the message names them), and so does the folder then.
        Returns how many pictures were deleted.
        """
        if name is None or name == "":
            raise DataError("Select the class to remove first.")
        store = self._require_store()
        name = store.check_class(name)
        count = len(store.images(name))
        if count and not confirm:
            raise DataError(f"Class {name!r} holds {_pictures(count)}: tick 'also delete its pictures' and press "
                            "Remove class again to delete them.")  # fmt: skip
        removal = store.remove_class(name, confirm=True)
        self.confirm_remove.value = False
        self._redraw()
        if removal.kept:
            n = len(removal.kept)
            listed = ", ".join(removal.kept[:10]) + (", ..." if n > 10 else "")
            self._say(f"Deleted {_pictures(removal.deleted)} of class {name!r}; kept {n} other "
                      f"{'file' if n == 1 else 'files'} in {name!r}: {listed}. The folder stays (a class without "
                      "pictures) until you move them away.")  # fmt: skip
        else:
            self._say(f"Class {name!r} removed" + (f" with its {_pictures(removal.deleted)}." if removal.deleted
                                                   else "."))  # fmt: skip
        return removal.deleted

    # ------------------------------------------------------------------ pictures
    def _target_class(self) -> str:
        self._require_store()
        if not self.class_choice.value:
            raise DataError("Add a class first (type a name and press Add class), then add pictures to it.")
        return str(self.class_choice.value)

    @guarded
    def add_images(self, files: Iterable[tuple[str, bytes]], class_name: str | None = None) -> list[Path]:
        """Store pictures given as ``(file name, bytes)`` in ``class_name`` (default: the selected class).

        Files that are not pictures are skipped and named in the error area; the others are kept.
        """
        store = self._require_store()
        target = store.check_class(class_name if class_name is not None else self._target_class())
        saved: list[Path] = []
        refused: list[str] = []
        for name, data in files:
            try:
                saved.append(store.add_image(target, bytes(data), str(name)))
            except DataError as exc:
                refused.append(str(exc))
        self._redraw()
        if saved:
            self._say(f"Saved {_pictures(len(saved))} in {target!r}.")
        if refused:
            raise DataError(" ".join(refused))
        return saved

    @guarded
    def delete_image(self, path: str | os.PathLike[str]) -> None:
        """Delete one picture of one class (one the gallery lists) from disk and from the gallery."""
        deleted = self._require_store().delete_image(path)
        self._redraw()
        self._say(f"Deleted {deleted.name} from {deleted.parent.name!r}.")

    def _on_upload_value(self, change: dict) -> None:
        entries = list(change["new"] or ())
        if not entries:
            return
        files = [(str(e["name"]), bytes(e["content"])) for e in entries]
        self.upload.value = ()  # the same file can be uploaded again (and no copy stays in memory)
        saved = self.add_images(files)
        if self.live_preview.value and files:
            try:
                self.submit_preview(Image.open(io.BytesIO(files[-1][1])))
            except Exception:  # noqa: BLE001 - a bad last file is already reported by add_images
                pass
        return saved

    def _on_capture(self, frame: Frame) -> None:
        self.add_images([(f"webcam_{time.strftime('%Y%m%d-%H%M%S')}{frame.extension}", frame.data)])

    # ------------------------------------------------------------------ drawing
    @guarded
    def refresh(self, select: str | None = None) -> None:
        """Re-read the folder from disk and redraw classes and thumbnails; ``select`` a class when given."""
        if select is not None:
            select = self._require_store().check_class(select)
        self._redraw(select)

    def _redraw(self, select: str | None = None) -> None:
        if self.store is None:
            self.images = {}
        else:
            self.images = self.store.all_images()
        names = list(self.images)
        keep = select if select in names else self.class_choice.value if self.class_choice.value in names else None
        self.class_choice.options = names
        self.class_choice.value = keep if keep is not None else (names[0] if names else None)
        self._draw_gallery()
        self._update_controls()

    def _tile(self, path: Path) -> widgets.VBox:
        key = os.fspath(path)
        tile = self.tiles.get(key)
        if tile is None:
            png = _images.thumbnail_png(path, _THUMB) or b""
            picture = widgets.Image(value=png, format="png", layout=widgets.Layout(width=f"{_THUMB}px",
                                                                                    height=f"{_THUMB}px"))  # fmt: skip
            picture.add_class("tlw-thumb")
            delete = _tag(widgets.Button(icon="trash", tooltip=f"Delete {path.name}",
                                         layout=widgets.Layout(width=f"{_THUMB}px", height="24px")),
                          "tlw-delete-image")  # fmt: skip
            delete.on_click(lambda _b, p=key: self.delete_image(p))
            tile = _tag(widgets.VBox([picture, delete], layout=widgets.Layout(margin="2px")), "tlw-image-tile")
            tile.path = key  # type: ignore[attr-defined]
            self.tiles[key] = tile
        return tile

    def _draw_gallery(self) -> None:
        shown: set[str] = set()
        for name, paths in self.images.items():
            visible = paths[-self.thumbnails_per_class:] if self.thumbnails_per_class > 0 else []
            tiles = [self._tile(p) for p in visible]
            shown.update(os.fspath(p) for p in visible)
            if name not in self.sections:
                header = widgets.HTML()
                box = widgets.Box(layout=widgets.Layout(flex_flow="row wrap"))
                section = _tag(widgets.VBox([header, box]), "tlw-class-section")
                self.sections[name] = (header, box, section)
            header, box, _section = self.sections[name]
            more = f" (newest {len(visible)} shown)" if len(visible) < len(paths) else ""
            header.value = (f"<b class='tlw-class-title'>{html.escape(name)}</b> "
                            f"<span style='color:#666'>{_pictures(len(paths))}{more}</span>")  # fmt: skip
            box.children = tiles
        for key in [k for k in self.tiles if k not in shown]:
            self.tiles.pop(key).close()
        for name in [n for n in self.sections if n not in self.images]:
            header, box, section = self.sections.pop(name)
            for w in (header, box, section):
                w.close()
        self.gallery.children = [self.sections[n][2] for n in self.images]

    def shown_files(self) -> dict[str, list[str]]:
        """``{class: [file names]}`` of the thumbnails in the gallery."""
        out: dict[str, list[str]] = {}
        for name, (_header, box, _section) in self.sections.items():
            out[name] = [Path(t.path).name for t in box.children]  # type: ignore[attr-defined]
        return out

    def _say(self, text: str) -> None:
        """Report a step that worked (and clear the error of an earlier one)."""
        self.clear_error()
        self.status.value = _hint(text)

    # ------------------------------------------------------------------ session
    @guarded
    def use_data(self, val_fraction: float = 0.2, seed: int = 0) -> Any:
        """Load the folder into the session (``session.load_data``); returns the scan report."""
        store = self._require_store()
        filled = [name for name, paths in self.images.items() if paths]
        if len(filled) < 2:
            raise DataError(f"A classifier needs at least 2 classes with pictures; {store.root} has "
                            f"{len(filled)}: add classes and pictures first.")  # fmt: skip
        report = self.session.load_data(store.root, val_fraction=val_fraction, seed=seed)
        self.clear_error()
        missing = self.session.readiness(require_trainable=False)
        self._say(self.session.message + (f" Next: {missing}" if missing else " Next: train."))
        return report

    def preview_blocker(self) -> str | None:
        """Why the live preview cannot classify into this folder's classes, in plain words; ``None`` when it can.

        The head must predict exactly the classes that hold pictures, in order (the
        session's :meth:`~tlwidgets.core.session.Session.readiness` rule).
        """
        filled = [name for name, paths in self.images.items() if paths]
        if len(filled) < 2:
            return "Add at least 2 classes with pictures, press Use this data, replace the head and train."
        return self.session.readiness(require_trainable=False, classes=filled)

    def model_matches(self) -> bool:
        """True when the session's model predicts exactly this folder's classes (with pictures)."""
        return self.preview_blocker() is None

    def _on_session_change(self, _change: dict) -> None:
        self._update_controls()

    def _update_controls(self) -> None:
        has_folder = self.store is not None
        has_class = bool(self.class_choice.value)
        idle = self.session.status == "idle"
        for w in (self.add_class_button, self.class_name):
            w.disabled = not has_folder
        for w in (self.rename_button, self.rename_text, self.remove_button, self.confirm_remove, self.upload):
            w.disabled = not has_class
        if self.webcam is not None:
            self.webcam.disabled = not has_class
        self.use_button.disabled = not has_folder or not idle
        self.use_button.tooltip = "Load this folder into the session" if idle else "Training runs: wait for it"
        if not self.live_preview.value:
            self.predictions.value = "" if self.model_matches() else _hint(
                "Live preview works once a model is trained on these classes.", "#999"
            )

    # ------------------------------------------------------------------ live preview
    def classify(self, image: Image.Image | str | os.PathLike[str], k: int = 3) -> pd.DataFrame | None:
        """Top-``k`` classes of ``image`` drawn as bars in ``predictions``; ``None`` when no model fits."""
        blocker = self.preview_blocker()
        if blocker is not None:
            self.predictions.value = _hint(
                f"The model does not predict these classes ({', '.join(self.classes) or 'none yet'}): {blocker}",
                "#a60",
            )
            return None
        if self.session.status != "idle":
            self.predictions.value = _hint("Paused while training runs.", "#a60")
            return None
        frame = self.session.predict(image, k=k)
        note = "" if self.session.history is not None else "(the new head is not trained yet)"
        self.predictions.value = top_k_html(frame, note)
        return frame

    def submit_preview(self, image: Image.Image | Frame) -> None:
        """Queue a picture (or a webcam frame) for the live preview; only the newest waiting one is classified."""
        self.preview_worker.submit(image)

    def _classify_item(self, item: Image.Image | Frame) -> None:
        self.classify(item.image() if isinstance(item, Frame) else item)

    def _on_stream_frame(self, frame: Frame) -> None:
        if self.live_preview.value:
            self.submit_preview(frame)  # decoded by the preview thread, and only if it is still the newest

    def _on_live_preview(self, change: dict) -> None:
        if change["new"]:
            self.preview_worker.interval = self.preview_interval
            self.preview_worker.start()
            if self.webcam is not None:
                self.webcam.streaming = True
                self.webcam.interval_ms = max(50, int(self.preview_interval * 1000))
            if not self.model_matches():
                self.classify(Image.new("RGB", (8, 8)))  # shows why nothing will be classified
            elif self.webcam is None or not self.webcam.active:
                self.predictions.value = _hint("Start the camera, or upload a picture.")
        else:
            self.preview_worker.stop()
            if self.webcam is not None:
                self.webcam.streaming = False
            self._update_controls()

    def close(self) -> None:
        """Stop the live preview and close every widget (safe to call twice)."""
        self.preview_worker.stop()
        for tile in list(self.tiles.values()):
            tile.close()
        self.tiles.clear()
        super().close()
