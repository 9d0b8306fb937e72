"""The layer table's stages: one group per top-level stage, its rows built when it first opens.

Each group has a header (a caret to open it, a stage-level "trainable" Checkbox and its
counts) and, once opened, one row per layer: ONE Checkbox whose monospace description
(:class:`~tlwidgets.widgets._layer_rows.RowFormat`) holds name, type, output shape,
parameters and LR factor. All rows share one Layout and one style, and so does each kind
of header widget: every widget otherwise creates two more widget models of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ipywidgets as widgets
import pandas as pd
from ipywidgets.widgets.widget_bool import CheckboxStyle, ToggleButtonStyle
from ipywidgets.widgets.widget_string import HTMLStyle

from ..core.session import Session
from ..core.status import Status
from ._layer_rows import RowFormat


class StageGroup:
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


class StageGroups:
    """The stages of the layer table shown, in model order, inside ``box``.

    Args:
        session: the shared session (read for the frozen set, LR factors and status).
        on_change: called as ``on_change(names, trainable)`` when a row or a stage checkbox is
            ticked (``trainable=True``) or unticked by the user, never while flags are redrawn.

    Attributes:
        box: the VBox of the stages (``tlw-layer-groups``).
        groups: :class:`StageGroup` by stage name, in model order.
        rows: the Checkbox of each layer whose rows are built, by layer name.
        format: the :class:`RowFormat` of the table shown.
    """

    def __init__(self, session: Session, on_change: Callable[[list[str], bool], Any]) -> None:
        self.session = session
        self._on_change = on_change
        self.groups: dict[str, StageGroup] = {}
        self.rows: dict[str, widgets.Checkbox] = {}
        self._row_names: dict[int, str] = {}
        self._group_of_widget: dict[int, StageGroup] = {}
        self._syncing = False
        self.format = RowFormat()
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
        self.box = widgets.VBox(layout=widgets.Layout(max_height="480px", overflow="auto"))
        self.box.add_class("tlw-layer-groups")

    # ------------------------------------------------------------------ building
    def clear(self) -> None:
        """Close every stage and row widget (ipywidgets keeps widgets alive until ``close()``)."""
        old = list(self.groups.values())
        self._forget()
        self.box.children = ()
        for group in old:
            self._close_group(group)

    def build(self, table: pd.DataFrame) -> None:
        """One closed stage per ``group`` of ``table`` (a ``session.layers()`` DataFrame)."""
        self.format = RowFormat(table)
        for gname, rows in table.groupby("group", sort=False):
            group = StageGroup(str(gname), rows)
            self._make_group(group)
            self.groups[group.name] = group
        self.box.children = tuple(g.box for g in self.groups.values())

    def _make_group(self, group: StageGroup) -> None:
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

    def _close_group(self, group: StageGroup) -> None:
        header = group.box.children[0]
        for w in (*group.checkboxes, group.toggle, group.check, group.info, header, group.body, group.box):
            w.close()

    def build_rows(self, group: StageGroup) -> None:
        """Build the rows of ``group`` (once); they show when the stage is open."""
        if group.built:
            return
        frozen, factors = set(self.session.frozen), self.session.lr_factors
        busy = self.session.status != Status.IDLE
        checkboxes = []
        for name in group.names:
            cb = widgets.Checkbox(
                value=name not in frozen,
                description=self.format.row(name, frozen, factors),
                indent=False,
                disabled=busy or self.format.params(name) == 0,
                layout=self._row_layout,
                style=self._row_style,
                _dom_classes=("tlw-layer-row",),
            )
            cb.observe(self._on_row_change, names="value")
            self.rows[name] = cb
            self._row_names[id(cb)] = name
            checkboxes.append(cb)
        group.checkboxes = tuple(checkboxes)
        group.body.children = group.checkboxes if group.toggle.value else ()
        group.built = True

    # ------------------------------------------------------------------ redrawing
    def show_flags(self, frozen: Iterable[str], factors: Mapping[str, float]) -> None:
        """Set rows, stage checkboxes and counts from the frozen set, without calling back."""
        frozen = set(frozen)
        self._syncing = True
        try:
            for name, cb in self.rows.items():
                cb.value = name not in frozen
                cb.description = self.format.row(name, frozen, factors)
            for group in self.groups.values():
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

    def set_enabled(self, enabled: bool) -> None:
        """Stage and row checkboxes follow ``enabled``; layers without parameters stay disabled."""
        for group in self.groups.values():
            group.check.disabled = not enabled or not group.trainable_names
        for name, cb in self.rows.items():
            cb.disabled = not enabled or self.format.params(name) == 0

    # ------------------------------------------------------------------ handlers
    def _on_row_change(self, change: dict) -> None:
        if self._syncing:
            return
        name = self._row_names.get(id(change["owner"]))
        if name is None:
            return
        self._on_change([name], change["new"])

    def _on_group_check(self, change: dict) -> None:
        if self._syncing:
            return
        group = self._group_of_widget.get(id(change["owner"]))
        if group is None or not group.trainable_names:
            return
        self._on_change(list(group.trainable_names), change["new"])

    def _on_group_toggle(self, change: dict) -> None:
        group = self._group_of_widget.get(id(change["owner"]))
        if group is None:
            return
        if change["new"]:
            self.build_rows(group)
            group.body.children = group.checkboxes
        else:
            group.body.children = ()
        group.toggle.icon = "caret-down" if change["new"] else "caret-right"

    # ------------------------------------------------------------------ lifetime
    def _forget(self) -> None:
        self.groups, self.rows, self._row_names, self._group_of_widget = {}, {}, {}, {}

    def close_groups(self) -> None:
        """Close every stage and row widget (the panel closes the rest)."""
        for group in self.groups.values():
            self._close_group(group)
        self._forget()

    def close_shared(self) -> None:
        """Close the Layouts and styles all rows and headers share."""
        for w in self._shared:
            w.close()
