"""An ImageFolder on disk that grows class by class: the files behind the DataCollector.

Nothing here ever overwrites a file: new pictures get a free name (``cat.jpg``,
``cat_1.jpg``, ...) created with ``O_EXCL``, so two writers cannot pick the same one;
renaming a class onto an existing one is refused, and so is removing a class that still
holds pictures unless the caller confirms it.

Nothing here ever reaches outside the folder either: every class name goes through
:func:`tlwidgets.core.paths.check_class_name` (one folder name, and for an existing class
one of the real sub-folders), uploaded file names are cut down to a plain base name, links
are never followed, and removing a class deletes only its pictures.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from ..core.errors import DataError
from ..core.images import IMAGE_EXTENSIONS, is_hidden
from ..core.paths import check_class_name
from ..core.paths import class_folders as _class_folders

_FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
_UNSAFE = re.compile(r"[^\w.\- ]+")
_MAX_STEM_BYTES = 200  # room left for a "_123" suffix and the extension
_WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                               *(f"LPT{i}" for i in range(1, 10))})  # fmt: skip
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FD = {os.open, os.unlink, os.rmdir} <= os.supports_dir_fd and hasattr(os, "O_DIRECTORY")


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def safe_file_name(name: str, fallback_ext: str = ".jpg") -> str:
    """A plain, visible file name from an uploaded name: no folders, no leading dots, odd characters as ``_``.

    The result is one name of at most 255 bytes, never hidden, never empty (``image``
    stands in), with a picture extension (``fallback_ext`` when the name has none).
    """
    base = str(name).replace("\\", "/").replace("\x00", "_").rstrip("/").rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(base)
    stem = _UNSAFE.sub("_", stem).strip(" ._")[:80]
    while _utf8_len(stem) > _MAX_STEM_BYTES:
        stem = stem[:-1]
    stem = stem.rstrip(" ._") or "image"
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem += "_"
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", fallback_ext or ""):
        fallback_ext = ".jpg"
    ext = ext.lower() if ext.lower() in IMAGE_EXTENSIONS else fallback_ext
    return f"{stem}{ext}"


def image_extension(data: bytes, name: str = "") -> str:
    """Check that ``data`` decodes as a picture; return the extension to store it under.

    Raises:
        DataError: naming ``name``, when the bytes are not a picture Pillow can read.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            im.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not a known image format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise DataError(f"{name or 'The file'} is not a picture that can be read ({reason}): "
                        "use JPEG or PNG files.") from exc  # fmt: skip
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return ext
    return _FORMAT_EXTENSIONS.get(fmt, ".png")


@contextlib.contextmanager
def _opened_folder(folder: Path) -> Iterator[int | None]:
    """A descriptor of ``folder`` opened without following a link (``None`` where the OS has no ``dir_fd``).

    Files are then created and deleted relative to it, so swapping the folder for a link
    after it was checked cannot redirect them.
    """
    if not _DIR_FD:
        yield None
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | _NO_FOLLOW)
    except OSError as exc:
        raise DataError(f"Cannot open the folder {folder} ({exc.strerror}): it may have been moved; "
                        "press Open folder again.") from exc  # fmt: skip
    try:
        yield fd
    finally:
        os.close(fd)


def _check_file_name(file_name: str) -> None:
    if (not file_name or file_name in (".", "..") or is_hidden(file_name) or os.path.basename(file_name) != file_name
            or any(c in file_name for c in "/\\\x00")):  # fmt: skip
        raise DataError(f"File name {file_name!r} is not one plain file name: nothing written.")


