"""How the layer table's rows read: one monospace line per layer, columns fitted to the model.

:class:`RowFormat` holds, for every layer of a layer table (``session.layers()``), its
type, output shape, parameter count and whether it is in the head, and writes the line
``name  type  output shape  parameters  [LR factor] [head mark]`` with column widths
taken from the model's own names and types (long names are cut from the left, where
they repeat the stage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..core.layers import lr_factor_of

NAME_MAX, TYPE_MAX = 44, 22


def shape_text(shape: Any) -> str:
    """``(1, 64, 56, 56)`` -> ``64×56×56`` (the batch dimension dropped)."""
    if not isinstance(shape, tuple) or not shape:
        return "—"
    return "×".join(str(d) for d in (shape[1:] or shape))


def percent(part: int, total: int) -> str:
    """``part`` of ``total`` as a short percentage: ``0%``, ``100%``, ``2.5%``, ``0.013%``."""
    if total <= 0:
        return "0%"
    if part in (0, total):
        return f"{100 * part // total}%"
    pct = 100.0 * part / total
    return f"{pct:.1f}%" if pct >= 1 else f"{pct:.2g}%"


def structure(model: Any) -> tuple[tuple[str, str], ...]:
    """Names and types of the modules that own parameters: changes only when layers do."""
    return tuple(
        (name, type(module).__name__)
        for name, module in model.named_modules()
        if next(module.parameters(recurse=False), None) is not None
    )


class RowFormat:
    """Row texts of one layer table; an empty format when ``table`` is ``None``."""

    def __init__(self, table: pd.DataFrame | None = None) -> None:
        #: name -> (type, output shape text, parameters, is in the head)
        self.meta: dict[str, tuple[str, str, int, bool]] = {}
        if table is not None:
            self.meta = {
                str(n): (str(t), shape_text(s), int(p), bool(h))
                for n, t, s, p, h in zip(
                    table["name"], table["type"], table["output_shape"], table["params"], table["is_head"]
                )
            }
        types = [m[0] for m in self.meta.values()]
        self.name_w = min(max(map(len, self.meta), default=4), NAME_MAX)
        self.type_w = min(max(map(len, types), default=4), TYPE_MAX)
        self.shape_w = max(max((len(m[1]) for m in self.meta.values()), default=5), 5)

    def params(self, name: str) -> int:
        """Parameters that layer ``name`` owns itself (0: nothing to train)."""
        return self.meta[name][2]

    def batchnorm_layers(self) -> list[str]:
        """Names of the BatchNorm layers, in model order."""
        return [n for n, m in self.meta.items() if "BatchNorm" in m[0]]

    def line(self, name: str, meta: tuple[Any, str, Any, bool], factor: float) -> str:
        """Monospace row: name, type, output shape, parameters, LR factor (when not 0 or 1), head mark."""
        type_, shape, params, is_head = meta
        short = name if len(name) <= self.name_w else "…" + name[-(self.name_w - 1):]
        count = f"{params:,}" if isinstance(params, int) else str(params)
        extra = ("" if factor in (0.0, 1.0) else f"  LR×{factor:g}") + ("  ← head" if is_head else "")
        return (f"{short:<{self.name_w}}  {type_[:self.type_w]:<{self.type_w}}  "
                f"{shape:<{self.shape_w}}  {count:>11}{extra}")

    def heading(self) -> str:
        """The column titles, aligned with the rows."""
        return self.line("name", ("type", "output", "params", False), 1.0)

    def row(self, name: str, frozen: set[str], factors: Mapping[str, float]) -> str:
        """Row of layer ``name`` under this freezing and these learning-rate factors."""
        return self.line(name, self.meta[name], 0.0 if name in frozen else lr_factor_of(name, factors))
