"""Choose which layers train: one row per layer, grouped by stage, with freezing shortcuts.

Rendering a few hundred rows is the hard part. A grid of several widgets per row
(Checkbox + Labels) makes thousands of widget models and takes seconds to draw, so:

* layers are grouped by top-level stage (``layer3``, ``features.4``); each group has a
  header with a caret to open it, a stage-level "trainable" Checkbox and its counts;
* a group's rows are built only when it is first opened (the head's group opens at
  once), and each row is ONE Checkbox whose monospace description holds name, type,
  output shape, parameters and LR factor; all rows share one Layout and one style;
* when the model changes, every old row and group widget is closed (ipywidgets keeps
  widgets alive until ``close()``); when only the frozen set changes, existing
  checkboxes get new values and nothing is rebuilt.

The panel owns its parts: the stages and their rows (``_layer_groups.py``, row text in
``_layer_rows.py``) and the freezing actions (``_freeze_actions.py``); this module decides
when to rebuild or redraw, and shows the summary, the BatchNorm line and the hints.
"""

from __future__ import annotations

import html
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ..core.errors import ModelError
from ..core.session import Session
from ..core.status import Status
from ._freeze_actions import FreezeActions
from ._layer_groups import StageGroup, StageGroups
from ._layer_rows import RowFormat, percent
from ._layer_rows import structure as layer_structure
from ._panel import Panel

_CSS = """<style>
.tlw-layer-table .tlw-layer-row .widget-label-basic span,
.tlw-layer-table .tlw-mono, .tlw-layer-table .tlw-mono * {
  font-family: var(--jp-code-font-family, monospace); font-size: 12px; white-space: pre;
}
</style>"""


