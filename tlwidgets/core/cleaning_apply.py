"""Acting on what the Cleaner found: a :class:`ChangePlan` applied inside the data folder, and undone.

:func:`apply_plan` checks the whole plan first (:func:`tlwidgets.core.cleaning_plan.resolve`:
nothing outside the data folder, no links, only the data's classes), then moves the files.
Nothing is deleted or overwritten: a file moves by a hard link and an unlink, so a name taken
meanwhile fails the move instead of being replaced, and removed images go to ``_removed/``
inside the data folder.

Every apply writes a journal (in the cache folder, under ``cleaning/``) before it moves a
file: each file's old and new place and its SHA-256, and the folders it made.
:func:`undo_last` checks every file first and refuses, naming the file, when one changed or
vanished since, or when its old place is taken again; otherwise it moves every file back and
removes the folders the apply made, so the folder is as it was, byte for byte.

Afterwards the session's data are updated in place of a new scan and split: every image
keeps its split, a moved image takes its new class, a removed one leaves the data (and comes
back with an undo), so the validation set stays comparable.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import data as data_mod
from ._cache import cache_dir, read_json, write_json
from .cleaning_plan import (
    LAYOUTS,
    REMOVED,
    ChangePlan,
    Step,
    data_root,
    inside,
    preview_plan,
    rel_path,
    resolve,
)
from .errors import DataError
from .regular_files import sha256_file

if TYPE_CHECKING:
    from .session import Session

__all__ = ["REMOVED", "ChangePlan", "CleaningResult", "apply_plan", "last_applied", "preview_plan", "undo_last"]

_RECORDS = 20  # applies kept in a folder's journal, the last one first to be undone


@dataclass
class CleaningResult:
    """What :func:`apply_plan` or :func:`undo_last` did.

    Attributes:
        moved, removed: ``(from, to)`` paths relative to the data folder.
        counts_before, counts_after: images per class (training and validation).
        undone: True for an undo.
        message: the same in one line.
    """

    moved: list[tuple[str, str]]
    removed: list[tuple[str, str]]
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    undone: bool = False
    message: str = ""

    def frame(self) -> pd.DataFrame:
        """One row per file: action, from, to."""
        verb = ("moved back", "put back") if self.undone else ("moved", "removed")
        rows = [(verb[0], a, b) for a, b in self.moved] + [(verb[1], a, b) for a, b in self.removed]
        return pd.DataFrame(rows, columns=["action", "from", "to"])


# ---------------------------------------------------------------------------- files
def _readable_hash(path: Path, root: Path, then: str) -> str:
    try:
        return sha256_file(path)
    except OSError as exc:
        raise DataError(f"Cannot read {rel_path(path, root)} ({exc.strerror or exc}). {then}") from exc


def _move(source: Path, target: Path) -> None:
    """Move a file without ever replacing one at ``target`` (a hard link, then an unlink)."""
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FAT file systems)
        if os.path.lexists(target):
            raise FileExistsError(17, "File exists", str(target)) from None
        os.rename(source, target)
        return
    os.unlink(source)


def _make_folders(folders: list[Path]) -> list[Path]:
    made: list[Path] = []
    try:
        for folder in folders:
            try:
                os.mkdir(folder)
            except FileExistsError:
                if os.path.islink(folder) or not folder.is_dir():
                    raise
                continue
            made.append(folder)
    except OSError:
        _remove_folders(made)
        raise
    return made


def _remove_folders(folders: Iterable[Path]) -> list[Path]:
    """Remove these folders, last first, when empty; returns those left because they were not."""
    left = []
    for folder in reversed(list(folders)):
        try:
            os.rmdir(folder)
        except FileNotFoundError:
            pass
        except OSError:
            left.append(folder)
    return left


# ---------------------------------------------------------------------------- the journal
def _journal(real: Path) -> str:
    cache_dir("cleaning")
    return f"cleaning/{hashlib.sha256(os.fsencode(real)).hexdigest()[:16]}.json"


def _records(real: Path) -> list[dict[str, Any]]:
    data = read_json(_journal(real))
    records = data.get("applied") if data.get("root") == str(real) else None
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def _store(real: Path, records: list[dict[str, Any]]) -> None:
    write_json(_journal(real), {"root": str(real), "applied": records[-_RECORDS:]})


def last_applied(session: Session) -> dict[str, Any] | None:
    """The last apply on the session's data folder that can be undone: when, moved, removed; else ``None``."""
    bundle = session.data
    if bundle is None or bundle.report.layout not in LAYOUTS:
        return None
    try:
        _, real = data_root(bundle)
    except DataError:
        return None
    records = _records(real)
    if not records:
        return None
    steps = records[-1].get("steps") or []
    return {"when": records[-1].get("when"), "moved": sum(s.get("action") == "move" for s in steps),
            "removed": sum(s.get("action") == "remove" for s in steps)}


