"""A bundle's files on disk, read and written safely.

Reading takes only regular files that lie inside the bundle (no FIFO that would block, no
device, no link to a file elsewhere), each up to a size bound checked before reading. A
zip's directory is checked before it is listed, and its members' sizes before they are
unpacked. Writing puts each file in a temporary file beside its final name and renames it
over the old one, so a reader finds the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ModelError

#: Entries a bundle zip may list (it holds three files).
MAX_ZIP_ENTRIES = 64
TEMP_PREFIX = ".tlw-save-"

Reader = Callable[[str, int], "bytes | None"]


# ---------------------------------------------------------------------------- reading
@contextlib.contextmanager
def open_bundle(path: Path, hint: str) -> Iterator[Reader]:
    """``read(name, limit)`` for the files of the bundle folder or zip at ``path``.

    ``read`` returns the bytes of the named file, or ``None`` when the bundle has none.

    Raises:
        ModelError: ``path`` is no folder or zip, or a file is not a plain file of the bundle
            or is larger than ``limit`` bytes.
    """
    if path.is_dir():
        yield lambda name, limit: read_plain(path, name, limit)
        return
    if path.is_file() and zipfile.is_zipfile(path):
        check_zip_directory(path)
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise ModelError(f"{path} is a damaged zip ({exc}). {hint}") from exc
        with zf:
            yield lambda name, limit: read_member(zf, path, name, limit)
        return
    if not os.path.lexists(path):
        raise ModelError(f"No bundle at {path}: the path does not exist.")
    raise ModelError(f"{path} is not a tlwidgets bundle (a folder or .zip holding tlwidgets.json). {hint}")


def _too_big(where: Path, size: int, limit: int) -> ModelError:
    return ModelError(
        f"{where} is {size:,} bytes, more than the {limit:,} a bundle's file may have, so it is not read. "
        "The bundle was edited or damaged; save the session again."
    )


def read_plain(folder: Path, name: str, limit: int) -> bytes | None:
    """The bytes of ``folder/name``: a regular file inside ``folder`` of at most ``limit`` bytes."""
    file = folder / name
    try:
        info = os.stat(file)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelError(f"{file} cannot be read ({exc.strerror or exc}).") from exc
    real, home = os.path.realpath(file), os.path.realpath(folder)
    if os.path.commonpath([real, home]) != home:
        raise ModelError(
            f"{file} links to {real}, outside the bundle; a bundle is read only from its own files. "
            "Copy the file into the bundle if you trust it."
        )
    if not stat.S_ISREG(info.st_mode):
        raise ModelError(f"{file} is not a regular file (a folder, FIFO or device); the bundle is damaged.")
    if info.st_size > limit:
        raise _too_big(file, info.st_size, limit)
    try:
        # O_NONBLOCK: a FIFO swapped in after the check above cannot block the open.
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ModelError(f"{file} is not a regular file (a folder, FIFO or device); the bundle is damaged.")
            data = f.read(min(info.st_size, limit) + 1)
    except OSError as exc:
        raise ModelError(f"{file} cannot be read ({exc.strerror or exc}).") from exc
    if len(data) > limit:
        raise _too_big(file, len(data), limit)
    return data


def read_member(zf: zipfile.ZipFile, path: Path, name: str, limit: int) -> bytes | None:
    """The bytes of member ``name`` of the bundle zip at ``path``, at most ``limit`` of them."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        return None
    where = path / name
    if info.is_dir():
        raise ModelError(f"{where} is a folder in the zip, not a file; the bundle is damaged.")
    if info.file_size > limit:
        raise _too_big(where, info.file_size, limit)
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{where} cannot be unpacked ({exc}); the bundle is damaged.") from exc
    if len(data) != info.file_size:
        raise ModelError(f"{where} does not have the size the zip records for it; the bundle is damaged.")
    return data


