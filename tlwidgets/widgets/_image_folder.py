"""An ImageFolder on disk that grows class by class: the files behind the DataCollector.

Nothing here ever overwrites a file: new pictures get a free name (``cat.jpg``,
``cat_1.jpg``, ...) created with ``O_EXCL``, so two writers cannot pick the same one;
renaming a class onto an existing one is refused, and so is removing a class that still
holds pictures unless the caller confirms it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..core.errors import DataError
from ..core.images import IMAGE_EXTENSIONS, is_hidden

_FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
_UNSAFE = re.compile(r"[^\w.\- ]+")
_MAX_NAME = 100


def check_class_name(name: str) -> str:
    """The class name, stripped; :class:`DataError` when it cannot be a folder name."""
    clean = str(name).strip()
    if not clean:
        raise DataError("Type a class name first (e.g. 'cat').")
    if clean in (".", "..") or "/" in clean or "\\" in clean or os.sep in clean:
        raise DataError(f"Class name {clean!r} cannot contain '/' or '\\' or be '.' or '..': use letters and digits.")
    if is_hidden(clean):
        raise DataError(f"Class name {clean!r} would be a hidden folder that is skipped when loading: "
                        "do not start it with a dot.")  # fmt: skip
    if len(clean) > _MAX_NAME or any(ord(c) < 32 for c in clean):
        raise DataError(f"Class name {clean[:40]!r}... is too long or has control characters: keep it short.")
    return clean


def safe_file_name(name: str, fallback_ext: str = ".jpg") -> str:
    """A plain, visible file name from an uploaded name: no folders, no leading dots, odd characters as ``_``."""
    base = os.path.basename(str(name).replace("\\", "/"))
    stem, ext = os.path.splitext(base)
    stem = _UNSAFE.sub("_", stem).strip(" ._") or "image"
    ext = ext.lower() if ext.lower() in IMAGE_EXTENSIONS else fallback_ext
    return f"{stem[:80]}{ext}"


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


def write_new_file(folder: Path, file_name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/file_name``, or to ``stem_1.ext``, ``stem_2.ext``... if taken.

    The file is created exclusively, so an existing file is never replaced, even by a
    writer racing this one.
    """
    stem, ext = os.path.splitext(file_name)
    for i in range(100_000):
        path = folder / (file_name if i == 0 else f"{stem}_{i}{ext}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path
    raise DataError(f"No free file name left for {file_name} in {folder}: tidy that folder up.")


class ImageFolderStore:
    """A folder with one sub-folder per class, changed only in ways that lose nothing by accident.

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

    # ------------------------------------------------------------------ reading
    def classes(self) -> list[str]:
        """Class folder names, sorted as ImageFolder and ``Session.load_data`` sort them."""
        return sorted(e.name for e in self.root.iterdir() if e.is_dir() and not is_hidden(e.name))

    def images(self, name: str) -> list[Path]:
        """Picture files of class ``name`` (by extension, hidden files excluded), sorted by name."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(
            (e for e in folder.iterdir() if e.is_file() and not is_hidden(e.name)
             and e.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda p: p.name,
        )  # fmt: skip

    def all_images(self) -> dict[str, list[Path]]:
        """``{class: [picture paths]}`` for every class folder."""
        return {name: self.images(name) for name in self.classes()}

    def stray_images(self) -> list[Path]:
        """Pictures lying directly in the root, outside every class folder (loading ignores them)."""
        return sorted(e for e in self.root.iterdir() if e.is_file() and e.suffix.lower() in IMAGE_EXTENSIONS)

    def _existing(self, name: str) -> str | None:
        """The existing class whose name equals ``name`` ignoring case (macOS and Windows do)."""
        low = name.casefold()
        return next((c for c in self.classes() if c.casefold() == low), None)

    def _require_class(self, name: str) -> Path:
        folder = self.root / name
        if not name or not folder.is_dir():
            raise DataError(f"There is no class {name!r} in {self.root}: add it first.")
        return folder

    # ------------------------------------------------------------------ classes
    def add_class(self, name: str) -> Path:
        """Create the folder of a new class; an existing name is refused."""
        name = check_class_name(name)
        existing = self._existing(name)
        if existing is not None:
            raise DataError(f"There is already a class {existing!r}: choose another name.")
        folder = self.root / name
        folder.mkdir()
        return folder

    def rename_class(self, old: str, new: str) -> Path:
        """Rename class ``old`` to ``new``; refused when another class has that name."""
        folder = self._require_class(old)
        new = check_class_name(new)
        if new == old:
            return folder
        existing = self._existing(new)
        if existing is not None and existing != old:
            raise DataError(f"Cannot rename {old!r} to {new!r}: there is already a class {existing!r}. "
                            "Choose another name, or remove that class first.")  # fmt: skip
        target = self.root / new
        if existing == old:  # only the case changes: go through a free temporary name
            temp = self.root / f".rename-{os.getpid()}-{old}"
            folder.rename(temp)
            temp.rename(target)
        else:
            folder.rename(target)
        return target

    def remove_class(self, name: str, confirm: bool = False) -> int:
        """Delete class ``name`` and its pictures; returns how many pictures were deleted.

        Args:
            name: the class.
            confirm: must be ``True`` when the class still holds pictures.

        Files that are not pictures stay, and so does the folder then; an empty class
        folder is removed.
        """
        folder = self._require_class(name)
        pictures = self.images(name)
        if pictures and not confirm:
            raise DataError(f"Class {name!r} holds {len(pictures)} pictures: confirm to delete them with the class.")
        for path in pictures:
            path.unlink(missing_ok=True)
        for entry in list(folder.iterdir()):
            if is_hidden(entry.name):  # .DS_Store, .ipynb_checkpoints: tool clutter, not the user's files
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()
        return len(pictures)

    # ------------------------------------------------------------------ pictures
    def add_image(self, name: str, data: bytes, file_name: str = "image.jpg") -> Path:
        """Store a picture in class ``name`` under a free name based on ``file_name``.

        Raises:
            DataError: the class does not exist, or ``data`` is not a readable picture.
        """
        folder = self._require_class(name)
        ext = image_extension(data, file_name)
        return write_new_file(folder, safe_file_name(file_name, ext), data)

    def delete_image(self, path: str | os.PathLike[str]) -> None:
        """Delete one picture of one of this folder's classes."""
        path = Path(path).resolve()
        if path.parent.parent != self.root or not path.parent.is_dir():
            raise DataError(f"{path} is not a picture of a class in {self.root}: nothing deleted.")
        path.unlink(missing_ok=True)

    def __iter__(self) -> Iterator[str]:
        return iter(self.classes())