def write_new_file(folder: Path, file_name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/file_name``, or to ``stem_1.ext``, ``stem_2.ext``... if taken.

    The file is created exclusively, so an existing file (or link) is never replaced or
    followed, even by a writer racing this one. ``file_name`` must be one plain name.
    """
    _check_file_name(file_name)
    stem, ext = os.path.splitext(file_name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW | getattr(os, "O_BINARY", 0)
    with _opened_folder(folder) as dir_fd:
        for i in range(100_000):
            name = file_name if i == 0 else f"{stem}_{i}{ext}"
            try:
                if dir_fd is None:
                    fd = os.open(folder / name, flags, 0o644)
                else:
                    fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
            except FileExistsError:
                continue
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            except BaseException:
                _unlink(folder, name, dir_fd)
                raise
            return folder / name
    raise DataError(f"No free file name left for {file_name} in {folder}: tidy that folder up.")


def _unlink(folder: Path, name: str, dir_fd: int | None) -> None:
    """Delete the file (or the link itself, never its target) ``name`` of ``folder``."""
    with contextlib.suppress(FileNotFoundError):
        if dir_fd is None:
            os.unlink(folder / name)
        else:
            os.unlink(name, dir_fd=dir_fd)


def _is_picture(entry: os.DirEntry[str]) -> bool:
    return (entry.is_file(follow_symlinks=False) and not is_hidden(entry.name)
            and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS)  # fmt: skip


class Removal(NamedTuple):
    """What removing a class did: pictures deleted, and the other entries left in its folder."""

    deleted: int
    kept: tuple[str, ...]  # names, folders with a trailing "/"


class ImageFolderStore:
    """A folder with one sub-folder per class, changed only in ways that lose nothing by accident.

    Every method that takes a class name passes it through :func:`check_class_name`;
    links (to folders or files) are never followed, so nothing outside ``root`` is read,
    written, moved or deleted.

    Args:
        root: the folder; created (with its parents) when missing.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(os.path.expanduser(os.fspath(root))).resolve()
        if path.exists() and not path.is_dir():
            raise DataError(f"{path} is a file, not a folder: choose a folder (it is created if missing).")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"Cannot create the folder {path} ({exc.strerror}): choose another place.") from exc
        self.root = path

    # ------------------------------------------------------------------ names
    def check_class(self, name: object) -> str:
        """``name`` when it is one of this folder's classes now; :class:`DataError` otherwise."""
        return check_class_name(name, self.root, existing=True)

    def check_new_class(self, name: object) -> str:
        """``name`` (stripped) when it can become a class folder here; :class:`DataError` otherwise."""
        return check_class_name(name, self.root)

    # ------------------------------------------------------------------ reading
    def classes(self) -> list[str]:
        """Class folder names, sorted as ImageFolder and ``Session.load_data`` sort them.

        Only real sub-folders count: a link to a folder elsewhere is no class here.
        """
        return sorted(_class_folders(self.root))

    def linked_folders(self) -> list[str]:
        """Visible links in the root that point to folders (not classes of the collector)."""
        with os.scandir(self.root) as entries:
            return sorted(e.name for e in entries if e.is_symlink() and e.is_dir() and not is_hidden(e.name))

    def images(self, name: str) -> list[Path]:
        """Picture files of class ``name`` (by extension; hidden files and links excluded), sorted by name."""
        return self._pictures(self.check_class(name))

    def _pictures(self, name: str) -> list[Path]:
        folder = self.root / name
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if _is_picture(e))
        return [folder / n for n in names]

    def all_images(self) -> dict[str, list[Path]]:
        """``{class: [picture paths]}`` for every class folder."""
        return {name: self._pictures(name) for name in self.classes()}

    def stray_images(self) -> list[Path]:
        """Pictures lying directly in the root, outside every class folder (loading ignores them)."""
        with os.scandir(self.root) as entries:
            return sorted(self.root / e.name for e in entries if _is_picture(e))

    def _existing(self, name: str) -> str | None:
        """The existing class whose name equals ``name`` ignoring case (macOS and Windows do)."""
        low = name.casefold()
        return next((c for c in self.classes() if c.casefold() == low), None)

    def _refuse_taken(self, name: str) -> None:
        existing = self._existing(name)
        if existing is not None:
            raise DataError(f"There is already a class {existing!r} in {self.root.name}: choose another name.")
        if os.path.lexists(self.root / name):
            raise DataError(f"There is already a file, link or hidden folder named {name!r} in {self.root.name}: "
                            "choose another name.")  # fmt: skip

    # ------------------------------------------------------------------ classes
    def add_class(self, name: str) -> Path:
        """Create the folder of a new class; an existing name (of anything) is refused."""
        name = self.check_new_class(name)
        self._refuse_taken(name)
        folder = self.root / name
        try:
            folder.mkdir()
        except FileExistsError:
            raise DataError(f"There is already something named {name!r} in {self.root.name}: "
                            "choose another name.") from None  # fmt: skip
        return folder

    def rename_class(self, old: str, new: str) -> Path:
        """Rename class ``old`` to ``new``; refused when anything already has that name."""
        old = self.check_class(old)
        new = self.check_new_class(new)
        folder = self.root / old
        if new == old:
            return folder
        target = self.root / new
        existing = self._existing(new)
        if existing is not None and existing != old:
            raise DataError(f"Cannot rename {old!r} to {new!r}: there is already a class {existing!r}. "
                            "Choose another name, or remove that class first.")  # fmt: skip
        if existing == old:  # only the case changes: go through a free temporary name
            temp = self.root / f".rename-{os.getpid()}-{time.monotonic_ns()}"
            folder.rename(temp)
            temp.rename(target)
            return target
        if os.path.lexists(target):
            raise DataError(f"Cannot rename {old!r} to {new!r}: there is already a file, link or hidden folder "
                            f"named {new!r} in {self.root.name}. Choose another name.")  # fmt: skip
        folder.rename(target)
        return target

    def remove_class(self, name: str, confirm: bool = False) -> Removal:
        """Delete the pictures of class ``name``, then its folder if nothing else is left in it.

        Args:
            name: the class.
            confirm: must be ``True`` when the class still holds pictures.

        Only the pictures :meth:`images` lists are deleted. Anything else in the folder
        (other files, hidden files and folders, sub-folders, links) stays, and so does
        the folder then; :attr:`Removal.kept` names what stayed.
        """
        name = self.check_class(name)
        folder = self.root / name
        pictures = self._pictures(name)
        if pictures and not confirm:
            raise DataError(f"Class {name!r} holds {len(pictures)} pictures: confirm to delete them with the class.")
        with _opened_folder(folder) as dir_fd:
            for path in pictures:
                _unlink(folder, path.name, dir_fd)
            with os.scandir(folder if dir_fd is None else dir_fd) as entries:
                kept = tuple(sorted(e.name + ("/" if e.is_dir(follow_symlinks=False) else "") for e in entries))
        if not kept:
            with contextlib.suppress(OSError):  # something appeared meanwhile: the folder stays
                os.rmdir(folder)
        return Removal(len(pictures), kept)

    # ------------------------------------------------------------------ pictures
    def add_image(self, name: str, data: bytes, file_name: str = "image.jpg") -> Path:
        """Store a picture in class ``name`` under a free name based on ``file_name``.

        ``file_name`` is cut down to a plain, visible base name (:func:`safe_file_name`).

        Raises:
            DataError: the class does not exist, or ``data`` is not a readable picture.
        """
        name = self.check_class(name)
        ext = image_extension(data, str(file_name))
        return write_new_file(self.root / name, safe_file_name(file_name, ext), data)

    def delete_image(self, path: str | os.PathLike[str]) -> Path:
        """Delete one picture that :meth:`images` lists for one of this folder's classes; returns its path.

        Raises:
            DataError: ``path`` is anything else (outside the folder, in no class, hidden,
                a link, not a picture); nothing is deleted then.
        """
        given = Path(os.path.abspath(os.fspath(path)))  # '..' removed by text, links not followed
        refused = DataError(f"{os.fspath(path)} is not a picture of a class in {self.root}: nothing deleted.")
        try:
            parent = given.parent.resolve(strict=True)
        except (OSError, RuntimeError):
            raise refused from None
        if parent.parent != self.root:
            raise refused
        try:
            name = self.check_class(parent.name)
        except DataError:
            raise refused from None
        if given.name not in {p.name for p in self._pictures(name)}:
            raise refused
        folder = self.root / name
        with _opened_folder(folder) as dir_fd:
            _unlink(folder, given.name, dir_fd)
        return folder / given.name

    def __iter__(self) -> Iterator[str]:
        return iter(self.classes())