class LayerTable(Panel):
    """Freeze and unfreeze layers or whole stages, set per-layer learning-rate factors.

    A checked box means *trainable*. Unchecking a row calls ``session.freeze([name])``,
    checking it ``session.unfreeze([name])``; a stage's header checkbox does the same for
    all its layers. Changes made in code (``session.freeze_up_to("layer2")``) show at once.

    Public widgets: ``summary`` (trainable parameters), ``layer_select`` +
    ``freeze_up_to_button``, ``freeze_backbone_button``, ``unfreeze_all_button``,
    ``lr_layer`` + ``lr_factor`` + ``set_lr_button``, ``bn_policy`` (the BatchNorm rule,
    an information line: frozen BatchNorm layers keep their statistics), ``groups_box``.
    ``table`` is the layer DataFrame currently shown (``session.layers()``).

    Args:
        session: the shared session (a new one when omitted).
        title: heading above the panel.
    """

    css_class = "tlw-layer-table"

    def __init__(self, session: Session | None = None, title: str | None = "Layers to train", **kwargs: Any) -> None:
        super().__init__(session, title, **kwargs)
        self.table: pd.DataFrame | None = None
        self._built_for: tuple[Any, Any] = (None, None)
        self._has_bn = False

        self.hint = widgets.HTML()
        self.summary = widgets.HTML()
        self.summary.add_class("tlw-summary")
        self._actions = FreezeActions(self.session, apply=self._apply, show_error=self.show_error)
        self.layer_select, self.freeze_up_to_button = self._actions.layer_select, self._actions.freeze_up_to_button
        self.freeze_backbone_button = self._actions.freeze_backbone_button
        self.unfreeze_all_button = self._actions.unfreeze_all_button
        self.lr_layer, self.lr_factor = self._actions.lr_layer, self._actions.lr_factor
        self.set_lr_button = self._actions.set_lr_button
        self.bn_policy = widgets.HTML()
        self.bn_policy.add_class("tlw-bn-policy")
        self.header = widgets.HTML()
        self.header.add_class("tlw-mono")
        self._stages = StageGroups(self.session, on_change=self._actions.set_trainable)
        self.groups_box = self._stages.box

        self.set_body(
            widgets.HTML(_CSS),
            self.hint,
            self.summary,
            *self._actions.rows(),
            self.bn_policy,
            self.header,
            self.groups_box,
        )
        # Not `model`: load_model sets it before `head`, so the table would use the old head.
        self.observe_session(lambda change: self._sync(), ["model_version"])
        self.observe_session(self._on_flags_change, ["frozen", "lr_factors"])
        self.observe_session(self._on_status_change, ["status"])
        self._sync()

    # ------------------------------------------------------------------ public helpers
    @property
    def groups(self) -> list[str]:
        """Stage names in model order."""
        return list(self._stages.groups)

    @property
    def _groups(self) -> dict[str, StageGroup]:
        """The stages by name (their widgets), in model order."""
        return self._stages.groups

    @property
    def _rows(self) -> dict[str, widgets.Checkbox]:
        """The row checkboxes built so far, by layer name."""
        return self._stages.rows

    def group_checkbox(self, group: str) -> widgets.Checkbox:
        """The header checkbox that toggles a whole stage."""
        return self._group(group).check

    def expand(self, group: str, expanded: bool = True) -> None:
        """Open (building its rows if needed) or close a stage."""
        self._group(group).toggle.value = expanded

    def row_checkbox(self, name: str) -> widgets.Checkbox:
        """The checkbox of layer ``name``, building its stage's rows if needed (stays closed)."""
        if name not in self._stages.rows:
            group = next((g for g in self._stages.groups.values() if name in g.names), None)
            if group is None:
                known = [] if self.table is None else list(self.table["name"][:3])
                raise ModelError(
                    f"No layer named {name!r} in the table (it has e.g. {', '.join(known) or 'nothing'})."
                )
            self._stages.build_rows(group)
        return self._stages.rows[name]

    # ------------------------------------------------------------------ building
    def _group(self, group: str) -> StageGroup:
        try:
            return self._stages.groups[group]
        except KeyError:
            raise ModelError(f"No stage named {group!r}; stages are: {', '.join(self._stages.groups)}.") from None

    def _sync(self) -> None:
        """Rebuild when the model or its layers changed; otherwise only redraw the flags."""
        model = self.session.model
        if model is None:
            if self._built_for[0] is not None:
                self._rebuild(None)
            self._draw_empty()
            return
        built_model, built_structure = self._built_for
        structure = layer_structure(model)
        if built_model is None or built_model() is not model or built_structure != structure:
            self._rebuild(model, structure)
        self._refresh_flags()

    def _draw_empty(self) -> None:
        self.hint.value = "<i>Load a model first (Model tab, or <code>session.load_model(name)</code>).</i>"
        self.summary.value = ""
        self.bn_policy.value = ""
        self.header.value = ""
        self._set_enabled(False)

    def _rebuild(self, model: Any, structure: Any = None) -> None:
        self._stages.clear()
        if model is None:
            self.table, self._built_for, self._stages.format = None, (None, None), RowFormat()
            self._actions.clear_options()
            return
        table = self.table = self.session.layers()
        self._built_for = (weakref.ref(model), structure)
        self._stages.build(table)
        heading = self._stages.format.heading()
        self.header.value = f"<div class='tlw-mono' style='margin-left:62px;color:#555'>{html.escape(heading)}</div>"
        self._actions.update_selects(table, self._stages.groups.values())
        self._has_bn = bool(self._stages.format.batchnorm_layers())
        for group in self._stages.groups.values():
            if group.has_head:
                self.expand(group.name)

    # ------------------------------------------------------------------ redrawing
    def _on_flags_change(self, change: dict) -> None:
        if self.table is not None:
            self._refresh_flags()

    def _refresh_flags(self) -> None:
        """Redraw checkboxes, counts and the summary from ``session.frozen`` and ``lr_factors``."""
        if self.table is None or self.session.model is None:
            return
        frozen, factors = set(self.session.frozen), self.session.lr_factors
        self._stages.show_flags(frozen, factors)  # sets values without calling back into the session
        trainable, total = self.session.trainable_params()
        self.summary.value = f"<b>trainable parameters: {trainable:,} of {total:,} ({percent(trainable, total)})</b>"
        self._draw_bn_policy(frozen)
        self.hint.value = ""
        self._set_enabled(self.session.status == Status.IDLE)

    def _draw_bn_policy(self, frozen: set[str]) -> None:
        if not self._has_bn:
            self.bn_policy.value = ""
            return
        bn = self._stages.format.batchnorm_layers()
        n_frozen = sum(n in frozen for n in bn)
        # The core has a single BatchNorm rule (layers.set_bn_eval, applied by the trainer),
        # so this is information, not a control.
        self.bn_policy.value = (
            "<span style='color:#555'>BatchNorm: frozen BatchNorm layers keep their stored statistics "
            f"(eval mode while training); trainable ones update them. Now {n_frozen} of {len(bn)} frozen.</span>"
        )

    def _on_status_change(self, change: dict) -> None:
        self._set_enabled(self.session.model is not None and self.session.status == Status.IDLE)
        if self.session.status != Status.IDLE:
            self.hint.value = "<i>Training runs: freezing is locked until it ends.</i>"
        elif self.session.model is not None:
            self.hint.value = ""

    def _set_enabled(self, enabled: bool) -> None:
        self._actions.set_enabled(enabled)
        self._stages.set_enabled(enabled)

    # ------------------------------------------------------------------ handlers
    def _apply(self, action: Callable[[], Any]) -> None:
        """Run a session change; on failure show why and redraw the flags as they really are."""
        self.clear_error()
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - a handler must never raise into the front end
            self.show_error(exc)
            self._refresh_flags()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close every widget of the panel (rows, layouts, styles) and detach from the session."""
        if self.comm is None:  # already closed (ipywidgets calls close() again from __del__)
            return
        self._stages.close_groups()
        super().close()
        self._stages.close_shared()
