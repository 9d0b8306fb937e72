"""Opening files only when they are regular files: a named pipe, socket or device is refused.

Reading a named pipe blocks until something writes to it, and a device can return endless
data, so every image, archive and upload is opened through :func:`open_regular_file`, which
checks the file on the open descriptor (a file swapped for a pipe after an earlier check is
still refused).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat

# O_NONBLOCK: opening a named pipe returns at once instead of waiting for a writer.
# O_NOCTTY: opening a terminal device never makes it the controlling terminal.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


class NotRegularFileError(OSError):
    """The path is a named pipe, socket, device or folder: reading it could block or never end.

    ``str()`` says what it is instead: ``"a named pipe"``, ``"a device"``, ...
    """


class RegularFile(io.BufferedReader):
    """A regular file opened by :func:`open_regular_file`; ``str()`` is its path."""

    def __str__(self) -> str:
        return str(self.name)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in plain words, from its ``st_mode``."""
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a special file"


def open_regular_file(path: str | os.PathLike[str]) -> RegularFile:
    """Open ``path`` for binary reading only when it is a regular file.

    The file is opened without blocking and checked on the open descriptor, so a file
    swapped for a named pipe or a device between any earlier check and this call is
    refused instead of blocking forever (or reading endless data).

    Raises:
        NotRegularFileError: a named pipe, socket, device or folder.
        OSError: the file is missing or cannot be opened (permission denied, ...).
    """
    name = os.fspath(path)
    fd = os.open(name, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(file_kind(mode))
        if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        raw = io.FileIO(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    raw.name = name
    return RegularFile(raw)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a regular file's bytes, read in 1 MiB pieces (a FIFO or device is refused)."""
    digest = hashlib.sha256()
    with open_regular_file(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
