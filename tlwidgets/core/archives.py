"""Archives (zip and tar) of class folders, extracted safely into the cache.

Nothing outside the extraction folder is written: member names are checked (no absolute
paths, ``..``, drive letters, links that leave the folder, a file and a folder of the same
name), the sizes are bounded before anything is written (:data:`MAX_ARCHIVE_BYTES`,
:data:`MAX_ARCHIVE_DISK_SHARE`, :data:`MAX_COMPRESSION_RATIO`, :data:`MAX_ARCHIVE_MEMBERS`),
a member longer than it claims is cut off, and extraction goes into a temporary folder that
is renamed at the end and removed on any failure. Messages name the user's archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from ._cache import cache_dir
from .errors import DataError
from .images import IMAGE_EXTENSIONS, NotRegularFileError, is_hidden, open_regular_file

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

# What an archive may unpack to, checked from its member list before anything is
# written (as PIL.Image.MAX_IMAGE_PIXELS guards single images). Photos barely compress,
# so a real image archive is far below these; raise a limit for an archive you trust.
MAX_ARCHIVE_BYTES = 8 * 2**30
"""Most bytes an archive may unpack to, all members together (8 GiB)."""
MAX_ARCHIVE_DISK_SHARE = 0.5
"""Largest share of the free disk space (where archives are extracted) an archive may fill."""
MAX_COMPRESSION_RATIO = 100
"""Highest uncompressed : compressed ratio of a zip member, and of a whole archive."""
RATIO_CHECK_BYTES = 2**20
"""Members (and archives) unpacking to less than this (1 MiB) are not ratio-checked."""
MAX_ARCHIVE_MEMBERS = 200_000
"""Most members (files, folders, links) an archive may hold."""

_COPY_CHUNK = 2**20
_LIMITS_HINT = ("Extract it yourself if you trust it, or raise the limit "
                "(tlwidgets.core.archives.{name}).")


def is_archive(path: Path) -> bool:
    """True when the file name ends with a supported archive suffix."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _size(n: float) -> str:
    """Bytes for people: ``1.0 GiB``, ``12.3 MiB``, ``512 bytes``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def _unsafe_reason(name: str) -> str | None:
    """Why an archive member name would write outside the target folder, or None."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "has an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "contains a '..' component"
    return None


def _parts(name: str) -> tuple[str, ...]:
    """A member name as relative path parts (backslashes count as separators, ``.`` is dropped)."""
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _check_tar_member(member: tarfile.TarInfo) -> str | None:
    reason = _unsafe_reason(member.name)
    if reason:
        return reason
    if member.issym() or member.islnk():
        link = member.linkname.replace("\\", "/")
        if link.startswith("/") or re.match(r"^[A-Za-z]:", link):
            return f"is a link to the absolute path {member.linkname!r}"
        base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / link).parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                return f"is a link pointing outside the archive ({member.linkname!r})"
    elif not (member.isfile() or member.isdir()):
        return "is a device or other special file"
    return None