# ---------------------------------------------------------------------------- apply and undo
def apply_plan(session: Session, plan: ChangePlan) -> CleaningResult:
    """Move and remove files as ``plan`` says, write the journal, and update the session's data.

    Raises:
        DataError: a refused change (naming it; nothing moved), an empty plan, or a move that
            failed (everything moved so far is put back). BusyError: while training runs.
    """
    with session._lock:
        session.require_idle("move image files")
        bundle = session._require_data()
        root, steps, folders = resolve(session, plan)
        if not steps:
            raise DataError("The plan changes nothing: choose 'move to' or 'remove' for some images first.")
        _, real = data_root(bundle)
        hashes = [_readable_hash(s.source, root, "Nothing was moved.") for s in steps]
        try:
            made = _make_folders(folders)
        except OSError as exc:
            raise DataError(f"Cannot make a folder in {root} ({exc.strerror or exc}). Nothing was moved.") from exc
        record = {
            "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "made": [rel_path(f, root) for f in made],
            "steps": [{"action": s.action, "from": rel_path(s.source, root), "to": rel_path(s.target, root),
                       "split": s.split, "label": s.label, "new_label": s.new_label, "sha256": h}
                      for s, h in zip(steps, hashes)],
        }
        records = _records(real)
        try:
            _store(real, [*records, record])
        except OSError as exc:
            _remove_folders(made)
            raise DataError(f"Cannot write the journal in the cache folder ({exc.strerror or exc}), so the "
                            "changes could not be undone: nothing was moved. Set TLWIDGETS_CACHE_DIR to a "
                            "writable folder.") from exc
        done: list[Step] = []
        try:
            for step in steps:
                _move(step.source, step.target)
                done.append(step)
        except OSError as exc:
            for step in reversed(done):
                _move(step.target, step.source)
            _remove_folders(made)
            _store(real, records)
            failed = steps[len(done)]
            raise DataError(f"Could not move {rel_path(failed.source, root)} to {rel_path(failed.target, root)} "
                            f"({exc.strerror or exc}); the files moved before it were put back, so nothing "
                            "changed.") from exc
        moved = {str(s.source): (str(s.target), s.new_label) for s in steps if s.action == "move"}
        removed = {str(s.source) for s in steps if s.action == "remove"}
        pairs = [(rel_path(s.source, root), rel_path(s.target, root)) for s in steps]
        result = CleaningResult([p for p, s in zip(pairs, steps) if s.action == "move"],
                                [p for p, s in zip(pairs, steps) if s.action == "remove"],
                                _counts(bundle), {})
        _install(session, bundle, root, moved, removed, [], result)
        return result


def undo_last(session: Session) -> CleaningResult:
    """Put back the files of the last :func:`apply_plan` on the session's data folder.

    Every file is checked before any moves: the undo is refused, naming the file, when a
    moved file changed or vanished since, or when its old place is taken again.

    Raises:
        DataError: nothing to undo, or a refusal (nothing moved back). BusyError: while training runs.
    """
    with session._lock:
        session.require_idle("move image files back")
        bundle = session._require_data()
        root, real = data_root(bundle)
        records = _records(real)
        if not records:
            raise DataError(f"Nothing to undo in {root}: no changes of the Cleaner are recorded for it "
                            "(or they were undone already).")
        record = records[-1]
        steps = [_journal_step(root, real, s) for s in record.get("steps") or []]
        for action, source, target, _, _, _, digest in steps:
            _check_undo(root, source, target, digest)
        done: list[tuple[Path, Path]] = []
        try:
            for _, source, target, *_ in reversed(steps):
                _move(target, source)
                done.append((source, target))
        except OSError as exc:
            for source, target in reversed(done):
                _move(source, target)
            raise DataError(f"Could not move {rel_path(target, root)} back ({exc.strerror or exc}); the files moved "
                            "back before it were moved again, so nothing changed.") from exc
        made = [_journal_path(root, real, p) for p in record.get("made") or []]
        left = _remove_folders(made)
        _store(real, records[:-1])
        moved = {str(t): (str(s), label) for a, s, t, _, label, _, _ in steps if a == "move"}
        added = [(str(s), split, label) for a, s, _, split, label, _, _ in steps if a == "remove"]
        result = CleaningResult([(rel_path(t, root), rel_path(s, root)) for a, s, t, *_ in steps if a == "move"],
                                [(rel_path(t, root), rel_path(s, root)) for a, s, t, *_ in steps if a == "remove"],
                                _counts(bundle), {}, undone=True)
        extra = (f" Left {', '.join(rel_path(f, root) for f in left)}: it holds files added since."
                 if left else "")
        _install(session, bundle, root, moved, set(), added, result, extra)
        return result


