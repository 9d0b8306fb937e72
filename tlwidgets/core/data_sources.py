"""Where images come from besides a plain folder: archives, the demo digits, torchvision datasets.

Each source ends up as a folder of class sub-folders in the cache directory, so one
scanner (:mod:`tlwidgets.core.images`) checks every image the same way. Writing is
idempotent: a source already materialised in the cache is reused as it is.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import shutil
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from ._cache import cache_dir
from .errors import DataError
from .images import IMAGE_EXTENSIONS, NotRegularFileError, is_hidden, open_regular_file

Progress = Callable[[int, int], None]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
DEMO_MAX_PER_CLASS = 60

# torchvision dataset -> (keyword arguments of the training split, of the validation split or None).
# None: the dataset has no predefined split and is split by val_fraction.
_TV_SPLITS: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "CIFAR10": ({"train": True}, {"train": False}),
    "CIFAR100": ({"train": True}, {"train": False}),
    "MNIST": ({"train": True}, {"train": False}),
    "FashionMNIST": ({"train": True}, {"train": False}),
    "KMNIST": ({"train": True}, {"train": False}),
    "USPS": ({"train": True}, {"train": False}),
    "SVHN": ({"split": "train"}, {"split": "test"}),
    "STL10": ({"split": "train"}, {"split": "test"}),
    "Flowers102": ({"split": "train"}, {"split": "val"}),
    "OxfordIIITPet": ({"split": "trainval", "target_types": "category"},
                      {"split": "test", "target_types": "category"}),
    "Food101": ({"split": "train"}, {"split": "test"}),
    "DTD": ({"split": "train"}, {"split": "val"}),
    "GTSRB": ({"split": "train"}, {"split": "test"}),
    "Country211": ({"split": "train"}, {"split": "valid"}),
    "FGVCAircraft": ({"split": "train"}, {"split": "val"}),
    "StanfordCars": ({"split": "train"}, {"split": "test"}),
    "Imagenette": ({"split": "train", "size": "160px"}, {"split": "val", "size": "160px"}),
    "RenderedSST2": ({"split": "train"}, {"split": "val"}),
    "PCAM": ({"split": "train"}, {"split": "val"}),
    "EuroSAT": ({}, None),
    "Caltech101": ({"target_type": "category"}, None),
    "Caltech256": ({}, None),
    "SUN397": ({}, None),
    # Random images, offline: a quick way to exercise this path without a download.
    "FakeData": ({"size": 120, "image_size": (3, 32, 32), "num_classes": 4, "random_offset": 0},
                 {"size": 40, "image_size": (3, 32, 32), "num_classes": 4, "random_offset": 10_000}),
}
_TV_NO_ROOT = frozenset({"FakeData"})


# ---------------------------------------------------------------------------- archives
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
                "(tlwidgets.core.data_sources.{name}).")


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


# ---------------------------------------------------------------------------- demo digits
def demo_folder(max_per_class: int = DEMO_MAX_PER_CLASS, progress: Progress | None = None) -> Path:
    """Write scikit-learn's bundled 8x8 digits as 32x32 RGB PNGs: ``<cache>/demo/digits/<0..9>/``.

    The first ``max_per_class`` images of each digit (in the data set's order) are
    written; files already there are kept, so a second call writes nothing.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    dest = cache_dir("demo", "digits")
    wanted: list[tuple[int, int]] = []  # (index into the data set, digit)
    per_class: dict[int, int] = {}
    for i, digit in enumerate(digits.target.tolist()):
        if per_class.get(digit, 0) < max_per_class:
            per_class[digit] = per_class.get(digit, 0) + 1
            wanted.append((i, digit))
    todo = [(i, d) for i, d in wanted if not (dest / str(d) / f"digit_{i:04d}.png").is_file()]
    for n, (i, digit) in enumerate(todo, 1):
        # Dark ink on white paper, values 0..16 -> 255..0.
        pixels = (255 - np.rint(digits.images[i] * (255 / 16))).astype(np.uint8)
        image = Image.fromarray(pixels, "L").resize((32, 32), Image.Resampling.BILINEAR).convert("RGB")
        _save_atomic(image, dest / str(digit) / f"digit_{i:04d}.png")
        if progress is not None:
            progress(n, len(todo))
    return dest


def _save_atomic(image: Image.Image, path: Path) -> None:
    """Save via a temporary name so an interrupted run never leaves a half-written image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- torchvision
def torchvision_name(name: str) -> str | None:
    """The torchvision dataset class matching ``name`` (case-insensitive), or None."""
    lookup = {n.lower(): n for n in _TV_SPLITS}
    return lookup.get(name.strip().lower())


def torchvision_names() -> list[str]:
    """Names of the torchvision datasets :func:`torchvision_folder` knows how to split."""
    return sorted(_TV_SPLITS)


def torchvision_folder(
    name: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    max_per_class: int | None = None,
    progress: Progress | None = None,
) -> tuple[Path, bool]:
    """Materialise a torchvision dataset as ``<cache>/torchvision-folders/<Name>/{train,val}/<class>/``.

    Args:
        name: a dataset class of ``torchvision.datasets`` (see :func:`torchvision_names`).
        root: where torchvision keeps the raw download; default ``<cache>/torchvision``.
        download: let torchvision download the data when it is not in ``root``.
        max_per_class: write only the first N images of each class per split.

    Returns:
        ``(folder, has_val)``: with ``has_val`` the folder holds ``train/`` and ``val/``,
        otherwise ``all/`` (split later by ``val_fraction``).
    """
    canonical = torchvision_name(name)
    if canonical is None:
        close = difflib.get_close_matches(name, torchvision_names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise DataError(
            f"Unknown torchvision dataset {name!r}.{hint} Known: {', '.join(torchvision_names())}."
        )
    raw_root = Path(root).expanduser() if root is not None else cache_dir("torchvision")
    dest = cache_dir("torchvision-folders", canonical)
    train_kw, val_kw = _TV_SPLITS[canonical]
    splits = {"train": train_kw, "val": val_kw} if val_kw is not None else {"all": train_kw}
    for split, kwargs in splits.items():
        manifest = dest.parent / f"{canonical}-{split}.json"
        if _manifest_covers(manifest, max_per_class):
            continue
        ds = _open_torchvision(canonical, kwargs, raw_root, download)
        classes = _class_names(ds)
        counts = _dataset_to_folder(ds, dest / split, classes, max_per_class, progress)
        manifest.write_text(json.dumps({"max_per_class": max_per_class, "counts": counts}))
    return dest, val_kw is not None


def _manifest_covers(manifest: Path, max_per_class: int | None) -> bool:
    """True when an earlier conversion wrote at least the images now asked for."""
    try:
        written = json.loads(manifest.read_text())["max_per_class"]
    except (OSError, ValueError, KeyError):
        return False
    return written is None or (max_per_class is not None and written >= max_per_class)


def _open_torchvision(name: str, kwargs: dict[str, Any], root: Path, download: bool) -> Any:
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if cls is None:
        raise DataError(f"This torchvision version has no dataset {name}; upgrade torchvision.")
    if name in _TV_NO_ROOT:
        return cls(**kwargs)
    try:
        return cls(root=str(root), download=download, **kwargs)
    except ImportError as exc:
        raise DataError(f"The torchvision dataset {name} needs a package that is missing: {exc}.") from exc
    except Exception as exc:
        if not download:
            raise DataError(
                f"The torchvision dataset {name} is not in {root}. Pass download=True to download it "
                f"(needs internet); it will be stored in {root}."
            ) from exc
        raise DataError(
            f"Downloading the torchvision dataset {name} into {root} failed ({exc}). Check the internet "
            f"connection, or download it elsewhere and copy it into {root}."
        ) from exc


def _class_names(ds: Any) -> list[str]:
    """Folder-safe class names, in label order; digits are zero-padded so they sort by label."""
    names = getattr(ds, "classes", None)
    if names is None:
        targets = _targets(ds)
        count = getattr(ds, "num_classes", None) or (max(targets) + 1 if targets else 0)
        width = len(str(max(count - 1, 0)))
        return [str(i).zfill(width) for i in range(count)]
    return [re.sub(r"[/\\:\0]", "_", str(n)).strip() or f"class_{i}" for i, n in enumerate(names)]


def _targets(ds: Any) -> list[int] | None:
    """Labels without decoding images, where the dataset exposes them."""
    for attr in ("targets", "_labels", "labels", "y"):
        values = getattr(ds, attr, None)
        if values is not None and not isinstance(values, (str, dict)):
            try:
                return [int(v) for v in values]
            except (TypeError, ValueError):
                continue
    samples = getattr(ds, "samples", None) or getattr(ds, "_samples", None)
    if samples is not None:
        return [int(label) for _, label in samples]
    return None


def _source_files(ds: Any) -> list[str] | None:
    """Original image files of a file-backed dataset, to copy instead of re-encoding."""
    samples = getattr(ds, "samples", None) or getattr(ds, "_samples", None)
    if samples is not None:
        return [str(path) for path, _ in samples]
    for attr in ("_image_files", "_images"):
        files = getattr(ds, attr, None)
        if files is not None:
            return [str(f) for f in files]
    return None


def _dataset_to_folder(
    ds: Any,
    dest: str | os.PathLike[str],
    classes: Sequence[str],
    max_per_class: int | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write a map-style dataset of ``(PIL image, label)`` into ``dest/<class>/<index>.png``.

    Only the first ``max_per_class`` items of each class (in dataset order) are
    written; file names carry the dataset index, zero-padded, so sorting them keeps
    that order. Files already present are kept. File-backed datasets are copied.

    Returns:
        images per class name that the folder now holds for this request.
    """
    dest = Path(dest)
    n = len(ds)
    targets = _targets(ds)
    files = _source_files(ds)
    if files is not None and len(files) != n:
        files = None
    width = max(6, len(str(n)))
    counts = dict.fromkeys(classes, 0)
    for i in range(n):
        label = targets[i] if targets is not None else None
        if label is not None and max_per_class is not None and counts[classes[label]] >= max_per_class:
            continue
        ext = os.path.splitext(files[i])[1].lower() if files is not None else ".png"
        if label is not None:
            path = dest / classes[label] / f"{i:0{width}d}{ext}"
            if path.is_file():
                counts[classes[label]] += 1
                continue
        image = None
        if files is None or label is None:
            image, label = ds[i]
            if max_per_class is not None and counts[classes[int(label)]] >= max_per_class:
                continue
        path = dest / classes[int(label)] / f"{i:0{width}d}{ext}"
        if not path.is_file():
            if files is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                shutil.copyfile(files[i], tmp)
                os.replace(tmp, path)
            else:
                if not isinstance(image, Image.Image):
                    raise DataError(f"Item {i} of {type(ds).__name__} is not a PIL image; pass transform=None.")
                _save_atomic(image, path)
        counts[classes[int(label)]] += 1
        if progress is not None:
            progress(i + 1, n)
        if max_per_class is not None and all(c >= max_per_class for c in counts.values()):
            break
    return counts
