"""The assessment's HTML: the per-class table reads as one header row and one row per class."""

from __future__ import annotations

import math

import pandas as pd

from tlwidgets.widgets.assessment import per_class_html


def test_per_class_table_has_one_header_row_and_percentages() -> None:
    frame = pd.DataFrame(
        {"precision": [0.5, 1.0, math.nan], "recall": [1.0, 0.25, 0.0], "f1": [2 / 3, 0.4, 0.0], "support": [3, 4, 0]},
        index=pd.Index(["cat", "dog", "<b>owl</b>"], name="class"),
    )
    text = per_class_html(frame)
    head, body = text.split("<tbody>")
    assert head.count("<tr") == 1
    assert [h for h in ("class", "precision", "recall", "f1", "support") if f"<th>{h}</th>" in head] == [
        "class", "precision", "recall", "f1", "support"]
    rows = body.split("<tr>")[1:]
    assert len(rows) == 3
    assert "<td>cat</td>" in rows[0] and "<td>66.7%</td>" in rows[0] and "<td>3</td>" in rows[0]
    assert "&lt;b&gt;owl&lt;/b&gt;" in rows[2] and "<td></td>" in rows[2]  # escaped name; NaN precision blank
    assert "text-align:right" in text
