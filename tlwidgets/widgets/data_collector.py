"""DataCollector: make your own image classes from uploads and webcam pictures.

Pictures are saved at once as an ImageFolder (one sub-folder per class) in a folder the
user picks, so the data outlives the notebook and loads like any other folder. Nothing
is ever overwritten (a taken file name gets a ``_1``, ``_2``... suffix), renaming a class
onto an existing one is refused, and removing a class that still holds pictures needs
the "also delete its pictures" box ticked. Nothing outside the folder is ever touched:
every class name goes through one check (``_image_folder.check_class_name``), and
removing a class deletes only the pictures the panel shows.

Holding *Capture* down records a burst of webcam frames into the selected class, with a
live counter (``_burst.BurstRecorder``). The number of pictures of each class shows under
the status line, with the core's warning when the classes are imbalanced
(``balance.imbalance_note``), after every change.

Once the session's model predicts exactly these classes, *Live preview* classifies the
webcam's frames (or the last upload) continuously, at most every ``preview_interval``
seconds, in a background thread that always takes the newest frame and drops the rest.
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from PIL import Image

from ..core.errors import DataError
from ..core.session import Session
from ..core.status import Status
from ._balance_view import BalanceView
from ._burst import BurstRecorder, capture_file_name
from ._collector_gallery import ClassGallery
from ._collector_gallery import pictures as _pictures
from ._collector_preview import LivePreviewMixin
from ._image_folder import ImageFolderStore
from ._live_preview import LatestOnly
from ._panel import Panel, guarded
from .webcam import Frame, Webcam


def _tag(widget: Any, css_class: str) -> Any:
    widget.add_class(css_class)
    return widget


def _hint(text: str, colour: str = "#666") -> str:
    return f"<span style='color:{colour}'>{html.escape(text)}</span>"


class DataCollector(LivePreviewMixin, Panel):
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
        self.gallery_view = ClassGallery(self.delete_image)
        self.tiles = self.gallery_view.tiles  # {file path: thumbnail tile}
        self.sections = self.gallery_view.sections  # {class: (header, thumbnails box, section)}
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
        self.burst_recorder: BurstRecorder | None = None
        if camera:
            self.webcam = Webcam(capture_label="Capture into class")
            self.webcam.on_capture(self._on_capture)
            self.webcam.on_frame(self._on_stream_frame)
            self.burst_recorder = BurstRecorder(self.webcam, self.add_images, self._say)

        # ---- gallery, data, preview
        self.gallery = self.gallery_view.box
        self.status = _tag(widgets.HTML(), "tlw-collector-status")
        self.balance = _tag(BalanceView("Pictures per class"), "tlw-collector-balance")
        self.use_button = _tag(widgets.Button(description="Use this data", icon="check", button_style="primary",
                                              tooltip="Load this folder into the session"), "tlw-use-data")  # fmt: skip
        self.use_button.on_click(lambda _b: self.use_data())
        self.live_preview = _tag(widgets.ToggleButton(value=False, description="Live preview", icon="eye",
                                                      tooltip="Classify the webcam (or the last upload) "
                                                      "with the trained model"), "tlw-live-preview")  # fmt: skip
        self.live_preview.observe(self._on_live_preview, names="value")
        self.predictions = _tag(widgets.HTML(), "tlw-live-predictions")

        add_box = [widgets.HTML("<b>Add pictures</b> to the selected class"), self.upload]
        if self.webcam is not None and self.burst_recorder is not None:
            add_box += [self.webcam, self.burst_recorder.counter]
        self.set_body(
            widgets.HBox([self.folder_text, self.folder_button]),
            widgets.HBox([self.class_name, self.add_class_button]),
            self.class_choice,
            widgets.HBox([self.rename_text, self.rename_button, self.remove_button, self.confirm_remove]),
            widgets.HBox([widgets.VBox(add_box), widgets.VBox([self.live_preview, self.predictions])]),
            self.status,
            self.balance,
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
        self.gallery_view.forget_class(old)  # the paths of its pictures changed
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
        if frame.burst and self.burst_recorder is not None:
            self.burst_recorder.record(frame)  # Capture held down: one frame of a burst
        else:
            self.add_images([(capture_file_name(frame), frame.data)])

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
        self.gallery_view.draw(self.images, self.thumbnails_per_class)
        self.balance.show({name: len(paths) for name, paths in self.images.items()})
        self._update_controls()

    def shown_files(self) -> dict[str, list[str]]:
        """``{class: [file names]}`` of the thumbnails in the gallery."""
        return self.gallery_view.shown_files()

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
        idle = self.session.status == Status.IDLE
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

    def close(self) -> None:
        """Stop the live preview and close every widget (safe to call twice)."""
        self.preview_worker.stop()
        self.gallery_view.close()
        super().close()
