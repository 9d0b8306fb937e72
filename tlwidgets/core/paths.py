"""Checks on paths a user names for tlwidgets to write (checkpoints, bundles, scripts).

A run that can only fail at its end (a checkpoint after the first epoch, a bundle after
training) is checked before it starts: the nearest existing folder on the way must be a
folder, and a probe file must be creatable in it. Nothing is created or left behind by
the check itself.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import ConfigError


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