class _Plan:
    """The members of one archive, checked against the limits and each other as they are listed.

    Nothing is written while planning, so a refused archive leaves no trace.
    """

    def __init__(self, archive: Path, archive_bytes: int) -> None:
        self.archive = archive
        self.archive_bytes = max(archive_bytes, 1)
        self.count = 0
        self.total = 0
        self.files: dict[tuple[str, ...], str] = {}  # path parts -> member name (files and links)
        self.dirs: dict[tuple[str, ...], str] = {}  # path parts -> a member name that makes it a folder
        self.images = 0
        self.archives: list[str] = []

    def refuse(self, why: str, limit: str | None = None) -> DataError:
        hint = " " + _LIMITS_HINT.format(name=limit) if limit else ""
        return DataError(f"Refusing to extract {self.archive}: {why}.{hint}")

    def add(self, name: str, is_dir: bool, size: int, packed: int | None = None) -> None:
        """Count one member; ``packed`` is its compressed size when the format has one."""
        self.count += 1
        if self.count > MAX_ARCHIVE_MEMBERS:
            raise self.refuse(f"it holds more than {MAX_ARCHIVE_MEMBERS:,} members", "MAX_ARCHIVE_MEMBERS")
        if packed is not None and size > RATIO_CHECK_BYTES and size > MAX_COMPRESSION_RATIO * max(packed, 1):
            raise self.refuse(
                f"its member {name!r} would unpack {_size(packed)} into {_size(size)}, a ratio of "
                f"{size / max(packed, 1):,.0f} to 1, above the limit of {MAX_COMPRESSION_RATIO} to 1 "
                "(images do not compress that much; this is how a zip bomb looks)", "MAX_COMPRESSION_RATIO")
        self.total += size
        if self.total > MAX_ARCHIVE_BYTES:
            raise self.refuse(
                f"it would unpack to more than {_size(MAX_ARCHIVE_BYTES)} ({_size(self.total)} after "
                f"{self.count:,} members)", "MAX_ARCHIVE_BYTES")
        if self.total > RATIO_CHECK_BYTES and self.total > MAX_COMPRESSION_RATIO * self.archive_bytes:
            raise self.refuse(
                f"its {_size(self.archive_bytes)} would unpack to more than {_size(self.total)}, a ratio of "
                f"{self.total / self.archive_bytes:,.0f} to 1, above the limit of {MAX_COMPRESSION_RATIO} to 1 "
                "(images do not compress that much; this is how an archive bomb looks)", "MAX_COMPRESSION_RATIO")
        parts = _parts(name)
        if not parts:
            return
        for i in range(1, len(parts) + (1 if is_dir else 0)):
            self._folder(parts[:i], name)
        if not is_dir:
            if parts in self.dirs:
                raise self._clash(parts, name, self.dirs[parts])
            self.files[parts] = name
            lowered = parts[-1].lower()
            self.images += os.path.splitext(lowered)[1] in IMAGE_EXTENSIONS and not is_hidden(parts[-1])
            if lowered.endswith(ARCHIVE_SUFFIXES) and not is_hidden(parts[-1]):
                self.archives.append(name)

    def _folder(self, parts: tuple[str, ...], name: str) -> None:
        if parts in self.files:
            raise self._clash(parts, self.files[parts], name)
        self.dirs.setdefault(parts, name)

    def _clash(self, parts: tuple[str, ...], file_member: str, dir_member: str) -> DataError:
        shown = "/".join(parts)
        return DataError(
            f"Cannot extract {self.archive}: it holds both a file and a folder named {shown!r} "
            f"(members {file_member!r} and {dir_member!r}), and a folder cannot hold both. "
            "Rename one of them and rebuild the archive."
        )

    def check_link(self, member: tarfile.TarInfo) -> None:
        """A hard link must point to a file stored earlier in the archive."""
        target = _parts(member.linkname)
        if target not in self.files:
            raise DataError(
                f"Cannot extract {self.archive}: its member {member.name!r} is a hard link to "
                f"{member.linkname!r}, which is not a file stored before it in the archive. Rebuild "
                "the archive without hard links (tar --hard-dereference), or with the linked file included."
            )

    def check_contents(self) -> None:
        """Refuse an archive that holds no image at all (for instance only another archive)."""
        if self.images:
            return
        if self.archives:
            inner = self.archives[0]
            more = f" (and {len(self.archives) - 1} more)" if len(self.archives) > 1 else ""
            raise DataError(
                f"{self.archive} holds no images, only the archive {inner!r}{more}; archives inside "
                f"archives are not opened. Extract {self.archive.name} and pass the path of "
                f"{PurePosixPath(inner.replace(chr(92), '/')).name} instead."
            )
        raise DataError(
            f"{self.archive} holds no image files ({self.count} members, none with an image extension "
            f"such as .jpg or .png). Pass an archive with one folder per class, e.g. cats/1.jpg, dogs/1.jpg."
        )

    def check_disk(self, where: Path) -> None:
        free = shutil.disk_usage(where).free
        if self.total > MAX_ARCHIVE_DISK_SHARE * free:
            raise self.refuse(
                f"it unpacks to {_size(self.total)}, more than {MAX_ARCHIVE_DISK_SHARE:.0%} of the "
                f"{_size(free)} free in {where}. Free some disk space or set the environment variable "
                "TLWIDGETS_CACHE_DIR to a folder on a larger disk", "MAX_ARCHIVE_DISK_SHARE")


def _unsafe(archive: Path, name: str, why: str) -> DataError:
    return DataError(
        f"Refusing to extract {archive}: its member {name!r} {why}, which could write outside "
        "the extraction folder. Extract the archive yourself after checking it, or rebuild it "
        "without that member."
    )


def _plan_zip(zf: zipfile.ZipFile, plan: _Plan) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    for info in infos:
        why = _unsafe_reason(info.filename)
        if why:
            raise _unsafe(plan.archive, info.filename, why)
        if info.flag_bits & 0x1:
            raise DataError(
                f"Cannot extract {plan.archive}: its member {info.filename!r} is encrypted. "
                "Extract the archive yourself with its password, and pass the folder."
            )
        is_dir = info.filename.replace("\\", "/").endswith("/")
        plan.add(info.filename, is_dir, info.file_size, info.compress_size)
    return infos