def _journal_path(root: Path, real: Path, rel: Any) -> Path:
    """A path the journal names, checked to stay inside the data folder."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        raise DataError(f"The journal of {root} names {rel!r}, which is not a place inside it: nothing was moved "
                        "back.")
    path = root / rel
    if not inside(os.path.realpath(path.parent), real) and os.path.realpath(path.parent) != str(real):
        raise DataError(f"{rel} leads outside the data folder {root}: nothing was moved back.")
    return path


def _journal_step(root: Path, real: Path, step: Any) -> tuple[str, Path, Path, str, int, int, str]:
    damaged = DataError(f"The journal of {root} is damaged: nothing was moved back.")
    if not isinstance(step, dict) or step.get("action") not in ("move", "remove"):
        raise damaged
    try:
        label, new_label = int(step.get("label", 0)), int(step.get("new_label", 0))
    except (TypeError, ValueError):
        raise damaged from None
    return (step["action"], _journal_path(root, real, step.get("from")), _journal_path(root, real, step.get("to")),
            "val" if step.get("split") == "val" else "train", label, new_label, str(step.get("sha256", "")))


def _check_undo(root: Path, source: Path, target: Path, digest: str) -> None:
    now, then = rel_path(target, root), rel_path(source, root)
    if os.path.lexists(source):
        raise DataError(f"Cannot undo: {then} exists again, and moving {now} back would overwrite it. Move or "
                        "rename it first. Nothing was moved back.")
    if not source.parent.is_dir() or os.path.islink(source.parent):
        raise DataError(f"Cannot undo: the folder {rel_path(source.parent, root)} of {then} is gone. Nothing was "
                        "moved back.")
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is None or not stat.S_ISREG(mode):
        raise DataError(f"Cannot undo: {now} is no longer there (moved, deleted or replaced since the changes "
                        "were applied). Nothing was moved back.")
    if _readable_hash(target, root, "Nothing was moved back.") != digest:
        raise DataError(f"Cannot undo: {now} changed since the changes were applied, so moving it back would not "
                        f"restore {then} as it was. Nothing was moved back.")


# ---------------------------------------------------------------------------- the session's data
def _counts(bundle: data_mod.DataBundle) -> dict[str, int]:
    n = len(bundle.classes)
    counts = [0] * n
    for s in (*bundle.train, *bundle.val):
        if 0 <= s.label < n:
            counts[s.label] += 1
    return dict(zip(bundle.classes, counts))


def _install(session: Session, bundle: data_mod.DataBundle, root: Path, moved: dict[str, tuple[str, int]],
             removed: set[str], added: list[tuple[str, str, int]], result: CleaningResult, extra: str = "") -> None:
    """Give the session its data after the files changed: splits kept, classes and places updated."""
    shown = Path(os.path.expanduser(bundle.report.source))  # paths spelled as the scan spelled them

    def spelled(path: str) -> str:
        return str(shown / os.path.relpath(path, root))

    def changed(samples: list[data_mod.Sample]) -> list[data_mod.Sample]:
        out = []
        for s in samples:
            key = os.path.abspath(s.path)
            if key in removed:
                continue
            new = moved.get(key)
            out.append(data_mod.Sample(spelled(new[0]), new[1]) if new is not None else s)
        return out

    train, val = changed(bundle.train), changed(bundle.val)
    for path, split, label in added:
        (val if split == "val" else train).append(data_mod.Sample(spelled(path), label))
    train.sort(key=lambda s: (s.label, s.path))
    val.sort(key=lambda s: (s.label, s.path))
    classes = list(bundle.classes)
    n = len(classes)
    tr = [sum(1 for s in train if s.label == i) for i in range(n)]
    va = [sum(1 for s in val if s.label == i) for i in range(n)]
    counts = pd.DataFrame({"train": tr, "val": va, "total": [a + b for a, b in zip(tr, va)]},
                          index=pd.Index(classes, name="class")).astype("int64")
    new = data_mod.DataBundle(classes, train, val, bundle.report, bundle.train_tf, bundle.eval_tf)
    result.counts_after = _counts(new)
    result.message = _message(result) + extra
    notes = [note for note in bundle.report.notes if not note.startswith("Cleaner: ")]
    new.report = replace(bundle.report, counts=counts, notes=[*notes, f"Cleaner: {result.message}"])
    session.install_state(data=new, last_eval=None, message=result.message)  # the old evaluation named old places


def _message(result: CleaningResult) -> str:
    changes = [f"{name!r} {before} → {result.counts_after.get(name, 0)} images"
               for name, before in result.counts_before.items() if result.counts_after.get(name, 0) != before]
    tail = f"; {', '.join(changes)}" if changes else ""
    if result.undone:
        return (f"Undid the last changes: moved {len(result.moved)} back and put back {len(result.removed)} "
                f"removed{tail}.")
    return f"Moved {len(result.moved)}, removed {len(result.removed)}{tail}. Undo puts them back."
