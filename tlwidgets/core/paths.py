"""Checks on paths a user names for tlwidgets to write (checkpoints, bundles, scripts), and on class names.

A run that can only fail at its end (a checkpoint after the first epoch, a bundle after
training) is checked before it starts: the nearest existing folder on the way must be a
folder, and a probe file must be creatable in it. Nothing is created or left behind by
the check itself.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path, PureWindowsPath

from .errors import ConfigError, DataError
from .images import is_hidden

_MAX_NAME = 100  # characters: a class name is a label people read
_MAX_NAME_BYTES = 255  # what most file systems allow for one name


def writable_file_target(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``path`` (absolute) when a file can be written there, else raise ConfigError.

    Args:
        path: where the file will go; missing parent folders are fine (they are created
            when the file is written).
        what: the kind of file, for the message (``"checkpoint"``, ``"bundle"``).

    Raises:
        ConfigError: naming the user's path and why it cannot be written.
    """
    given = os.fspath(path)
    if not given.strip():
        raise ConfigError(f"The {what} path is empty: give a file name such as 'runs/{what}'.")
    target = Path(given).expanduser().absolute()
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise ConfigError(f"Cannot write the {what} to {given}: {exc.strerror}. Choose another path.") from exc
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"Cannot write the {what} to {given}: it is {kind}. Choose a file path.")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"Cannot write the {what} to {given}: {folder} is a file, not a folder. Choose another path.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".tlw-probe-", dir=folder)
    except OSError as exc:
        raise ConfigError(
            f"Cannot write the {what} to {given}: {folder} does not accept new files ({exc.strerror}). "
            "Choose a folder you can write to, such as one under your home folder."
        ) from exc
    os.close(fd)
    os.unlink(probe)
    return target


def class_folders(root: Path) -> list[str]:
    """Names of the real (not linked), visible sub-folders of ``root``."""
    with os.scandir(root) as entries:
        return [e.name for e in entries if e.is_dir(follow_symlinks=False) and not is_hidden(e.name)]


def check_class_name(name: object, root: Path | None = None, *, existing: bool = False) -> str:
    """The one check every class name goes through; returns the name to use.

    A class name is one folder name: not empty, not ``.`` or ``..``, without ``/``, ``\\``,
    a drive or control characters, not hidden (a leading dot), at most 100 characters and
    255 bytes. A new name is stripped of surrounding spaces first. With ``existing=True``
    the name must also be, exactly, one of the class folders of ``root`` now: a real
    sub-folder, not a link, that resolves to a folder directly inside ``root``.

    Args:
        name: the class name as given.
        root: the folder of class sub-folders (named in messages; required with ``existing``).
        existing: the name must be a class of ``root``.

    Raises:
        DataError: naming the value and what to do instead.
    """
    where = root.name if root is not None else "the folder"
    if not isinstance(name, str):
        raise DataError(f"Class name {name!r} is not text: give the class as a folder name, e.g. 'cat'.")
    clean = name if existing else name.strip()
    if not clean.strip():
        raise DataError("Type or select a class name first (e.g. 'cat').")
    if (clean in (".", "..") or "/" in clean or "\\" in clean or os.sep in clean or (os.altsep or "/") in clean
            or os.path.isabs(clean) or PureWindowsPath(clean).anchor):  # fmt: skip
        raise DataError(f"Class name {clean!r} is not allowed: a class is one folder name inside {where}, "
                        "without '/' or '..'. Choose another name.")  # fmt: skip
    if is_hidden(clean):
        raise DataError(f"Class name {clean!r} is not allowed: it is a hidden folder (or one tools leave behind), "
                        "which loading skips. Choose another name, not starting with a dot.")  # fmt: skip
    if any(ord(c) < 32 or ord(c) == 127 for c in clean):
        raise DataError(f"Class name {clean!r} is not allowed: it has control characters. Choose another name.")
    try:
        size = len(os.fsencode(clean))
    except UnicodeError:
        raise DataError(f"Class name {clean!r} cannot be a folder name on this computer. "
                        "Choose another name.") from None  # fmt: skip
    if len(clean) > _MAX_NAME or size > _MAX_NAME_BYTES:
        raise DataError(f"Class name {clean[:40]!r}... is too long ({len(clean)} characters, {size} bytes; at most "
                        f"{_MAX_NAME} characters and {_MAX_NAME_BYTES} bytes). Choose another name.")  # fmt: skip
    if existing:
        if root is None:
            raise TypeError("check_class_name(existing=True) needs the root folder")
        names = class_folders(root)
        if clean not in names:
            if os.path.islink(root / clean):
                raise DataError(f"{clean!r} in {where} is a link to another place, not a class folder: the "
                                "collector changes only real sub-folders. Make it a real folder there.")  # fmt: skip
            choices = ", ".join(sorted(names)) or "none yet"
            raise DataError(f"There is no class {clean!r} in {where} (classes: {choices}): "
                            "choose one of them, or add the class first.")  # fmt: skip
        if (root / clean).resolve().parent != root:
            raise DataError(f"{clean!r} in {where} leads outside the folder: the collector leaves it alone.")
    return clean
