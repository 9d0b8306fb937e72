"""Row texts of the layer table: aligned columns, cut names, LR factors and the head mark."""

from __future__ import annotations

import pandas as pd
from torch import nn

from tlwidgets.widgets._layer_rows import RowFormat, percent, shape_text, structure


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": ["features.0.0", "features.0.1", "a" * 60, "classifier.1"],
            "type": ["Conv2d", "BatchNorm2d", "VeryLongModuleTypeNameThatGoesOn", "Linear"],
            "output_shape": [(1, 32, 112, 112), (1, 32, 112, 112), (1, 7), (1, 5)],
            "params": [864, 64, 0, 6405],
            "is_head": [False, False, False, True],
        }
    )


def test_rows_share_column_widths_and_mark_factors_and_head() -> None:
    fmt = RowFormat(_table())
    rows = [fmt.row(n, frozen={"features.0.0"}, factors={"features.0.1": 0.1}) for n in fmt.meta]
    heading = fmt.heading()
    # Every row starts its type column where the heading does.
    type_col = heading.index("type")
    assert all(r[type_col - 2:type_col] == "  " for r in rows)
    assert rows[0].startswith("features.0.0") and "32×112×112" in rows[0] and "LR×" not in rows[0]
    assert rows[1].rstrip().endswith("LR×0.1")
    assert rows[2].startswith("…" + "a" * 43) and len(rows[2].split()[0]) == 44  # cut from the left
    assert "VeryLongModuleTypeName"[:22] in rows[2] and "VeryLongModuleTypeNameT" not in rows[2]
    assert rows[3].rstrip().endswith("6,405  ← head")
    assert fmt.params("a" * 60) == 0 and fmt.batchnorm_layers() == ["features.0.1"]


def test_empty_format_and_helpers() -> None:
    assert RowFormat().meta == {} and RowFormat().batchnorm_layers() == []
    assert shape_text((1, 64, 56, 56)) == "64×56×56" and shape_text(None) == "—" and shape_text((5,)) == "5"
    assert [percent(0, 10), percent(10, 10), percent(1, 40), percent(1, 7777)] == ["0%", "100%", "2.5%", "0.013%"]
    assert percent(3, 0) == "0%"
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4, 2))
    assert structure(model) == (("0", "Conv2d"), ("2", "Linear"))
    model[2] = nn.Linear(4, 3)
    assert structure(model) == (("0", "Conv2d"), ("2", "Linear"))  # same layers, same structure
    model[2] = nn.Sequential(nn.Dropout(), nn.Linear(4, 3))
    assert structure(model)[-1] == ("2.1", "Linear")
