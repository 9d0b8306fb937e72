"""Views of a trained model: accuracy, confusion matrix, per-class table, mistakes, predictions.

:class:`Assessment` draws :attr:`Session.last_eval` whenever it changes, from whichever
thread changed it, so it only ever *sets values* of widgets built in ``__init__``
(HTML strings and FigureWidget data).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image, UnidentifiedImageError

from ..core.errors import BusyError, DataError
from ..core.images import load_image
from ..core.session import Session
from ..core.status import Status
from .cleaner import Cleaner
from .insight import cell_images, class_name, drilldown_html, gradcam_html

_THUMB = 96  # pixels, longest side of a misclassified-image thumbnail
_MAX_MISTAKES = 12
_BAR = "#4c78a8"


def _class_name(value: Any, classes: Sequence[str]) -> str:
    """Class name for a label that may be an index or already a name."""
    if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(classes):
        return str(classes[int(value)])
    return str(value)


def _thumbnail_uri(image: Image.Image, size: int = _THUMB) -> str:
    image = image.copy()
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(text: str) -> str:
    return f"<div style='color:#777;font-style:italic'>{html.escape(text)}</div>"


def accuracy_html(result: Any) -> str:
    """One line: accuracy, loss and the number of images evaluated."""
    n = int(len(result.predictions)) if getattr(result, "predictions", None) is not None else 0
    return (
        f"<b>Accuracy {result.accuracy:.1%}</b> "
        f"<span style='color:#555'>(loss {result.loss:.3f}, {n} images)</span>"
    )


_PER_CLASS_CSS = (
    "<style>.tlw-per-class table.tlw-table{border-collapse:collapse}"
    ".tlw-per-class table.tlw-table th,.tlw-per-class table.tlw-table td{padding:1px 10px;text-align:right}"
    ".tlw-per-class table.tlw-table td:first-child,.tlw-per-class table.tlw-table th:first-child{text-align:left}"
    "</style>"
)


def per_class_html(per_class: pd.DataFrame) -> str:
    """The per-class metrics as an HTML table (an HTML table renders far faster than widgets)."""
    table = per_class.copy()
    for col in ("precision", "recall", "f1"):
        if col in table.columns:
            table[col] = table[col].map(lambda v: f"{v:.1%}" if pd.notna(v) else "")
    # The class names as the first column, so the header is one row; numbers right-aligned.
    table = table.rename_axis("class").reset_index()
    return _PER_CLASS_CSS + table.to_html(classes="tlw-table", border=0, escape=True, index=False, justify="right")


def mistakes_html(predictions: pd.DataFrame, classes: Sequence[str], limit: int = _MAX_MISTAKES) -> str:
    """Thumbnails of the worst misclassified images (highest loss first)."""
    if predictions is None or len(predictions) == 0:
        return _empty("No images evaluated.")
    true = predictions["true"].map(lambda v: _class_name(v, classes))
    pred = predictions["pred"].map(lambda v: _class_name(v, classes))
    wrong = predictions[(true != pred).to_numpy()]
    if len(wrong) == 0:
        return _empty("No misclassified images.")
    wrong = wrong.sort_values("loss", ascending=False).head(limit)
    cells = []
    for _, row in wrong.iterrows():
        path = str(row["path"])
        try:
            img = f"<img src='{_thumbnail_uri(load_image(path))}' style='max-width:{_THUMB}px;max-height:{_THUMB}px'>"
        except Exception:  # noqa: BLE001 - a missing file must not hide the other mistakes
            img = f"<div style='width:{_THUMB}px;height:{_THUMB}px;background:#eee'></div>"
        t, p = _class_name(row["true"], classes), _class_name(row["pred"], classes)
        cells.append(
            f"<div title='{html.escape(path, quote=True)}' style='display:inline-block;margin:4px;"
            f"width:{_THUMB + 24}px;vertical-align:top;font-size:11px;text-align:center'>{img}<br>"
            f"true <b>{html.escape(t)}</b><br>pred <b style='color:#a00'>{html.escape(p)}</b> "
            f"{float(row['confidence']):.0%}<br><span style='color:#777'>loss {float(row['loss']):.2f}</span></div>"
        )
    more = len(predictions[(true != pred).to_numpy()]) - len(wrong)
    tail = f"<div style='color:#777'>and {more} more</div>" if more > 0 else ""
    return "<div>" + "".join(cells) + "</div>" + tail


def predictions_html(frame: pd.DataFrame) -> str:
    """Top-k classes per image as horizontal probability bars."""
    if frame is None or len(frame) == 0:
        return _empty("No predictions.")
    blocks = []
    for name, rows in frame.groupby("image", sort=False):
        bars = []
        for _, row in rows.sort_values("rank").iterrows():
            p = float(row["probability"])
            bars.append(
                "<div style='display:flex;align-items:center;gap:6px;font-size:12px'>"
                f"<span style='width:140px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap'>"
                f"{html.escape(str(row['class']))}</span>"
                f"<span style='display:inline-block;background:{_BAR};height:12px;"
                f"width:{max(p, 0.0) * 200:.0f}px'></span>"
                f"<span>{p:.1%}</span></div>"
            )
        title = f"<div style='font-weight:bold'>{html.escape(str(name))}</div>"
        blocks.append(f"<div style='margin:4px 0'>{title}{''.join(bars)}</div>")
    return "".join(blocks)


class Assessment(widgets.VBox):
    """Results of :meth:`Session.evaluate` and a "Predict" area for uploaded images.

    Args:
        session: the session whose ``last_eval`` is drawn.
        on_error: called with an exception a handler raised (the owning panel's ``show_error``).
        on_clear_error: called when an action succeeds (the owning panel's ``clear_error``).

    Attributes:
        accuracy_label: HTML line with accuracy and loss (``tlw-accuracy``).
        confusion_fig: FigureWidget heatmap of the confusion matrix, counts annotated (``tlw-confusion``).
        per_class_table: HTML table of precision, recall, f1, support (``tlw-per-class``).
        misclassified: HTML thumbnails of the worst mistakes (``tlw-misclassified``).
        upload: FileUpload for images to classify (``tlw-upload``).
        predictions: HTML bars of the top-3 classes per uploaded image (``tlw-predictions``).
        drilldown: HTML images of the confusion cell last clicked, see :meth:`drill_down` (``tlw-drilldown``).
        gradcam_view: Grad-CAM overlays of the uploaded images for their top class (``tlw-gradcam``).
        eval_folder: Text with a folder of held-out images; ``eval_button`` evaluates on it.
        clean_button: opens the :class:`Cleaner` (``cleaner``) in ``clean_area`` (``tlw-open-cleaner``).
    """

    def __init__(
        self,
        session: Session,
        on_error: Callable[[BaseException | str], None] | None = None,
        on_clear_error: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self._on_error = on_error
        self._on_clear_error = on_clear_error
        self.accuracy_label = widgets.HTML(_empty("Not evaluated yet: train, or press Evaluate."))
        self.accuracy_label.add_class("tlw-accuracy")
        self.confusion_fig = go.FigureWidget(
            go.Heatmap(
                z=np.zeros((0, 0)), x=[], y=[], colorscale="Blues", texttemplate="%{z}", showscale=False,
                hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>",
            )
        )
        self.confusion_fig.update_layout(
            height=320, width=380, margin={"l": 90, "r": 10, "t": 30, "b": 80}, title_text="Confusion matrix",
            xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed", template="plotly_white",
        )
        self.confusion_fig.add_class("tlw-confusion")
        self.confusion_fig.data[0].on_click(self._on_confusion_click)
        self.drilldown = widgets.HTML(_empty("Click a cell of the confusion matrix to see its images."))
        self.drilldown.add_class("tlw-drilldown")
        self.gradcam_view = widgets.HTML("")
        self.gradcam_view.add_class("tlw-gradcam")
        self.per_class_table = widgets.HTML("")
        self.per_class_table.add_class("tlw-per-class")
        self.misclassified = widgets.HTML("")
        self.misclassified.add_class("tlw-misclassified")
        self.eval_folder = widgets.Text(placeholder="folder of held-out images (class sub-folders)",
                                        layout=widgets.Layout(width="340px"))
        self.eval_button = widgets.Button(description="Evaluate", icon="check",
                                          tooltip="Evaluate on the validation split, or on the folder when given")
        self.eval_button.add_class("tlw-evaluate")
        self.eval_button.on_click(lambda _: self._run(self.evaluate, self.eval_folder.value.strip() or None))
        self.upload = widgets.FileUpload(accept="image/*", multiple=True, description="Predict images")
        self.upload.add_class("tlw-upload")
        self.upload.observe(self._on_upload_value, names="value")
        self.predictions = widgets.HTML("")
        self.predictions.add_class("tlw-predictions")
        self.cleaner: Cleaner | None = None  # made by the first press of clean_button
        self.clean_button = widgets.Button(description="Clean the data", icon="filter",
                                           tooltip="Pages of likely wrong labels and near-duplicates to keep, move "
                                                   "or remove")
        self.clean_button.add_class("tlw-open-cleaner")
        self.clean_button.on_click(lambda _: self._run(self.open_cleaner))
        self.clean_area = widgets.VBox()
        super().__init__(
            children=(
                widgets.HBox([self.eval_folder, self.eval_button]),
                self.accuracy_label,
                widgets.HBox([self.confusion_fig, self.per_class_table]),
                self.drilldown,
                widgets.HTML("<b>Misclassified (worst first)</b>"),
                self.misclassified,
                widgets.HTML("<b>Predict</b>"),
                self.upload,
                self.predictions,
                self.gradcam_view,
                self.clean_button,
                self.clean_area,
            )
        )
        self.add_class("tlw-assessment")
        session.observe(self._on_session_last_eval, names="last_eval")
        self._observing = True
        self.show(session.last_eval)

    # ------------------------------------------------------------------ drawing
    def show(self, result: Any) -> None:
        """Draw an :class:`~tlwidgets.core.evaluation.EvalResult` (``None`` clears)."""
        if result is None:
            self.accuracy_label.value = _empty("Not evaluated yet: train, or press Evaluate.")
            with self.confusion_fig.batch_update():
                self.confusion_fig.data[0].update(z=np.zeros((0, 0)), x=[], y=[])
            self.per_class_table.value = ""
            self.misclassified.value = ""
            return
        classes = list(self.session.classes)
        confusion = result.confusion
        z = np.asarray(confusion.to_numpy(), dtype=np.int64)
        self.accuracy_label.value = accuracy_html(result)
        with self.confusion_fig.batch_update():
            self.confusion_fig.data[0].update(
                z=z, x=[str(c) for c in confusion.columns], y=[str(c) for c in confusion.index], zmin=0,
                zmax=max(int(z.max()) if z.size else 1, 1),
            )
        self.per_class_table.value = per_class_html(result.per_class)
        self.misclassified.value = mistakes_html(result.predictions, classes)
        self.drilldown.value = _empty("Click a cell of the confusion matrix to see its images.")

    def _on_session_last_eval(self, change: dict) -> None:
        # Runs in the thread that evaluated (the training thread after a run): values only.
        self._run(self.show, change["new"], clear=False)

    def close(self) -> None:
        """Stop observing the session and close the widgets (safe to call twice)."""
        if self._observing:
            self._observing = False
            self.session.unobserve(self._on_session_last_eval, names="last_eval")
            self.upload.unobserve(self._on_upload_value, names="value")
        for child in self.children:
            for grandchild in getattr(child, "children", ()):
                grandchild.close()
            child.close()
        super().close()

    def open_cleaner(self) -> Cleaner:
        """Show the :class:`Cleaner` of this session below the assessment (made once)."""
        if self.cleaner is None:
            self.cleaner = Cleaner(self.session)
            self.clean_area.children = (self.cleaner,)
        return self.cleaner

    # ------------------------------------------------------------------ actions
    def _run(self, action: Callable[..., Any], *args: Any, clear: bool = True) -> Any:
        try:
            out = action(*args)
        except Exception as exc:  # noqa: BLE001 - handler errors go to the panel's error area
            if self._on_error is None:
                raise
            self._on_error(exc)
            return None
        if clear and self._on_clear_error is not None:
            self._on_clear_error()
        return out

    def _require_idle(self, what: str) -> None:
        if self.session.status != Status.IDLE:
            raise BusyError(f"Cannot {what} while training runs: wait for it, or press Stop.")

    def evaluate(self, folder: str | None = None) -> Any:
        """Evaluate on the validation split (or ``folder``); the views redraw from ``last_eval``."""
        self._require_idle("evaluate")
        return self.session.evaluate(folder)  # the last_eval observer draws it

    def predict_files(self, files: Iterable[tuple[str, bytes]], k: int = 3) -> pd.DataFrame:
        """Classify image files given as ``(name, bytes)`` and show the top-``k`` classes.

        Returns:
            One row per image and rank: image (the file name), rank, class, probability.
        """
        self._require_idle("predict")
        names: list[str] = []
        images: list[Image.Image] = []
        for name, content in files:
            try:
                with Image.open(io.BytesIO(bytes(content))) as im:
                    im.load()
                    images.append(load_image(im))
            except Exception as exc:  # noqa: BLE001 - name the file in plain words
                reason = "not a known image format" if isinstance(exc, UnidentifiedImageError) else str(exc)
                raise DataError(f"Cannot read {name!r} as an image ({reason}); upload a JPEG or PNG file.") from exc
            names.append(str(name))
        if not images:
            self.predictions.value = _empty("No images given.")
            return pd.DataFrame(columns=["image", "rank", "class", "probability"])
        frame = self.session.predict(images, k=k).copy()
        if "image" in frame.columns:
            frame["image"] = frame["image"].map(
                lambda i: names[int(i)] if isinstance(i, (int, np.integer)) and 0 <= int(i) < len(names) else i
            )
        self.predictions.value = predictions_html(frame)
        self.gradcam_view.value = gradcam_html(self.session, images, names)
        return frame

    def drill_down(self, true_class: Any, pred_class: Any) -> pd.DataFrame:
        """Show the images of one confusion cell (classes by name or index), highest loss first.

        Returns:
            Those rows of ``session.last_eval.predictions``: path, true, pred, confidence, loss.
        """
        result = self.session.last_eval
        if result is None:
            raise DataError("Nothing evaluated yet: train, or press Evaluate, then click a cell.")
        classes = [str(c) for c in result.confusion.columns]
        true_name, pred_name = class_name(true_class, classes), class_name(pred_class, classes)
        unknown = [c for c in (true_name, pred_name) if c not in classes]
        if unknown:
            raise DataError(f"Unknown class {unknown[0]!r}; the classes are {', '.join(classes)}.")
        rows = cell_images(result.predictions, true_name, pred_name)
        self.drilldown.value = drilldown_html(rows, true_name, pred_name)
        return rows

    def _on_confusion_click(self, trace: Any, points: Any, state: Any) -> None:
        # x is the predicted class, y the true class (see the heatmap's hovertemplate)
        if points is not None and points.xs and points.ys:
            self._run(self.drill_down, points.ys[0], points.xs[0])

    def _on_upload_value(self, change: dict) -> None:
        files = [(f["name"], bytes(f["content"])) for f in change["new"] or ()]
        if files:
            self._run(self.predict_files, files)