def _plan_tar(tf: tarfile.TarFile, plan: _Plan) -> list[tarfile.TarInfo]:
    # Members are listed one by one: each is checked before reading on, so a compressed
    # bomb is refused from its first header instead of being decompressed to be skipped.
    members = []
    while (member := tf.next()) is not None:
        why = _check_tar_member(member)
        if why:
            raise _unsafe(plan.archive, member.name, why)
        if member.islnk():
            plan.check_link(member)
        plan.add(member.name, member.isdir(), member.size if member.isfile() else 0)
        members.append(member)
    return members


def _write_zip(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], target: Path, archive: Path) -> None:
    """Write every member as a plain file, counting the bytes: none may exceed its declared size."""
    for info in infos:
        parts = _parts(info.filename)
        if not parts:
            continue
        dest = target.joinpath(*parts)
        if info.filename.replace("\\", "/").endswith("/"):
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with zf.open(info) as src, open(dest, "wb") as out:
            while chunk := src.read(_COPY_CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise DataError(
                        f"Refusing to extract {archive}: its member {info.filename!r} holds more than "
                        f"the {_size(info.file_size)} its header declares. The archive is damaged or crafted."
                    )
                out.write(chunk)


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A new folder next to ``target``, renamed to it when the block succeeds, removed in any case."""
    tmp = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # another process extracted it first: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract(archive: Path, fp: Any, archive_bytes: int, target: Path) -> None:
    """Check every member against the limits first, then extract into ``target``.

    A refused archive writes nothing; a failure while writing leaves nothing behind.
    Zip members are written here, counting their bytes. Tar members take exactly the
    size their header says (the stream's layout depends on it), and are written by
    tarfile's ``data`` filter after the checks.
    """
    plan = _Plan(archive, archive_bytes)
    tmp = target
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(fp) as zf:
                infos = _plan_zip(zf, plan)
                plan.check_contents()
                plan.check_disk(target.parent)
                with _staging(target) as tmp:
                    _write_zip(zf, infos, tmp, archive)
            return
        with tarfile.open(fileobj=fp, mode="r:*") as tf:
            members = _plan_tar(tf, plan)
            plan.check_contents()
            plan.check_disk(target.parent)
            with _staging(target) as tmp:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, members=members, filter="data")
                else:  # Python < 3.11.4: every member was checked above
                    tf.extractall(tmp, members=members)
    except DataError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError,
            NotImplementedError, ValueError, zlib.error) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise DataError(f"Refusing to extract {archive}: {exc}.") from exc
        if isinstance(exc, OSError) and exc.filename and str(exc.filename).startswith(str(tmp) + os.sep):
            member = os.path.relpath(exc.filename, tmp)
            raise DataError(
                f"Cannot extract {archive}: writing its member {member!r} failed "
                f"({exc.strerror or exc}). Extract it yourself, or check the disk."
            ) from exc
        raise DataError(f"Cannot read the archive {archive}: {exc}. Is the file complete?") from exc


def extract_archive(archive: str | os.PathLike[str]) -> Path:
    """Extract an archive once into the cache and return the folder that holds its classes.

    The cache key is the archive's path, size and modification time, so a changed
    archive is extracted again. A single top-level folder is descended into. Members
    are checked first: against escaping the folder, against each other, and against
    :data:`MAX_ARCHIVE_BYTES`, :data:`MAX_ARCHIVE_DISK_SHARE`, :data:`MAX_COMPRESSION_RATIO`
    and :data:`MAX_ARCHIVE_MEMBERS`. Extraction goes to a temporary folder next to the
    target, renamed at the end; on any failure nothing is left in the cache.

    Raises:
        DataError: naming the archive, when it is unreadable, beyond a limit, holds no
            images, or has a member that would escape the folder.
    """
    archive = Path(archive).expanduser().resolve()
    try:
        fp = open_regular_file(archive)
    except NotRegularFileError as exc:
        raise DataError(f"{archive} is {exc}, not an archive file. Pass a .zip or .tar file.") from exc
    except FileNotFoundError as exc:
        raise DataError(f"Archive not found: {archive}. Check the path.") from exc
    except OSError as exc:
        raise DataError(f"Cannot read the archive {archive} ({exc.strerror or exc}).") from exc
    with fp:
        st = os.fstat(fp.fileno())
        key = hashlib.sha1(f"{archive}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()[:20]
        target = cache_dir("archives") / key
        if not target.is_dir():
            _extract(archive, fp, st.st_size, target)
    return _descend_single_folder(target)


def _descend_single_folder(folder: Path) -> Path:
    """Follow a lone top-level folder (``flowers/daisy/...`` -> ``flowers``) while it holds folders."""
    while True:
        entries = [e for e in folder.iterdir() if not is_hidden(e.name)]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        inner = entries[0]
        if not any(e.is_dir() and not is_hidden(e.name) for e in inner.iterdir()):
            return folder
        folder = inner


