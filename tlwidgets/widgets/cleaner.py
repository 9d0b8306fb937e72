"""The Cleaner: pages of images most likely to be wrong, near-duplicates, and labels the
neighbours disagree with, each with keep / move to a class / remove; then review, apply, undo.

A thin view over :mod:`tlwidgets.core.cleaning`: *Find issues* runs
:func:`~tlwidgets.core.cleaning.review`, the choices make a
:class:`~tlwidgets.core.cleaning_plan.ChangePlan`, *Review changes* lists
:func:`~tlwidgets.core.cleaning.preview_plan`, and *Apply* / *Undo* call
:func:`~tlwidgets.core.cleaning.apply_plan` / :func:`~tlwidgets.core.cleaning.undo_last`.
Apply stays disabled until the current choices have been reviewed.
"""

from __future__ import annotations

import html
import os
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ..core import cleaning
from ..core.cleaning import ChangePlan, CleaningReport
from ..core.errors import DataError
from ..core.session import Session
from ..core.status import Status
from ._images import img_tag, thumbnail_png
from ._panel import Panel, guarded

PAGE_SIZE = 12
_THUMB = 96
VIEWS = (("By loss", "loss"), ("Near-duplicates", "duplicates"), ("Label disagrees with neighbours", "neighbours"))


def _note(text: str) -> str:
    return f"<div style='color:#777;font-style:italic'>{html.escape(text)}</div>"


def _choice(value: str) -> Any:
    """A dropdown value as a ChangePlan choice: ``keep``, ``remove`` or ``("move", class)``."""
    return ("move", value.split(":", 1)[1]) if value.startswith("move:") else value


def _value(change: Any) -> str:
    return f"move:{change.to_class}" if change.action == "move" else change.action


class _Cell:
    """One place on a page: a picture (or a pair) with its facts, and a choice per picture."""

    def __init__(self) -> None:
        self.html = widgets.HTML()
        self.choices = [widgets.Dropdown(layout=widgets.Layout(width="150px")) for _ in range(2)]
        for choice in self.choices:
            choice.add_class("tlw-clean-choice")
        self.box = widgets.VBox([self.html, widgets.HBox(self.choices)],
                                layout=widgets.Layout(border="1px solid #ddd", padding="4px", margin="2px"))
        self.box.add_class("tlw-clean-cell")
        self.paths: list[str] = []


