"""DatasetBrowser: choose images (folder, archive, torchvision dataset, demo), see what was found.

The panel shows the scan report of the session's data (``_data_report.DataReport``):
class counts per split with the core's imbalance warning, sample thumbnails per class,
skipped files with their reasons and image sizes; it sets the validation split and the
training augmentation, and previews augmented views.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from ipyfilechooser import FileChooser
from PIL import Image

from ..core import data as data_mod
from ..core.errors import DataError
from ..core.session import Session
from ..core.status import Status
from . import _images
from ._data_report import DataReport
from ._data_report import path_label as _path_label
from ._panel import Panel, guarded

SOURCES = ("Folder", "Archive", "torchvision", "Demo")
ARCHIVE_PATTERNS = ["*.zip", "*.tar", "*.tar.gz", "*.tgz"]
# Shown in the dropdown when the core does not list the datasets it can split.
_FALLBACK_TV_DATASETS = ("CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "SVHN", "STL10", "Flowers102")
_PREVIEW_SIZE = 112


def torchvision_datasets() -> list[str]:
    """Names of the torchvision datasets the core can load (``"torchvision:NAME"`` sources)."""
    names = getattr(data_mod, "torchvision_names", None)
    if names is None:
        try:
            from ..core.data_sources import torchvision_names as names
        except ImportError:
            return list(_FALLBACK_TV_DATASETS)
    return list(names())


def _tag(widget: Any, css_class: str) -> Any:
    """Give ``widget`` a CSS class (for browser tests) and return it."""
    widget.add_class(css_class)
    return widget


def _has_own_split(bundle: Any) -> bool:
    """True when the source came split (train/ + val/ folders): ``val_fraction`` does not apply."""
    layout = str(getattr(bundle.report, "layout", ""))
    if "train/val" in layout:
        return True
    if layout.startswith("torchvision:") and bundle.val:
        # Datasets with their own test split are written as <name>/val/<class>/<file>.
        return Path(_path_label(bundle.val[0])[0]).parent.parent.name == "val"
    return False


class DatasetBrowser(Panel):
    """Load image data into a :class:`Session` and inspect it.

    Sources: a folder with one sub-folder per class (or ``train/`` and ``val/``
    sub-folders), an archive of such a folder, a torchvision dataset, or the built-in
    offline demo (handwritten digits). Choosing a folder or archive loads it at once;
    ``load_button`` (re)loads whatever the selected source tab points at.

    Changing ``val_fraction`` or ``seed`` after loading reloads the same source with the
    new split (there is no separate "Apply" step). Augmentation controls call
    ``session.set_augment`` at once. A load done in code (``session.load_data``) shows
    here too.

    Args:
        session: the shared session (a new one when omitted).
        path: folder where both file choosers start (default: the current folder).
        samples_per_class: thumbnails shown per class.
        preview_count: augmented views shown by the preview.
        title: heading above the panel.
    """

    css_class = "tlw-dataset-browser"

    def __init__(
        self,
        session: Session | None = None,
        path: str | os.PathLike[str] | None = None,
        samples_per_class: int = 4,
        preview_count: int = 6,
        title: str | None = "Data",
        **kwargs: Any,
    ) -> None:
        super().__init__(session, title, **kwargs)
        self.samples_per_class = int(samples_per_class)
        self.preview_count = int(preview_count)
        self.source: str | None = None  # last source loaded, reloaded when the split changes
        self._load_options: dict[str, Any] = {}
        self._loading = False
        self._syncing = False
        self._preview_shown = False
        self.preview_images: list[Image.Image] = []
        start = os.fspath(path) if path is not None else os.getcwd()

        # ---- sources
        self.source_choice = widgets.ToggleButtons(options=SOURCES, value="Folder", description="Source")
        self.source_choice.add_class("tlw-source")
        self.folder_chooser = FileChooser(
            start, show_only_dirs=True, title="Folder with one sub-folder per class",
            select_desc="Choose folder", change_desc="Change folder", layout=widgets.Layout(width="auto"),
        )  # fmt: skip
        self.folder_chooser.add_class("tlw-folder-chooser")
        self.folder_chooser.register_callback(self._on_folder_chosen)
        self.archive_chooser = FileChooser(
            start, filter_pattern=list(ARCHIVE_PATTERNS), title="Archive (.zip, .tar, .tar.gz, .tgz) of such a folder",
            select_desc="Choose archive", change_desc="Change archive", layout=widgets.Layout(width="auto"),
        )  # fmt: skip
        self.archive_chooser.add_class("tlw-archive-chooser")
        self.archive_chooser.register_callback(self._on_archive_chosen)
        tv_names = torchvision_datasets()
        self.tv_dataset = widgets.Dropdown(
            options=tv_names, value="CIFAR10" if "CIFAR10" in tv_names else tv_names[0], description="Dataset"
        )
        self.tv_dataset.add_class("tlw-tv-dataset")
        self.tv_download = widgets.Checkbox(value=False, description="Download if missing", indent=False)
        self.tv_download.add_class("tlw-tv-download")
        self.tv_max_per_class = widgets.BoundedIntText(
            value=0, min=0, max=1_000_000, description="Max per class", layout=widgets.Layout(width="190px"),
            tooltip="0 = every image; a smaller number makes large datasets quick to try",
        )  # fmt: skip
        self.tv_max_per_class.add_class("tlw-tv-max-per-class")
        tv_hint = widgets.HTML("<span style='color:#666'>Press <b>Load</b> below. Without download, "
                               "the dataset must already be in the cache folder.</span>")  # fmt: skip
        self.demo_button = widgets.Button(
            description="Load built-in demo (handwritten digits, offline)", icon="magic",
            layout=widgets.Layout(width="auto"), tooltip="scikit-learn's 8x8 digits as small images: 10 classes",
        )  # fmt: skip
        self.demo_button.add_class("tlw-demo")
        self.demo_button.on_click(self._on_demo_click)
        self.source_stack = widgets.Stack(
            [
                self.folder_chooser,
                self.archive_chooser,
                widgets.VBox([widgets.HBox([self.tv_dataset, self.tv_max_per_class, self.tv_download]), tv_hint]),
                self.demo_button,
            ],
            selected_index=0,
        )
        self.source_choice.observe(self._on_source_change, names="value")

        # ---- split and load
        self.val_fraction = widgets.FloatSlider(
            value=0.2, min=0.0, max=0.5, step=0.05, description="Validation", readout_format=".0%",
            continuous_update=False, tooltip="share of each class held out for validation",
        )  # fmt: skip
        self.val_fraction.add_class("tlw-val-fraction")
        self.seed = _tag(widgets.IntText(value=0, description="Seed", layout=widgets.Layout(width="150px")), "tlw-seed")
        self.load_button = _tag(widgets.Button(description="Load", icon="upload", button_style="primary"), "tlw-load")
        self.load_button.on_click(self._on_load_click)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="Reading",
                                            layout=widgets.Layout(display="none"))  # fmt: skip
        self.progress.add_class("tlw-progress")
        self.val_fraction.observe(self._on_split_change, names="value")
        self.seed.observe(self._on_split_change, names="value")

        # ---- report (its widgets are the panel's too)
        self.data_report = report = DataReport()
        self.summary, self.balance, self.imbalance = report.summary, report.balance, report.imbalance
        self.counts_fig, self.sizes, self.samples = report.counts_fig, report.sizes, report.samples
        self.skipped_table, self.skipped = report.skipped_table, report.skipped

        # ---- augmentation
        self.flip = widgets.Checkbox(value=False, description="Horizontal flip", indent=False)
        self.rotation = widgets.FloatSlider(value=0.0, min=0.0, max=45.0, step=1.0, description="Rotation °",
                                            continuous_update=False)  # fmt: skip
        self.random_resized_crop = widgets.Checkbox(value=False, description="Random resized crop", indent=False)
        self.color_jitter = widgets.FloatSlider(value=0.0, min=0.0, max=0.5, step=0.05, description="Colour jitter",
                                                continuous_update=False)  # fmt: skip
        for name in ("flip", "rotation", "random_resized_crop", "color_jitter"):
            control = getattr(self, name)
            control.add_class(f"tlw-aug-{name.replace('_', '-')}")
            control.observe(self._on_augment_control, names="value")
        self.preview_button = _tag(widgets.Button(description="Preview augmentation", icon="eye"), "tlw-preview-button")
        self.preview_button.on_click(self._on_preview_click)
        self.preview = _tag(widgets.HTML(), "tlw-preview")
        self.hint = _tag(widgets.HTML(), "tlw-hint")

        augment_box = widgets.VBox([
            widgets.HTML("<b>Training augmentation</b>"),
            widgets.HBox([self.flip, self.random_resized_crop]),
            widgets.HBox([self.rotation, self.color_jitter]),
            self.preview_button, self.preview,
        ])  # fmt: skip
        self.set_body(
            self.source_choice, self.source_stack,
            widgets.HBox([self.val_fraction, self.seed, self.load_button]), self.progress, self.hint,
            self.summary, self.balance, widgets.HBox([self.counts_fig, self.sizes]),
            widgets.HTML("<b>Samples</b>"), self.samples, self.skipped, augment_box,
        )  # fmt: skip

        self.observe_session(self._on_data_change, "data_version")
        self.observe_session(self._on_session_augment, "augment")
        self.observe_session(self._on_transforms_change, ["spec", "image_size"])
        self.observe_session(self._on_status_change, "status")
        self._sync_augment_controls()
        self._redraw()
        self._update_controls()

    # ------------------------------------------------------------------ loading
    @guarded
    def load(self, source: str | os.PathLike[str], **options: Any) -> Any:
        """Load ``source`` into the session with the panel's split; errors show in the panel.

        Args:
            source: a folder, an archive file, ``"torchvision:NAME"`` or ``"demo"``.
            **options: passed on to ``session.load_data`` (e.g. ``download=True``, ``max_per_class``).

        Returns:
            The scan report, or ``None`` when loading failed (the session keeps its previous data).
        """
        source = os.fspath(source)
        self.clear_error()
        with self._busy():
            report = self.session.load_data(
                source, val_fraction=float(self.val_fraction.value), seed=int(self.seed.value),
                progress=self._on_progress, **options,
            )  # fmt: skip
        self.source = source
        self._load_options = dict(options)
        return report

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        self._loading = True
        self.progress.value, self.progress.max = 0, 1
        self.progress.layout.display = None
        for b in (self.load_button, self.demo_button, self.preview_button):
            b.disabled = True
        try:
            yield
        finally:
            self._loading = False
            self.progress.layout.display = "none"
            self._update_controls()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(int(total), 1)
        self.progress.value = min(int(done), self.progress.max)

    def _on_folder_chosen(self, chooser: FileChooser) -> None:
        if chooser.selected_path:
            self.load(chooser.selected_path)

    def _on_archive_chosen(self, chooser: FileChooser) -> None:
        if not chooser.selected_filename:
            self.show_error("Choose an archive file (.zip, .tar, .tar.gz or .tgz), not a folder.")
            return
        self.load(chooser.selected)

    def _on_demo_click(self, _button: widgets.Button) -> None:
        self.load("demo")

    def _on_load_click(self, _button: widgets.Button) -> None:
        choice = self.source_choice.value
        if choice == "Folder":
            if not self.folder_chooser.selected_path:
                self.show_error("Choose a folder first (the Choose folder button above).")
                return
            self.load(self.folder_chooser.selected_path)
        elif choice == "Archive":
            self._on_archive_chosen(self.archive_chooser)
        elif choice == "torchvision":
            options: dict[str, Any] = {"download": bool(self.tv_download.value)}
            if self.tv_max_per_class.value > 0:
                options["max_per_class"] = int(self.tv_max_per_class.value)
            self.load(f"torchvision:{self.tv_dataset.value}", **options)
        else:
            self.load("demo")

    def _on_source_change(self, change: dict) -> None:
        self.source_stack.selected_index = SOURCES.index(change["new"])

    def _on_split_change(self, _change: dict) -> None:
        data = self.session.data
        if self.source is not None and data is not None and not self._loading and not _has_own_split(data):
            self.load(self.source, **self._load_options)

    # ------------------------------------------------------------------ augmentation
    def _on_augment_control(self, _change: dict) -> None:
        if not self._syncing:
            self.apply_augment()

    @guarded
    def apply_augment(self) -> None:
        """Send the augmentation controls to ``session.set_augment``."""
        try:
            self.session.set_augment(
                flip=bool(self.flip.value), rotation=float(self.rotation.value),
                random_resized_crop=bool(self.random_resized_crop.value), color_jitter=float(self.color_jitter.value),
            )  # fmt: skip
        except Exception:
            self._sync_augment_controls()  # show what the session really uses
            raise

    def _sync_augment_controls(self) -> None:
        aug = self.session.augment
        if aug is None:
            return
        self._syncing = True
        try:
            self.flip.value = bool(aug.flip)
            self.rotation.value = float(aug.rotation)
            self.random_resized_crop.value = bool(aug.random_resized_crop)
            self.color_jitter.value = min(float(aug.color_jitter), self.color_jitter.max)
        finally:
            self._syncing = False

    def _on_session_augment(self, _change: dict) -> None:
        self._sync_augment_controls()
        self._on_transforms_change(_change)

    def _on_transforms_change(self, _change: dict) -> None:
        if self._preview_shown and self.session.data is not None:
            self.show_preview()

    def _on_preview_click(self, _button: widgets.Button) -> None:
        self.show_preview()

    @guarded
    def show_preview(self, index: int = 0) -> list[Image.Image]:
        """Show ``preview_count`` augmented views of training image ``index``; returns the pictures."""
        bundle = self.session.data
        if bundle is None or not bundle.train:
            raise DataError("Load data first: the preview shows augmented views of a training image.")
        path, name, original, views = _images.augmented_views(bundle, index, self.preview_count, self.session.spec)
        self.preview_images = views
        caption = (
            f"{os.path.basename(path)} ({name}): original, then {len(views)} augmented views "
            "as the model sees them"
        )
        self.preview.value = _images.preview_strip_html(original, views, caption, size=_PREVIEW_SIZE)
        self._preview_shown = True
        return views

    # ------------------------------------------------------------------ drawing
    def _on_data_change(self, _change: dict) -> None:
        if not self._loading:
            # Loaded in code: later split changes reload that source.
            report = getattr(self.session.data, "report", None)
            self.source = getattr(report, "source", None) or None
            self._load_options = {}
        self._preview_shown = False
        self.preview_images = []
        self.preview.value = ""
        self._redraw()
        self._update_controls()

    @property
    def sample_paths(self) -> dict[str, list[str]]:
        """``{class: [paths of the sample thumbnails shown]}``."""
        return self.data_report.sample_paths

    def _redraw(self) -> None:
        self.data_report.show(self.session.data, self.samples_per_class)

    # ------------------------------------------------------------------ state
    def _on_status_change(self, _change: dict) -> None:
        self._update_controls()

    def _update_controls(self) -> None:
        training = self.session.status != Status.IDLE
        has_data = self.session.data is not None
        for w in (self.load_button, self.demo_button, self.val_fraction, self.seed,
                  self.flip, self.rotation, self.random_resized_crop, self.color_jitter):  # fmt: skip
            w.disabled = training
        own_split = has_data and _has_own_split(self.session.data)
        if own_split:
            self.val_fraction.disabled = True
        self.preview_button.disabled = not has_data
        self.preview_button.tooltip = "" if has_data else "Load data first"
        if training:
            self.hint.value = (
                "<span style='color:#a60'>Training runs: data and augmentation can change after it ends.</span>"
            )
        elif own_split:
            self.hint.value = (
                "<span style='color:#666'>This source comes with its own train/val split: "
                "the validation share does not apply.</span>"
            )
        else:
            self.hint.value = ""
