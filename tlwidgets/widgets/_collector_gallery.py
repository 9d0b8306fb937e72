"""The DataCollector's gallery: each class's newest pictures as thumbnails with a delete button.

Tiles are kept between redraws (a thumbnail is made once per file), and the tiles and
sections of files and classes that are gone are closed.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from . import _images

THUMB = 64


def pictures(n: int) -> str:
    return f"{n} picture" if n == 1 else f"{n} pictures"


class ClassGallery:
    """One section per class: a header with its count, then thumbnails of its newest pictures.

    Args:
        on_delete: called with a picture's path when its delete button is pressed.
    """

    def __init__(self, on_delete: Callable[[str], Any]) -> None:
        self.on_delete = on_delete
        self.box = widgets.VBox()
        self.box.add_class("tlw-gallery")
        self.tiles: dict[str, widgets.VBox] = {}
        self.sections: dict[str, tuple[widgets.HTML, widgets.Box, widgets.VBox]] = {}

    def _tile(self, path: Path) -> widgets.VBox:
        key = os.fspath(path)
        tile = self.tiles.get(key)
        if tile is None:
            png = _images.thumbnail_png(path, THUMB) or b""
            picture = widgets.Image(value=png, format="png", layout=widgets.Layout(width=f"{THUMB}px",
                                                                                    height=f"{THUMB}px"))  # fmt: skip
            picture.add_class("tlw-thumb")
            delete = widgets.Button(icon="trash", tooltip=f"Delete {path.name}",
                                    layout=widgets.Layout(width=f"{THUMB}px", height="24px"))  # fmt: skip
            delete.add_class("tlw-delete-image")
            delete.on_click(lambda _b, p=key: self.on_delete(p))
            tile = widgets.VBox([picture, delete], layout=widgets.Layout(margin="2px"))
            tile.add_class("tlw-image-tile")
            tile.path = key  # type: ignore[attr-defined]
            self.tiles[key] = tile
        return tile

    def draw(self, images: dict[str, list[Path]], per_class: int) -> None:
        """Show ``{class: [picture paths]}``, the newest ``per_class`` of each class."""
        shown: set[str] = set()
        for name, paths in images.items():
            visible = paths[-per_class:] if per_class > 0 else []
            tiles = [self._tile(p) for p in visible]
            shown.update(os.fspath(p) for p in visible)
            if name not in self.sections:
                header = widgets.HTML()
                box = widgets.Box(layout=widgets.Layout(flex_flow="row wrap"))
                section = widgets.VBox([header, box])
                section.add_class("tlw-class-section")
                self.sections[name] = (header, box, section)
            header, box, _section = self.sections[name]
            more = f" (newest {len(visible)} shown)" if len(visible) < len(paths) else ""
            header.value = (f"<b class='tlw-class-title'>{html.escape(name)}</b> "
                            f"<span style='color:#666'>{pictures(len(paths))}{more}</span>")  # fmt: skip
            box.children = tiles
        for key in [k for k in self.tiles if k not in shown]:
            self.tiles.pop(key).close()
        for name in [n for n in self.sections if n not in images]:
            for w in self.sections.pop(name):
                w.close()
        self.box.children = [self.sections[n][2] for n in images]

    def forget_class(self, name: str) -> None:
        """Close the tiles of class ``name`` (its files moved, e.g. when it was renamed)."""
        for path in [p for p in self.tiles if Path(p).parent.name == name]:
            self.tiles.pop(path).close()

    def shown_files(self) -> dict[str, list[str]]:
        """``{class: [file names]}`` of the thumbnails shown."""
        return {name: [Path(t.path).name for t in box.children]  # type: ignore[attr-defined]
                for name, (_header, box, _section) in self.sections.items()}  # fmt: skip

    def close(self) -> None:
        """Close every tile (the panel closes the rest)."""
        for tile in list(self.tiles.values()):
            tile.close()
        self.tiles.clear()
