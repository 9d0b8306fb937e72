"""Replace the classifier head: see the current one, preview the new one, swap it."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..core.heads import describe_head
from ..core.session import Session
from ..core.status import Status
from ._panel import Panel

_MAX_CLASSES_SHOWN = 8


def _class_list(classes: Any) -> str:
    names = [str(c) for c in classes]
    shown = ", ".join(names[:_MAX_CLASSES_SHOWN])
    return shown + (", ..." if len(names) > _MAX_CLASSES_SHOWN else "")


class HeadEditor(Panel):
    """Show the model's classifier head and replace it with one for your classes.

    ``num_classes`` starts at the number of classes of the loaded data (and follows the
    data when it changes, unless you typed another number); without data it shows the
    current head's size. ``dropout`` adds a Dropout before the output layer, ``hidden``
    (0 = none) a hidden layer with ReLU. ``preview`` shows the current and the new head.

    ``freeze_backbone`` (checked by default): after replacing, freeze everything but the
    new head — the usual start of transfer learning, where only the new head learns from
    the pretrained features. Uncheck it to keep the current freezing (the new head is
    always trainable); the Layers panel can unfreeze stages later for fine-tuning.

    ``replace_button`` calls ``session.replace_head(num_classes, dropout, hidden)`` (then
    ``session.freeze_backbone()``); other panels follow through the session's traits.

    Args:
        session: the shared session (a new one when omitted).
        title: heading above the panel.
    """

    css_class = "tlw-head-editor"

    def __init__(self, session: Session | None = None, title: str | None = "Classifier head", **kwargs: Any) -> None:
        super().__init__(session, title, **kwargs)
        self._syncing = False
        self._classes_edited = False
        wide = {"description_width": "110px"}
        self.hint = widgets.HTML()
        self.current = widgets.HTML()
        self.current.add_class("tlw-head-current")
        self.num_classes = widgets.BoundedIntText(
            value=2, min=1, max=1_000_000, description="classes", style=wide, layout=widgets.Layout(width="220px")
        )
        self.num_classes.add_class("tlw-num-classes")
        self.dropout = widgets.FloatSlider(
            value=0.0, min=0.0, max=0.9, step=0.05, description="dropout", readout_format=".2f", style=wide
        )
        self.dropout.add_class("tlw-dropout")
        self.hidden = widgets.IntText(
            value=0, description="hidden units", tooltip="Width of a hidden layer with ReLU; 0 = none",
            style=wide, layout=widgets.Layout(width="220px"),
        )
        self.hidden.add_class("tlw-hidden")
        self.freeze_backbone = widgets.Checkbox(
            value=True, indent=False, description="then freeze the backbone (train only the new head)"
        )
        self.freeze_backbone.add_class("tlw-freeze-backbone-after")
        self.replace_button = widgets.Button(description="Replace head", button_style="primary", icon="exchange")
        self.replace_button.add_class("tlw-replace-head")
        self.preview = widgets.HTML()
        self.preview.add_class("tlw-head-preview")

        for w in (self.num_classes, self.dropout, self.hidden, self.freeze_backbone):
            w.observe(self._on_option_change, names="value")
        self.replace_button.on_click(self._on_replace_click)

        self._sizes = widgets.HBox([self.num_classes, self.hidden])
        self.set_body(
            self.hint,
            self.current,
            self._sizes,
            self.dropout,
            self.freeze_backbone,
            self.preview,
            self.replace_button,
        )
        self.observe_session(self._on_session_change, ["head", "model_version", "data_version", "classes", "status"])
        self._redraw()

    # ------------------------------------------------------------------ state
    def default_num_classes(self) -> int | None:
        """Classes of the loaded data, else the current head's size, else ``None``."""
        s = self.session
        if s.data is not None:
            return len(s.data.classes)
        if s.head is not None:
            return int(s.head.num_classes)
        return None

    def _on_session_change(self, change: dict) -> None:
        self._redraw()

    def _on_option_change(self, change: dict) -> None:
        if self._syncing:
            return
        if change["owner"] is self.num_classes:
            # Typing the default back makes the field follow the data again.
            self._classes_edited = change["new"] != self.default_num_classes()
        self._draw_preview()

    def _redraw(self) -> None:
        s = self.session
        default = self.default_num_classes()
        if default is not None and not self._classes_edited:
            self._syncing = True
            try:
                self.num_classes.value = max(self.num_classes.min, min(default, self.num_classes.max))
            finally:
                self._syncing = False
        if s.model is None or s.head is None:
            self.current.value = ""
            self.hint.value = "<i>Load a model first (Model tab, or <code>session.load_model(name)</code>).</i>"
        elif s.status != Status.IDLE:
            self.hint.value = "<i>Training runs: the head can be replaced when it ends.</i>"
        else:
            self.hint.value = ""
        if s.head is not None:
            head = s.head
            text = describe_head(head.in_features, head.num_classes, head.dropout, head.hidden, head.kind)
            self.current.value = (
                f"<div><b>Current head</b> <code>{html.escape(head.path)}</code>: {html.escape(text)}"
                f"<br><span style='color:#555'>predicts: {html.escape(_class_list(s.classes))}</span></div>"
            )
        enabled = s.model is not None and s.head is not None and s.status == Status.IDLE
        for w in (self.num_classes, self.dropout, self.hidden, self.freeze_backbone, self.replace_button):
            w.disabled = not enabled
        why = "Load a model first" if s.model is None else "Wait for training to end"
        self.replace_button.tooltip = "Replace the classifier head" if enabled else why
        self._draw_preview()

    def _draw_preview(self) -> None:
        s = self.session
        head = s.head
        if head is None:
            self.preview.value = ""
            return
        n = int(self.num_classes.value)
        hidden = int(self.hidden.value)
        new = describe_head(head.in_features, n, round(float(self.dropout.value), 4), hidden if hidden > 0 else None,
                            head.kind)
        old = describe_head(head.in_features, head.num_classes, head.dropout, head.hidden, head.kind)
        notes = []
        if n < 2:
            notes.append("⚠ a classifier needs at least 2 classes")
        if hidden < 0:
            notes.append("⚠ hidden units must be 0 (none) or a positive width")
        if s.data is not None and n == len(s.data.classes):
            target = f"for classes: {_class_list(s.data.classes)}"
        elif s.data is not None:
            target = (f"⚠ the data has {len(s.data.classes)} classes ({_class_list(s.data.classes)}); "
                      "training needs a head with that many outputs")
        else:
            target = f"no data loaded: the outputs will be named 0 … {n - 1}"
        after = ("afterwards only the new head trains" if self.freeze_backbone.value
                 else "the backbone keeps its current freezing; the new head trains")
        self.preview.value = (
            "<div style='font-family:var(--jp-code-font-family,monospace);font-size:12px'>"
            f"{html.escape(head.path)}: {html.escape(old)} &nbsp;⟶&nbsp; {html.escape(new)}</div>"
            f"<div>{html.escape(target)}</div>"
            + "".join(f"<div style='color:#a00'>{html.escape(t)}</div>" for t in notes)
            + f"<div style='color:#555'>{html.escape(after)}</div>"
        )

    # ------------------------------------------------------------------ action
    def _on_replace_click(self, _button: widgets.Button) -> None:
        self.clear_error()
        try:
            self.replace()
        except Exception as exc:  # noqa: BLE001 - a handler must never raise into the front end
            self.show_error(exc)

    def replace(self) -> None:
        """Replace the head with the options shown (what the button does).

        Raises:
            ModelError: bad options (fewer than 2 classes, negative hidden width); the model
                is left unchanged.
        """
        hidden = int(self.hidden.value)  # 0 means none here; heads.check_args words a negative width
        self.session.replace_head(
            num_classes=int(self.num_classes.value),
            dropout=round(float(self.dropout.value), 4),
            hidden=hidden or None,
        )
        if self.freeze_backbone.value:
            self.session.freeze_backbone()

    def close(self) -> None:
        """Close the panel's widgets with their Layout and style models; detach from the session."""
        if self.comm is None:  # already closed (ipywidgets calls close() again from __del__)
            return
        owned = [self.hint, self.current, self.num_classes, self.dropout, self.hidden, self.freeze_backbone,
                 self.replace_button, self.preview, self._sizes, self._title, self.error_area]
        parts = [getattr(w, attr) for w in (*owned, self) for attr in ("layout", "style") if w.has_trait(attr)]
        super().close()
        for w in (*owned, *parts):
            w.close()
