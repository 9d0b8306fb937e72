"""The model picker's controls for a catalog of a thousand models: search, licence, "show all",
the table's pages and fetching timm's accuracies."""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as widgets
import pandas as pd

_ALL = "All"
PAGE_SIZE = 25
#: timm models shown before "show all": the cheapest few (small and fast), drawn highlighted.
SMALL_FAST = {"max_params_m": 6.0, "max_gflops": 0.6, "count": 24}


def small_fast(catalog: pd.DataFrame) -> set[str]:
    """Names of the timm models of the default view: the cheapest ones under the size limits."""
    timm_rows = catalog[(catalog["source"] == "timm") & (catalog["params_m"] <= SMALL_FAST["max_params_m"])
                        & (catalog["gflops"] <= SMALL_FAST["max_gflops"])]
    return set(timm_rows.sort_values(["gflops", "name"])["name"].head(int(SMALL_FAST["count"])))


class PickerControls:
    """Search box, licence filter, the show-all toggle, table pages and the accuracy button.

    ``on_change()`` is called whenever what is shown changes; ``on_fetch()`` when the
    accuracy button is pressed.
    """

    PAGE_SIZE = PAGE_SIZE

    def __init__(self, catalog: pd.DataFrame, on_change: Callable[[], None], on_fetch: Callable[[], None]) -> None:
        self.on_change = on_change
        self.page = 0
        self.follow = False  # next redraw shows the page of the loaded model
        self.search = widgets.Text(value="", placeholder="name or family, e.g. convnext", description="Search",
                                   continuous_update=True)
        self.license = widgets.Dropdown(options=[_ALL], value=_ALL, description="Licence")
        self.show_all = widgets.Checkbox(value=False, indent=False, description="Show all timm models")
        self.fetch_button = widgets.Button(description="Fetch timm accuracies", icon="cloud-download",
                                           tooltip="Download timm's ImageNet results table (a CSV file)")
        self.prev_button = widgets.Button(description="◀", layout=widgets.Layout(width="40px"))
        self.next_button = widgets.Button(description="▶", layout=widgets.Layout(width="40px"))
        self.page_label = widgets.Label("")
        self.note = widgets.HTML("")
        for w, cls in ((self.search, "tlw-model-search"), (self.show_all, "tlw-show-all"),
                       (self.fetch_button, "tlw-fetch-accuracy")):
            w.add_class(cls)
        self.set_catalog(catalog)
        for w in (self.search, self.license, self.show_all):
            w.observe(self._changed, names="value")
        self.prev_button.on_click(lambda _b: self.turn(-1))
        self.next_button.on_click(lambda _b: self.turn(+1))
        self.fetch_button.on_click(lambda _b: on_fetch())

    @property
    def filters(self) -> widgets.Box:
        return widgets.HBox([self.search, self.license, self.show_all, self.fetch_button],
                            layout={"flex_flow": "row wrap"})

    @property
    def pager(self) -> widgets.Box:
        return widgets.HBox([self.prev_button, self.page_label, self.next_button])

    def set_catalog(self, catalog: pd.DataFrame) -> None:
        self.default_timm = small_fast(catalog)
        self.timm_count = int((catalog["source"] == "timm").sum())
        licences = [_ALL, *sorted(set(catalog["license"]) - {""})]
        if list(self.license.options) != licences:
            keep = self.license.value if self.license.value in licences else _ALL
            self.license.options, self.license.value = licences, keep
        self.show_all.description = f"Show all {self.timm_count} timm models"

    def _changed(self, _change: dict) -> None:
        self.page = 0
        self.on_change()

    def turn(self, step: int) -> None:
        """Go ``step`` pages forward (or back) in the table."""
        self.page = max(0, self.page + step)
        self.on_change()

    def apply(self, df: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``df`` passing the search, the licence and (unless "show all") the default view."""
        if not self.show_all.value:
            df = df[(df["source"] != "timm") | df["name"].isin(self.default_timm)]
        if self.license.value != _ALL:
            df = df[df["license"] == self.license.value]
        words = self.search.value.strip().lower().split()
        if words:
            text = (df["name"] + " " + df["family"]).str.lower()
            for word in words:
                df = df[text.loc[df.index].str.contains(word, regex=False)]
        return df

    def paging(self, rows: int) -> tuple[int, int]:
        """``(page, page_size)`` for a table of ``rows`` rows, clamping the page and labelling it."""
        pages = max(1, -(-rows // PAGE_SIZE))
        self.page = min(self.page, pages - 1)
        self.page_label.value = f"page {self.page + 1} of {pages} ({rows} models)"
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= pages - 1
        return self.page, PAGE_SIZE

    def no_accuracy_note(self, df: pd.DataFrame) -> None:
        missing = int(df["top1"].isna().sum())
        self.note.value = (
            f"<i>{missing} of the shown models have no ImageNet accuracy yet, so they are not on the map "
            f"(they are in the table): press <b>{html.escape(self.fetch_button.description)}</b>.</i>"
            if missing else ""
        )
