"""A change plan for the images of a data folder: per image keep, move to class X, or remove.

:func:`preview_plan` checks the whole plan and lists what would happen, file by file, with
nothing changed on disk; :mod:`tlwidgets.core.cleaning_apply` does it. Files move only inside
the data folder (the folder of class sub-folders the session loaded): a path outside it, a
file that is not one of the loaded images, a link, a folder on the way that is a link, or a
class that is not one of the data's classes (``../x`` included) is refused with a message
naming it. A move goes to the other class folder under the same name, or ``name_1.ext``,
``name_2.ext``... when that is taken; a removal goes to ``_removed/<class>/`` inside the data
folder, which the scan skips.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import data as data_mod
from .errors import DataError
from .paths import check_class_name

if TYPE_CHECKING:
    from .session import Session

REMOVED = "_removed"
ACTIONS = ("keep", "move", "remove")
LAYOUTS = ("folder", "train/val folders")


@dataclass(frozen=True)
class Change:
    """What to do with one image: ``keep``, ``move`` (to ``to_class``) or ``remove``."""

    path: str
    action: str
    to_class: str | None = None


class ChangePlan:
    """Per image: keep, move to another class, or remove. Nothing happens until :func:`apply_plan`.

    Args:
        choices: ``{path: "keep" | "remove" | ("move", class)}`` or :class:`Change` objects.
    """

    def __init__(self, choices: Mapping[Any, Any] | Iterable[Change] | None = None) -> None:
        self._changes: dict[str, Change] = {}
        if isinstance(choices, Mapping):
            for path, choice in choices.items():
                self.set(path, choice)
        elif choices is not None:
            for change in choices:
                self.set(change.path, change)

    def set(self, path: Any, choice: Any) -> ChangePlan:
        """Choose for ``path``: ``"keep"``, ``"remove"``, ``("move", class)`` or a :class:`Change`."""
        try:
            key = os.fspath(path)
        except TypeError:
            key = None
        if not isinstance(key, str) or not key.strip():
            raise DataError(f"{path!r} is not a file path: name an image of the data.")
        if isinstance(choice, Change):
            choice = choice.action if choice.action != "move" else ("move", choice.to_class)
        if isinstance(choice, (tuple, list)) and len(choice) == 2 and choice[0] == "move":
            if not isinstance(choice[1], str):
                raise DataError(f"Move {key} to which class? Got {choice[1]!r}; give a class name.")
            change = Change(key, "move", choice[1])
        elif choice in ("keep", "remove"):
            change = Change(key, str(choice))
        else:
            raise DataError(f"Unknown choice {choice!r} for {key}: use 'keep', 'remove' or ('move', class).")
        if change.action == "keep":
            self._changes.pop(key, None)
        else:
            self._changes[key] = change
        return self

    def keep(self, path: Any) -> ChangePlan:
        return self.set(path, "keep")

    def move(self, path: Any, to_class: str) -> ChangePlan:
        return self.set(path, ("move", to_class))

    def remove(self, path: Any) -> ChangePlan:
        return self.set(path, "remove")

    def choice(self, path: Any) -> Change:
        """The change chosen for ``path`` (``keep`` when none)."""
        key = os.fspath(path)
        return self._changes.get(key, Change(key, "keep"))

    @property
    def changes(self) -> list[Change]:
        """The moves and removals, in the order they were chosen."""
        return list(self._changes.values())

    def __len__(self) -> int:
        return len(self._changes)

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def frame(self) -> pd.DataFrame:
        """One row per move or removal: path, action, to_class."""
        return pd.DataFrame([dataclasses.astuple(c) for c in self._changes.values()],
                            columns=["path", "action", "to_class"])


@dataclass(frozen=True)
class Step:
    source: Path
    target: Path
    action: str
    split: str
    label: int
    new_label: int


# ---------------------------------------------------------------------------- the data folder
def data_root(bundle: data_mod.DataBundle) -> tuple[Path, Path]:
    """The data folder as loaded (absolute) and as it really is (links resolved).

    Raises:
        DataError: the data did not come from a folder (an archive, the demo, torchvision),
            or the folder is gone.
    """
    layout = bundle.report.layout
    if layout not in LAYOUTS:
        raise DataError(f"The data came from {bundle.report.source!r} ({layout}): the Cleaner changes files only "
                        "in a folder of class sub-folders you loaded. Extract the images into a folder and load "
                        "that folder to clean them.")
    root = Path(os.path.abspath(os.path.expanduser(bundle.report.source)))
    if not root.is_dir():
        raise DataError(f"The data folder {root} is gone: load the data again.")
    return root, Path(os.path.realpath(root))


def inside(path: str | Path, root: str | Path) -> bool:
    path, root = os.fspath(path), os.fspath(root)
    return path != root and os.path.commonpath([path, root]) == root


def rel_path(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _check_chain(root: Path, real: Path, rel: Path, shown: str, *, last_is_file: bool) -> None:
    """Every existing folder from ``root`` down to ``root / rel`` is a real folder inside ``real``."""
    current = root
    parts = rel.parts[:-1] if last_is_file else rel.parts
    for part in parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            what = "a link to another place" if stat.S_ISLNK(mode) else "not a folder"
            raise DataError(f"{shown}: {rel_path(current, root)} is {what}; the Cleaner moves files only inside the data "
                            f"folder {root} itself. Nothing was moved.")
    if not inside(os.path.realpath(current), real):
        raise DataError(f"{shown} leads outside the data folder {root}. Nothing was moved.")


def _free_name(folder: Path, name: str, taken: set[Path]) -> Path:
    stem, ext = os.path.splitext(name)
    for i in range(100_000):
        candidate = folder / (name if i == 0 else f"{stem}_{i}{ext}")
        if candidate not in taken and not os.path.lexists(candidate):
            return candidate
    raise DataError(f"No free file name left for {name} in {folder}: tidy that folder up.")


def resolve(session: Session, plan: ChangePlan) -> tuple[Path, list[Step], list[Path]]:
    """Check the whole plan and decide every file's new place; nothing on disk changes.

    Returns the data folder, the steps, and the folders to make (parents first).
    """
    if not isinstance(plan, ChangePlan):
        plan = ChangePlan(plan)
    bundle = session._require_data()
    root, real = data_root(bundle)
    classes = list(bundle.classes)
    split_layout = bundle.report.layout == "train/val folders"
    index = {os.path.abspath(s.path): ("train", s.label) for s in bundle.train}
    index.update({os.path.abspath(s.path): ("val", s.label) for s in bundle.val})
    steps: list[Step] = []
    folders: list[Path] = []
    taken: set[Path] = set()
    seen: dict[str, str] = {}
    for change in plan.changes:
        given = os.path.abspath(os.path.expanduser(change.path))
        if not inside(given, root):
            raise DataError(f"{change.path} is outside the data folder {root}: the Cleaner changes files only "
                            "inside it. Nothing was moved.")
        if given in seen:
            raise DataError(f"{change.path} is named twice in the plan (also as {seen[given]}): choose once. "
                            "Nothing was moved.")
        seen[given] = change.path
        if given not in index:
            raise DataError(f"{change.path} is not an image of the loaded data: nothing was moved. Press Find "
                            "issues again if the data changed.")
        split, label = index[given]
        source, rel = Path(given), Path(given).relative_to(root)
        shown = rel.as_posix()
        _check_chain(root, real, rel, shown, last_is_file=True)
        try:
            mode = os.lstat(source).st_mode
        except FileNotFoundError:
            raise DataError(f"{shown} is no longer there: load the data again. Nothing was moved.") from None
        if not stat.S_ISREG(mode):
            what = "a link" if stat.S_ISLNK(mode) else "not a regular file"
            raise DataError(f"{shown} is {what}: the Cleaner moves only image files. Nothing was moved.")
        depth = 2 if split_layout else 1
        class_dir = rel.parts[:depth]
        if len(rel.parts) <= depth or class_dir[-1] != classes[label]:
            raise DataError(f"{shown} does not lie in the folder of its class {classes[label]!r}. Nothing was moved.")
        if change.action == "move":
            to_class = check_class_name(change.to_class)
            if to_class != change.to_class or to_class not in classes:
                raise DataError(f"Cannot move {shown} to {change.to_class!r}: there is no such class in the data "
                                f"(classes: {', '.join(classes)}). Nothing was moved.")
            if to_class == classes[label]:
                raise DataError(f"{shown} is already in class {to_class!r}: choose another class, or keep it.")
            folder_rel = Path(*class_dir[:-1], to_class)
            new_label = classes.index(to_class)
        else:
            folder_rel = Path(REMOVED, *rel.parts[:-1])
            new_label = label
        _check_chain(root, real, folder_rel, shown, last_is_file=False)
        for i in range(1, len(folder_rel.parts) + 1):
            folder = root / Path(*folder_rel.parts[:i])
            if not os.path.lexists(folder) and folder not in folders:
                folders.append(folder)
        target = _free_name(root / folder_rel, source.name, taken)
        taken.add(target)
        steps.append(Step(source, target, change.action, split, label, new_label))
    return root, steps, folders


def preview_plan(session: Session, plan: ChangePlan) -> pd.DataFrame:
    """What :func:`apply_plan` would do, one row per file: action, from, to, class_from, class_to, split.

    Paths are relative to the data folder. Nothing on disk changes.

    Raises:
        DataError: for any change that would be refused (naming it).
    """
    root, steps, _ = resolve(session, plan)
    classes = list(session.data.classes)
    rows = [(s.action, rel_path(s.source, root), rel_path(s.target, root), classes[s.label],
             classes[s.new_label] if s.action == "move" else "", s.split) for s in steps]
    return pd.DataFrame(rows, columns=["action", "from", "to", "class_from", "class_to", "split"])