class Cleaner(Panel):
    """Find images to look at again, choose what to do with each, review, apply and undo.

    Args:
        session: the shared session (trained on the data, so the losses mean something).
        page_size: pictures (or pairs) per page.

    Attributes:
        find_button: runs :func:`~tlwidgets.core.cleaning.review` (``tlw-clean-find``).
        view: ToggleButtons "By loss" / "Near-duplicates" / "Label disagrees with neighbours".
        class_filter, cell_filter: Dropdowns: one class; one confusion cell (true → predicted).
        cells: the page's places; ``cells[i].paths`` the pictures shown, ``cells[i].choices``
            their keep / move to <class> / remove dropdowns.
        review_button, review: list the planned changes (``tlw-clean-review``).
        apply_button, undo_button: apply the reviewed plan; undo the last apply.
        status: one line on what was found or done (``tlw-clean-status``).
        report: the last :class:`~tlwidgets.core.cleaning.CleaningReport`; plan: the choices.
    """

    css_class = "tlw-cleaner"

    def __init__(self, session: Session | None = None, page_size: int = PAGE_SIZE, **kwargs: Any) -> None:
        super().__init__(session, title="Clean the data", **kwargs)
        self.page_size = int(page_size)
        self.report: CleaningReport | None = None
        self.plan = ChangePlan()
        self.page = 0
        self._reviewed: tuple | None = None
        self._history: list[CleaningReport | None] = []  # the report before each apply, for undo
        self._filling = False
        self._own_change = False
        self.find_button = widgets.Button(description="Find issues", icon="search", button_style="primary",
                                          tooltip="Score every image by its loss, find near-duplicates and "
                                                  "labels the nearest neighbours disagree with")
        self.find_button.add_class("tlw-clean-find")
        self.find_button.on_click(lambda _: self.find())
        self.view = widgets.ToggleButtons(options=VIEWS, value="loss")
        self.view.add_class("tlw-clean-view")
        self.class_filter = widgets.Dropdown(options=[("all classes", "")], description="Class",
                                             layout=widgets.Layout(width="240px"))
        self.class_filter.add_class("tlw-clean-class")
        self.cell_filter = widgets.Dropdown(options=[("any", "")], description="Confusion",
                                            layout=widgets.Layout(width="300px"))
        self.cell_filter.add_class("tlw-clean-cell-filter")
        for control in (self.view, self.class_filter, self.cell_filter):
            control.observe(self._on_filter, names="value")
        self.prev_button = widgets.Button(description="Previous", icon="arrow-left", layout=widgets.Layout(width="110px"))
        self.next_button = widgets.Button(description="Next", icon="arrow-right", layout=widgets.Layout(width="110px"))
        self.prev_button.on_click(lambda _: self.show_page(self.page - 1))
        self.next_button.on_click(lambda _: self.show_page(self.page + 1))
        self.page_label = widgets.HTML()
        self.page_label.add_class("tlw-clean-page")
        self.cells = [_Cell() for _ in range(self.page_size)]
        for cell in self.cells:
            for i, choice in enumerate(cell.choices):
                choice.observe(lambda change, c=cell, i=i: self._on_choice(c, i, change), names="value")
        self.grid = widgets.GridBox([c.box for c in self.cells], layout=widgets.Layout(
            grid_template_columns="repeat(auto-fill, minmax(230px, 1fr))"))
        self.grid.add_class("tlw-clean-grid")
        self.review_button = widgets.Button(description="Review changes", icon="list")
        self.review_button.add_class("tlw-clean-review-button")
        self.review_button.on_click(lambda _: self.review_changes())
        self.apply_button = widgets.Button(description="Apply", icon="check", button_style="warning", disabled=True,
                                           tooltip="Move and remove the reviewed files (removed ones go to _removed/)")
        self.apply_button.add_class("tlw-clean-apply")
        self.apply_button.on_click(lambda _: self.apply())
        self.undo_button = widgets.Button(description="Undo last apply", icon="undo")
        self.undo_button.add_class("tlw-clean-undo")
        self.undo_button.on_click(lambda _: self.undo())
        self.review = widgets.HTML()
        self.review.add_class("tlw-clean-review")
        self.status = widgets.HTML()
        self.status.add_class("tlw-clean-status")
        self.set_body(
            widgets.HBox([self.find_button, self.status]),
            self.view,
            widgets.HBox([self.class_filter, self.cell_filter]),
            widgets.HBox([self.prev_button, self.page_label, self.next_button]),
            self.grid,
            widgets.HBox([self.review_button, self.apply_button, self.undo_button]),
            self.review,
        )
        self.observe_session(self._on_data, "data_version")
        self.observe_session(lambda _: self._sync_buttons(), "status")
        self._say("Press Find issues to score every image (after training).")
        self.show_page(0)

    # ------------------------------------------------------------------ finding
    @guarded
    def find(self) -> CleaningReport:
        """Score the images and show the first page of the current view."""
        self._say("Scoring every image...")

        def progress(done: int, total: int, what: str) -> None:
            self._say(f"Scoring every image: {what} {done}/{total}...")

        report = cleaning.review(self.session, progress=progress)
        self.report, self.plan, self._history = report, ChangePlan(), []
        self._set_filters()
        self._forget_review()
        self.show_page(0)
        self._say(report.summary())
        self.clear_error()
        return report

    def _set_filters(self) -> None:
        report = self.report
        self._filling = True
        try:
            self.class_filter.options = [("all classes", "")] + ([(c, c) for c in report.classes] if report else [])
            self.class_filter.value = ""
            cells = report.cells() if report is not None else pd.DataFrame(columns=["true", "predicted", "images"])
            self.cell_filter.options = [("any", "")] + [
                (f"{r.true} → {r.predicted} ({r.images})", f"{r.true}\x00{r.predicted}") for r in cells.itertuples()]
            self.cell_filter.value = ""
        finally:
            self._filling = False

    def items(self) -> pd.DataFrame:
        """The rows of the current view with the filters applied (what the pages show)."""
        report = self.report
        if report is None:
            return pd.DataFrame()
        cls = self.class_filter.value or None
        if self.view.value == "duplicates":
            rows = report.duplicates
            if cls is not None:
                rows = rows[(rows["label_a"] == cls) | (rows["label_b"] == cls)]
            return rows.reset_index(drop=True)
        if self.view.value == "neighbours":
            rows = report.disagreements
            return (rows[rows["label"] == cls] if cls is not None else rows).reset_index(drop=True)
        cell = tuple(self.cell_filter.value.split("\x00")) if self.cell_filter.value else None
        return report.by_loss(cls, cell)

    # ------------------------------------------------------------------ pages
    def show_page(self, page: int) -> None:
        """Draw page ``page`` (from 0) of the current view."""
        rows = self.items()
        pages = max(1, -(-len(rows) // self.page_size))
        self.page = min(max(int(page), 0), pages - 1)
        shown = rows.iloc[self.page * self.page_size:(self.page + 1) * self.page_size]
        self._filling = True
        try:
            for i, cell in enumerate(self.cells):
                if i < len(shown):
                    self._fill(cell, shown.iloc[i])
                    cell.box.layout.display = None
                else:
                    cell.paths = []
                    cell.box.layout.display = "none"
        finally:
            self._filling = False
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= pages - 1
        if self.report is None:
            self.page_label.value = ""
        elif len(rows) == 0:
            self.page_label.value = _note("Nothing to show here.")
        else:
            first = self.page * self.page_size + 1
            self.page_label.value = (f"<span style='padding:0 8px'>page {self.page + 1} of {pages} "
                                     f"({first}-{first + len(shown) - 1} of {len(rows)})</span>")

    def _fill(self, cell: _Cell, row: pd.Series) -> None:
        if self.view.value == "duplicates":
            cell.paths = [str(row["path_a"]), str(row["path_b"])]
            crossing = " · <b style='color:#a00'>train and val</b>" if row["crosses_split"] else ""
            sides = "".join(self._picture(p, f"<b>{html.escape(str(row[f'label_{s}']))}</b> · {row[f'split_{s}']}")
                            for p, s in zip(cell.paths, "ab"))
            cell.html.value = (f"<div style='display:flex;gap:4px'>{sides}</div><div style='font-size:11px'>"
                               f"cosine {float(row['similarity']):.3f}{crossing}</div>")
        elif self.view.value == "neighbours":
            cell.paths = [str(row["path"])]
            cell.html.value = self._picture(
                cell.paths[0], f"<b>{html.escape(str(row['label']))}</b> · {row['split']}<br>neighbours say "
                f"<b style='color:#a00'>{html.escape(str(row['suggested']))}</b> ({float(row['agreement']):.0%})")
        else:
            cell.paths = [str(row["path"])]
            colour = "#a00" if row["predicted"] != row["label"] else "#070"
            cell.html.value = self._picture(
                cell.paths[0], f"<b>{html.escape(str(row['label']))}</b> → <b style='color:{colour}'>"
                f"{html.escape(str(row['predicted']))}</b> {float(row['confidence']):.0%}<br>"
                f"<span style='color:#777'>loss {float(row['loss']):.2f} · {row['split']}</span>")
        classes = self.report.classes if self.report is not None else []
        for i, choice in enumerate(cell.choices):
            if i >= len(cell.paths):
                choice.layout.display = "none"
                continue
            path = cell.paths[i]
            label = self._label(path)
            options = [("keep", "keep"), *[(f"move to {c}", f"move:{c}") for c in classes if c != label],
                       ("remove", "remove")]
            chosen = self.plan.choice(path)
            if _value(chosen) not in dict(options).values():  # chosen in code: shown as it is
                options.append((f"move to {chosen.to_class}", _value(chosen)))
            choice.options = options
            choice.value = _value(chosen)
            choice.layout.display = None

    def _label(self, path: str) -> str | None:
        scores = self.report.scores if self.report is not None else None
        if scores is None:
            return None
        found = scores.loc[scores["path"] == path, "label"]
        return str(found.iloc[0]) if len(found) else None

    @staticmethod
    def _picture(path: str, facts: str) -> str:
        tag = img_tag(thumbnail_png(path, _THUMB), title=path, size=_THUMB)
        name = html.escape(os.path.basename(path))
        return (f"<div class='tlw-clean-item' data-path='{html.escape(path, quote=True)}' style='font-size:11px;"
                f"width:{_THUMB + 14}px;text-align:center;overflow:hidden'>{tag}<br><span title='"
                f"{html.escape(path, quote=True)}'>{name}</span><br>{facts}</div>")

    # ------------------------------------------------------------------ choices
    def choose(self, path: str, choice: Any) -> None:
        """Choose for one image: ``"keep"``, ``"remove"`` or ``("move", class)`` (what the dropdowns do)."""
        self.plan.set(path, choice)
        self._forget_review()
        self.show_page(self.page)
        self._say(f"{len(self.plan)} changes chosen: press Review changes, then Apply.")

    def _on_choice(self, cell: _Cell, index: int, change: dict) -> None:
        if self._filling or index >= len(cell.paths) or change["new"] is None:
            return
        try:
            self.plan.set(cell.paths[index], _choice(change["new"]))
        except Exception as exc:  # noqa: BLE001 - a handler must never raise into the front end
            self.show_error(exc)
            return
        self._forget_review()
        self._say(f"{len(self.plan)} changes chosen: press Review changes, then Apply.")

    def _on_filter(self, change: dict) -> None:
        if not self._filling:
            self.cell_filter.layout.display = None if self.view.value == "loss" else "none"
            self.show_page(0)

    # ------------------------------------------------------------------ review, apply, undo
    @guarded
    def review_changes(self) -> pd.DataFrame:
        """List what Apply would do, file by file; enables Apply when there is something to do."""
        frame = cleaning.preview_plan(self.session, self.plan)
        if len(frame) == 0:
            self.review.value = _note("No changes chosen: every image is kept.")
            self._forget_review(keep_text=True)
            return frame
        lines = []
        for row in frame.itertuples(index=False):
            what = f"move to <b>{html.escape(row.class_to)}</b>" if row.action == "move" else "<b>remove</b>"
            lines.append(f"<li>{what}: <code>{html.escape(row[1])}</code> → <code>{html.escape(row.to)}</code></li>")
        self.review.value = (f"<div><b>{len(frame)} changes</b> (nothing has happened yet):<ul style='margin:2px 0'>"
                             f"{''.join(lines)}</ul></div>")
        self._reviewed = tuple(self.plan.changes)
        self._sync_buttons()
        self.clear_error()
        return frame

    @guarded
    def apply(self) -> Any:
        """Apply the reviewed changes; the pages then leave out the images changed."""
        if self._reviewed is None or self._reviewed != tuple(self.plan.changes):
            raise DataError("Review the changes first: press Review changes, check the list, then Apply.")
        paths = [c.path for c in self.plan.changes]
        result = self._change_files(lambda: cleaning.apply_plan(self.session, self.plan))
        self._history.append(self.report)
        if self.report is not None:
            self.report = self.report.without(paths)
        return self._after_change(result)

    @guarded
    def undo(self) -> Any:
        """Undo the last apply; the pages show the images as before it."""
        result = self._change_files(lambda: cleaning.undo_last(self.session))
        restored = bool(self._history)
        if restored:
            self.report = self._history.pop()
        return self._after_change(result, report_is_current=restored)

    def _change_files(self, change: Any) -> Any:
        """Run ``change`` (apply or undo), marking the data change it makes as this panel's own."""
        self._own_change = True
        try:
            return change()
        finally:
            self._own_change = False

    def _after_change(self, result: Any, report_is_current: bool = True) -> Any:
        """The pages, filters and status line after an apply or undo changed the files.

        ``report_is_current``: the report describes the files as they are now (else it stays
        marked as older than the data, and the panel asks for a new search).
        """
        if self.report is not None and report_is_current:
            self.report.data_version = self.session.data_version
        self.plan = ChangePlan()
        self._forget_review()
        self._set_filters()
        self.show_page(self.page)
        self._say(result.message)
        self.clear_error()
        return result

    # ------------------------------------------------------------------ state
    def _forget_review(self, keep_text: bool = False) -> None:
        self._reviewed = None
        if not keep_text:
            self.review.value = ""
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        busy = self.session.status != Status.IDLE
        self.find_button.disabled = busy
        self.apply_button.disabled = busy or self._reviewed is None or len(self.plan) == 0
        self.undo_button.disabled = busy or cleaning.last_applied(self.session) is None

    def _on_data(self, change: dict) -> None:
        if self._own_change or self.report is None:
            self._sync_buttons()
            return
        self.report, self.plan, self._history = None, ChangePlan(), []
        self._set_filters()
        self._forget_review()
        self.show_page(0)
        self._say("The data changed: press Find issues again.")

    def _say(self, text: str) -> None:
        self.status.value = f"<span style='color:#333'>{html.escape(text)}</span>"