def check_zip_directory(path: Path) -> None:
    """Refuse a zip listing far more entries than a bundle's three before anything lists them
    (millions of entries would take gigabytes of memory to list)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - (22 + 65_535 + 20)))
            tail = f.read()
            at = tail.rfind(b"PK\x05\x06")
            if at < 0 or len(tail) < at + 22:
                return  # not found: zipfile says what is wrong
            entries, directory = struct.unpack_from("<2xH I", tail, at + 8)
            locator = tail[max(0, at - 20):at]
            if locator.startswith(b"PK\x06\x07") and len(locator) == 20:  # zip64: the counts are there
                (offset,) = struct.unpack_from("<Q", locator, 8)
                f.seek(offset)
                record = f.read(56)
                if record.startswith(b"PK\x06\x06") and len(record) == 56:
                    entries, directory = struct.unpack_from("<QQ", record, 32)
    except (OSError, struct.error, ValueError) as exc:
        raise ModelError(f"{path} cannot be read as a zip ({exc}).") from exc
    if entries > MAX_ZIP_ENTRIES or directory > MAX_ZIP_ENTRIES * 1024:
        raise ModelError(
            f"{path} lists {entries:,} entries ({directory:,} bytes of directory); a bundle zip holds "
            "three files, so it is not opened. The bundle was edited or damaged; save the session again."
        )


# ---------------------------------------------------------------------------- writing
def target(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``path`` as the user wrote it (with ``~`` expanded), and resolved."""
    try:
        shown = Path(path).expanduser()
        return shown, shown.resolve()
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        raise ModelError(f"Cannot use {path!r} as a bundle path ({exc}); choose another path.") from exc


def check_target(dest: Path, shown: Path, marker: str) -> None:
    """Refuse, before anything is written, a path under a file and an existing file or
    folder that is not a bundle (a folder holding ``marker``, or a zip listing it)."""
    for above in dest.parents:
        if os.path.lexists(above):
            if not above.is_dir():
                raise ModelError(
                    f"Cannot save to {shown}: {above} is a file, not a folder. Nothing was written; "
                    "choose a path inside a folder."
                )
            break
    if not os.path.lexists(dest):
        return
    if dest.is_dir():
        if dest.suffix.lower() == ".zip":
            raise ModelError(f"{dest} is a folder, so a .zip bundle cannot be written there; choose another name.")
        if any(dest.iterdir()) and not (dest / marker).is_file():
            raise ModelError(
                f"{dest} is a folder that is not a tlwidgets bundle; refusing to overwrite it. "
                "Choose a new path (a bundle is a folder of its own)."
            )
    elif not (dest.suffix.lower() == ".zip" and dest.is_file() and _zip_is_bundle(dest, marker)):
        raise ModelError(f"{dest} exists and is not a tlwidgets bundle; choose another path.")


def _zip_is_bundle(path: Path, marker: str) -> bool:
    try:
        check_zip_directory(path)
        with zipfile.ZipFile(path) as zf:
            return marker in zf.namelist()
    except (OSError, ModelError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def why_not_written(exc: OSError) -> str:
    """What refused a file or folder of a save, in words: the folder that does not take new
    entries (not the temporary name the user never chose), or the system's reason."""
    reason = exc.strerror or str(exc)
    if exc.filename and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR):
        return f"the folder {Path(str(exc.filename)).parent} does not accept new files ({reason})"
    return reason


def make_folders(folder: Path, created: list[Path]) -> None:
    """Create ``folder`` and missing parents, appending each one created to ``created``."""
    missing = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    for p in reversed(missing):
        os.mkdir(p)
        created.append(p)


def remove_folders(created: list[Path]) -> None:
    """Remove the (empty) folders :func:`make_folders` created, deepest first."""
    for p in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(p)


def temp_file(folder: Path, name: str, temps: list[Path], data: bytes | None = None) -> Path:
    """A new file in ``folder`` (listed in ``temps``) holding ``data``, flushed to disk."""
    tmp = folder / f"{TEMP_PREFIX}{secrets.token_hex(6)}-{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    temps.append(tmp)
    with os.fdopen(fd, "wb") as f:
        if data is not None:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return tmp


def remove_files(temps: list[Path]) -> None:
    """Remove the temporary files left (those renamed into place are gone already)."""
    for tmp in temps:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def flush_to_disk(path: Path) -> None:
    """Make a file written by another library durable before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

