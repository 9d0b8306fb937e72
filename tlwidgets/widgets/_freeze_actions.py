"""The layer table's freezing actions: freeze up to a layer, freeze the backbone, unfreeze all,
set a layer's or a stage's LR factor, and (un)freeze the layers of a ticked row or stage.

Every action goes through a session method, run by the panel's ``apply`` (which shows a
refusal in plain words and redraws the flags as they really are).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ..core.session import Session
from ._layer_groups import StageGroup


def _button(label: str, css: str, tooltip: str) -> widgets.Button:
    button = widgets.Button(description=label, tooltip=tooltip, layout=widgets.Layout(width="auto"))
    button.add_class(css)
    return button


class FreezeActions:
    """Freezing shortcuts and LR factors, over a session.

    Args:
        session: the shared session.
        apply: runs a session change, showing why it failed (the panel's ``_apply``).
        show_error: shows a message in the panel's error area.

    Attributes:
        layer_select + freeze_up_to_button, freeze_backbone_button, unfreeze_all_button,
        lr_layer + lr_factor + set_lr_button: the widgets (``tlw-layer-select``,
        ``tlw-freeze-up-to``, ``tlw-freeze-backbone``, ``tlw-unfreeze-all``, ``tlw-lr-layer``,
        ``tlw-lr-factor``, ``tlw-set-lr``).
    """

    def __init__(self, session: Session, apply: Callable[[Callable[[], Any]], None],
                 show_error: Callable[[str], Any]) -> None:
        self.session = session
        self._apply = apply
        self._show_error = show_error
        self.layer_select = widgets.Dropdown(description="Up to", options=[], layout=widgets.Layout(width="320px"))
        self.layer_select.add_class("tlw-layer-select")
        self.freeze_up_to_button = _button(
            "Freeze up to selected", "tlw-freeze-up-to",
            "Freeze every layer from the input up to and including the selected one; the rest trains.",
        )
        self.freeze_backbone_button = _button("Freeze backbone", "tlw-freeze-backbone",
                                              "Train only the classifier head.")
        self.unfreeze_all_button = _button("Unfreeze all", "tlw-unfreeze-all", "Train every layer.")
        self.lr_layer = widgets.Dropdown(description="LR of", options=[], layout=widgets.Layout(width="320px"))
        self.lr_layer.add_class("tlw-lr-layer")
        self.lr_factor = widgets.FloatText(value=0.1, step=0.1, description="× base",
                                           layout=widgets.Layout(width="150px"))
        self.lr_factor.add_class("tlw-lr-factor")
        self.set_lr_button = _button("Set LR factor", "tlw-set-lr",
                                     "Scale the learning rate of this layer or stage (0 freezes it).")

        self.freeze_up_to_button.on_click(self._on_freeze_up_to_click)
        self.freeze_backbone_button.on_click(lambda _: self._apply(self.session.freeze_backbone))
        self.unfreeze_all_button.on_click(lambda _: self._apply(self.session.unfreeze_all))
        self.set_lr_button.on_click(self._on_set_lr_click)

    def rows(self) -> tuple[widgets.HBox, widgets.HBox, widgets.HBox]:
        """Freeze up to, the two shortcuts, then the LR factor line."""
        return (widgets.HBox([self.layer_select, self.freeze_up_to_button]),
                widgets.HBox([self.freeze_backbone_button, self.unfreeze_all_button]),
                widgets.HBox([self.lr_layer, self.lr_factor, self.set_lr_button]))

    def set_trainable(self, names: list[str], trainable: bool) -> None:
        """A row or stage checkbox was ticked (unfreeze ``names``) or unticked (freeze them)."""
        if trainable:
            self._apply(lambda: self.session.unfreeze(names))
        else:
            self._apply(lambda: self.session.freeze(names))

    def set_enabled(self, enabled: bool) -> None:
        for w in (self.layer_select, self.freeze_up_to_button, self.freeze_backbone_button,
                  self.unfreeze_all_button, self.lr_layer, self.lr_factor, self.set_lr_button):
            w.disabled = not enabled

    # ------------------------------------------------------------------ the lists of layers
    def clear_options(self) -> None:
        self.layer_select.options, self.lr_layer.options = [], []

    def update_selects(self, table: pd.DataFrame, groups: Iterable[StageGroup]) -> None:
        """Layers with parameters in both lists; stages of more than one such layer in the LR list too."""
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
        for group in groups:
            if group.trainable_names != [group.name]:
                options.append((f"{group.name} (whole stage)", group.name))
        options += [(n, n) for n in names]
        previous = self.lr_layer.value
        self.lr_layer.options = options
        if previous in dict(options).values():
            self.lr_layer.value = previous
        elif options:
            self.lr_layer.value = options[0][1]

    # ------------------------------------------------------------------ handlers
    def _on_freeze_up_to_click(self, _button: widgets.Button) -> None:
        name = self.layer_select.value
        if not name:
            self._show_error("Choose a layer in the list first.")
            return
        self._apply(lambda: self.session.freeze_up_to(name))

    def _on_set_lr_click(self, _button: widgets.Button) -> None:
        name, factor = self.lr_layer.value, float(self.lr_factor.value)
        if not name:
            self._show_error("Choose a layer or stage in the list first.")
            return
        if not factor >= 0 or factor == float("inf"):
            self._show_error(f"LR factor {factor:g} is not allowed: use a number >= 0 (0 freezes, 1 = base rate).")
            return
        self._apply(lambda: self.session.set_lr_factor(name, factor))
