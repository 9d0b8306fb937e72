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
"""

from __future__ import annotations

import html
import weakref
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pandas as pd
from ipywidgets.widgets.widget_bool import CheckboxStyle, ToggleButtonStyle
from ipywidgets.widgets.widget_string import HTMLStyle

from ..core.errors import ModelError
from ..core.session import Session
from ..core.status import Status
from ._layer_rows import RowFormat, percent
from ._layer_rows import structure as layer_structure
from ._panel import Panel

_CSS = """<style>
.tlw-layer-table .tlw-layer-row .widget-label-basic span,
.tlw-layer-table .tlw-mono, .tlw-layer-table .tlw-mono * {
  font-family: var(--jp-code-font-family, monospace); font-size: 12px; white-space: pre;
}
</style>"""

class _Group:
    """Widgets and layer names of one stage; its rows are built on first opening."""

    def __init__(self, name: str, rows: pd.DataFrame) -> None:
        self.name = name
        self.names: list[str] = list(rows["name"])
        self.trainable_names: list[str] = [n for n, p in zip(rows["name"], rows["params"]) if p > 0]
        self.params = int(rows["params"].sum())
        self.has_head = bool(rows["is_head"].any())
        self.built = False
        self.checkboxes: tuple[widgets.Checkbox, ...] = ()
        self.toggle: widgets.ToggleButton
        self.check: widgets.Checkbox
        self.info: widgets.HTML
        self.body: widgets.VBox
        self.box: widgets.VBox


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
        self._groups: dict[str, _Group] = {}
        self._rows: dict[str, widgets.Checkbox] = {}
        self._row_names: dict[int, str] = {}
        self._group_of_widget: dict[int, _Group] = {}
        self._built_for: tuple[Any, Any] = (None, None)
        self._syncing = False
        self._has_bn = False
        self._format = RowFormat()
        # One Layout and one style object for all rows (and one per kind of group widget):
        # every widget otherwise creates two more widget models of its own.
        self._row_layout = widgets.Layout(width="auto", height="22px", margin="0 0 0 34px")
        self._row_style = CheckboxStyle()
        self._check_layout = widgets.Layout(width="auto", margin="0")
        self._toggle_layout = widgets.Layout(width="30px", height="24px", padding="0")
        self._toggle_style = ToggleButtonStyle()
        self._info_layout = widgets.Layout(margin="0 0 0 8px")
        self._info_style = HTMLStyle()
        self._box_layout = widgets.Layout(margin="0")
        self._shared = [self._row_layout, self._row_style, self._check_layout, self._toggle_layout,
                        self._toggle_style, self._info_layout, self._info_style, self._box_layout]

        self.hint = widgets.HTML()
        self.summary = widgets.HTML()
        self.summary.add_class("tlw-summary")
        self.layer_select = widgets.Dropdown(description="Up to", options=[], layout=widgets.Layout(width="320px"))
        self.layer_select.add_class("tlw-layer-select")
        self.freeze_up_to_button = self._button(
            "Freeze up to selected", "tlw-freeze-up-to",
            "Freeze every layer from the input up to and including the selected one; the rest trains.",
        )
        self.freeze_backbone_button = self._button("Freeze backbone", "tlw-freeze-backbone",
                                                   "Train only the classifier head.")
        self.unfreeze_all_button = self._button("Unfreeze all", "tlw-unfreeze-all", "Train every layer.")
        self.lr_layer = widgets.Dropdown(description="LR of", options=[], layout=widgets.Layout(width="320px"))
        self.lr_layer.add_class("tlw-lr-layer")
        self.lr_factor = widgets.FloatText(value=0.1, step=0.1, description="× base",
                                           layout=widgets.Layout(width="150px"))
        self.lr_factor.add_class("tlw-lr-factor")
        self.set_lr_button = self._button("Set LR factor", "tlw-set-lr",
                                          "Scale the learning rate of this layer or stage (0 freezes it).")
        self.bn_policy = widgets.HTML()
        self.bn_policy.add_class("tlw-bn-policy")
        self.header = widgets.HTML()
        self.header.add_class("tlw-mono")
        self.groups_box = widgets.VBox(layout=widgets.Layout(max_height="480px", overflow="auto"))
        self.groups_box.add_class("tlw-layer-groups")

        self.freeze_up_to_button.on_click(self._on_freeze_up_to_click)
        self.freeze_backbone_button.on_click(lambda _: self._apply(self.session.freeze_backbone))
        self.unfreeze_all_button.on_click(lambda _: self._apply(self.session.unfreeze_all))
        self.set_lr_button.on_click(self._on_set_lr_click)

        self.set_body(
            widgets.HTML(_CSS),
            self.hint,
            self.summary,
            widgets.HBox([self.layer_select, self.freeze_up_to_button]),
            widgets.HBox([self.freeze_backbone_button, self.unfreeze_all_button]),
            widgets.HBox([self.lr_layer, self.lr_factor, self.set_lr_button]),
            self.bn_policy,
            self.header,
            self.groups_box,
        )
        # Not `model`: load_model sets it before `head`, so the table would use the old head.
        self.observe_session(lambda change: self._sync(), ["model_version"])
        self.observe_session(self._on_flags_change, ["frozen", "lr_factors"])
        self.observe_session(self._on_status_change, ["status"])
        self._sync()

    @staticmethod
    def _button(label: str, css: str, tooltip: str) -> widgets.Button:
        button = widgets.Button(description=label, tooltip=tooltip, layout=widgets.Layout(width="auto"))
        button.add_class(css)
        return button

    # ------------------------------------------------------------------ public helpers
    @property
    def groups(self) -> list[str]:
        """Stage names in model order."""
        return list(self._groups)

    def group_checkbox(self, group: str) -> widgets.Checkbox:
        """The header checkbox that toggles a whole stage."""
        return self._group(group).check

    def expand(self, group: str, expanded: bool = True) -> None:
        """Open (building its rows if needed) or close a stage."""
        self._group(group).toggle.value = expanded

    def row_checkbox(self, name: str) -> widgets.Checkbox:
        """The checkbox of layer ``name``, building its stage's rows if needed (stays closed)."""
        if name not in self._rows:
            group = next((g for g in self._groups.values() if name in g.names), None)
            if group is None:
                known = [] if self.table is None else list(self.table["name"][:3])
                raise ModelError(
                    f"No layer named {name!r} in the table (it has e.g. {', '.join(known) or 'nothing'})."
                )
            self._build_rows(group)
        return self._rows[name]

    # ------------------------------------------------------------------ building
    def _group(self, group: str) -> _Group:
        try:
            return self._groups[group]
        except KeyError:
            raise ModelError(f"No stage named {group!r}; stages are: {', '.join(self._groups)}.") from None

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
        old = list(self._groups.values())
        self._groups, self._rows, self._row_names, self._group_of_widget = {}, {}, {}, {}
        self.groups_box.children = ()
        for group in old:
            self._close_group(group)
        if model is None:
            self.table, self._built_for, self._format = None, (None, None), RowFormat()
            self.layer_select.options, self.lr_layer.options = [], []
            return
        table = self.table = self.session.layers()
        self._built_for = (weakref.ref(model), structure)
        self._format = RowFormat(table)
        heading = self._format.heading()
        self.header.value = f"<div class='tlw-mono' style='margin-left:62px;color:#555'>{html.escape(heading)}</div>"
        for gname, rows in table.groupby("group", sort=False):
            group = _Group(str(gname), rows)
            self._make_group(group)
            self._groups[group.name] = group
        self.groups_box.children = tuple(g.box for g in self._groups.values())
        self._update_selects(table)
        self._has_bn = bool(self._format.batchnorm_layers())
        for group in self._groups.values():
            if group.has_head:
                self.expand(group.name)

    def _make_group(self, group: _Group) -> None:
        group.toggle = widgets.ToggleButton(value=False, icon="caret-right",
                                            tooltip=f"Show the layers of {group.name}",
                                            layout=self._toggle_layout, style=self._toggle_style)
        group.check = widgets.Checkbox(value=True, description=group.name, indent=False,
                                       tooltip=f"Train all layers of {group.name}",
                                       layout=self._check_layout, style=self._row_style)
        group.check.add_class("tlw-group-check")
        group.info = widgets.HTML(layout=self._info_layout, style=self._info_style)
        group.body = widgets.VBox(layout=self._box_layout)
        header = widgets.HBox([group.toggle, group.check, group.info], layout=self._box_layout)
        group.box = widgets.VBox([header, group.body], layout=self._box_layout)
        group.box.add_class("tlw-layer-group")
        self._group_of_widget[id(group.toggle)] = group
        self._group_of_widget[id(group.check)] = group
        group.toggle.observe(self._on_group_toggle, names="value")
        group.check.observe(self._on_group_check, names="value")
        group.check.disabled = not group.trainable_names

    def _close_group(self, group: _Group) -> None:
        header = group.box.children[0]
        for w in (*group.checkboxes, group.toggle, group.check, group.info, header, group.body, group.box):
            w.close()

    def _build_rows(self, group: _Group) -> None:
        if group.built:
            return
        frozen, factors = set(self.session.frozen), self.session.lr_factors
        busy = self.session.status != Status.IDLE
        checkboxes = []
        for name in group.names:
            cb = widgets.Checkbox(
                value=name not in frozen,
                description=self._format.row(name, frozen, factors),
                indent=False,
                disabled=busy or self._format.params(name) == 0,
                layout=self._row_layout,
                style=self._row_style,
                _dom_classes=("tlw-layer-row",),
            )
            cb.observe(self._on_row_change, names="value")
            self._rows[name] = cb
            self._row_names[id(cb)] = name
            checkboxes.append(cb)
        group.checkboxes = tuple(checkboxes)
        group.body.children = group.checkboxes if group.toggle.value else ()
        group.built = True

    def _update_selects(self, table: pd.DataFrame) -> None:
        names = [str(n) for n, p in zip(table["name"], table["params"]) if p > 0]
        previous = self.layer_select.value
        self.layer_select.options = names
        # ipywidgets 8 leaves a Dropdown blank (value None) when its options are replaced,
        # which the browser shows as an empty box: keep the choice, else take the first.
        if previous in names:
            self.layer_select.value = previous
        elif names:
            self.layer_select.value = names[0]
        options = []
        for group in self._groups.values():
            if group.trainable_names != [group.name]:
                options.append((f"{group.name} (whole stage)", group.name))
        options += [(n, n) for n in names]
        previous = self.lr_layer.value
        self.lr_layer.options = options
        if previous in dict(options).values():
            self.lr_layer.value = previous
        elif options:
            self.lr_layer.value = options[0][1]

    # ------------------------------------------------------------------ redrawing
    def _on_flags_change(self, change: dict) -> None:
        if self.table is not None:
            self._refresh_flags()

    def _refresh_flags(self) -> None:
        """Redraw checkboxes, counts and the summary from ``session.frozen`` and ``lr_factors``."""
        if self.table is None or self.session.model is None:
            return
        frozen, factors = set(self.session.frozen), self.session.lr_factors
        self._syncing = True  # set values without calling back into the session
        try:
            for name, cb in self._rows.items():
                cb.value = name not in frozen
                cb.description = self._format.row(name, frozen, factors)
            for group in self._groups.values():
                live = [n for n in group.trainable_names if n not in frozen]
                group.check.value = bool(live) and len(live) == len(group.trainable_names)
                group.info.value = (
                    f"<span class='tlw-mono' style='color:#555'>{len(group.names)} layers · "
                    f"{group.params:,} params · "
                    f"{len(live)}/{len(group.trainable_names)} trainable"
                    + (" · head" if group.has_head else "") + "</span>"
                )
        finally:
            self._syncing = False
        trainable, total = self.session.trainable_params()
        self.summary.value = f"<b>trainable parameters: {trainable:,} of {total:,} ({percent(trainable, total)})</b>"
        self._draw_bn_policy(frozen)
        self.hint.value = ""
        self._set_enabled(self.session.status == Status.IDLE)

    def _draw_bn_policy(self, frozen: set[str]) -> None:
        if not self._has_bn:
            self.bn_policy.value = ""
            return
        bn = self._format.batchnorm_layers()
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
        for w in (self.layer_select, self.freeze_up_to_button, self.freeze_backbone_button,
                  self.unfreeze_all_button, self.lr_layer, self.lr_factor, self.set_lr_button):
            w.disabled = not enabled
        for group in self._groups.values():
            group.check.disabled = not enabled or not group.trainable_names
        for name, cb in self._rows.items():
            cb.disabled = not enabled or self._format.params(name) == 0

    # ------------------------------------------------------------------ handlers
    def _apply(self, action: Callable[[], Any]) -> None:
        """Run a session change; on failure show why and redraw the flags as they really are."""
        self.clear_error()
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - a handler must never raise into the front end
            self.show_error(exc)
            self._refresh_flags()

    def _on_row_change(self, change: dict) -> None:
        if self._syncing:
            return
        name = self._row_names.get(id(change["owner"]))
        if name is None:
            return
        if change["new"]:
            self._apply(lambda: self.session.unfreeze([name]))
        else:
            self._apply(lambda: self.session.freeze([name]))

    def _on_group_check(self, change: dict) -> None:
        if self._syncing:
            return
        group = self._group_of_widget.get(id(change["owner"]))
        if group is None or not group.trainable_names:
            return
        names = list(group.trainable_names)
        if change["new"]:
            self._apply(lambda: self.session.unfreeze(names))
        else:
            self._apply(lambda: self.session.freeze(names))

    def _on_group_toggle(self, change: dict) -> None:
        group = self._group_of_widget.get(id(change["owner"]))
        if group is None:
            return
        if change["new"]:
            self._build_rows(group)
            group.body.children = group.checkboxes
        else:
            group.body.children = ()
        group.toggle.icon = "caret-down" if change["new"] else "caret-right"

    def _on_freeze_up_to_click(self, _button: widgets.Button) -> None:
        name = self.layer_select.value
        if not name:
            self.show_error("Choose a layer in the list first.")
            return
        self._apply(lambda: self.session.freeze_up_to(name))

    def _on_set_lr_click(self, _button: widgets.Button) -> None:
        name, factor = self.lr_layer.value, float(self.lr_factor.value)
        if not name:
            self.show_error("Choose a layer or stage in the list first.")
            return
        if not factor >= 0 or factor == float("inf"):
            self.show_error(f"LR factor {factor:g} is not allowed: use a number >= 0 (0 freezes, 1 = base rate).")
            return
        self._apply(lambda: self.session.set_lr_factor(name, factor))

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close every widget of the panel (rows, layouts, styles) and detach from the session."""
        if self.comm is None:  # already closed (ipywidgets calls close() again from __del__)
            return
        for group in self._groups.values():
            self._close_group(group)
        self._groups, self._rows, self._row_names, self._group_of_widget = {}, {}, {}, {}
        super().close()
        for w in self._shared:
            w.close()

