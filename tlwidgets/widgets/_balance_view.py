"""Images per class in one line, with the core's imbalance warning when it applies.

The Data panel and the DataCollector both show it; whether the classes count as
imbalanced is decided only by :func:`tlwidgets.core.balance.imbalance_note`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import ipywidgets as widgets

from ..core.balance import imbalance_note

#: Up to this many classes the counts line names every class; above it, the smallest and largest.
LISTED_CLASSES = 12


def counts_text(counts: Mapping[str, int], label: str) -> str:
    """``"label: a 12 · b 3"``, or for many classes ``"label: 40 classes, from 3 (b) to 12 (a)"``."""
    if not counts:
        return ""
    if len(counts) <= LISTED_CLASSES:
        return f"{label}: " + " · ".join(f"{name} {n}" for name, n in counts.items())
    small = min(counts, key=counts.__getitem__)
    large = max(counts, key=counts.__getitem__)
    return f"{label}: {len(counts)} classes, from {counts[small]} ({small}) to {counts[large]} ({large})"


class BalanceView(widgets.VBox):
    """The number of images of each class, and a warning when the core rule calls them imbalanced.

    Args:
        label: what the counts are, e.g. ``"Training images per class"``.
    """

    def __init__(self, label: str = "Images per class") -> None:
        self.label = label
        self.counts: dict[str, int] = {}
        self.note: str | None = None
        self.counts_line = widgets.HTML()
        self.counts_line.add_class("tlw-balance-counts")
        self.warning = widgets.HTML()
        self.warning.add_class("tlw-balance-warning")
        super().__init__([self.counts_line, self.warning])
        self.add_class("tlw-balance")

    def show(self, counts: Mapping[str, int]) -> str | None:
        """Show ``{class: images}``; returns the warning shown (``None`` when the classes are balanced)."""
        self.counts = {str(name): int(n) for name, n in counts.items()}
        self.note = imbalance_note(self.counts)
        text = counts_text(self.counts, self.label)
        self.counts_line.value = f"<span style='color:#666'>{html.escape(text)}</span>" if text else ""
        self.warning.value = "" if self.note is None else (
            f"<div style='margin:4px 0;color:#a60'>&#9888; {html.escape(self.note)}</div>")  # fmt: skip
        return self.note
