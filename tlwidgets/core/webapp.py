"""A trained classifier as a static web page that runs in the browser (ONNX Runtime Web).

:func:`export_webapp` writes a folder that any static host serves (GitHub Pages, a
university web space, ``python -m http.server``):

- ``index.html``, ``app.js``, ``preprocess.js``, ``style.css``: the page, a few KB, copied
  unchanged from ``webapp_assets/`` (nothing of the session is written into them);
- ``model.onnx``: the model, exported and checked by :mod:`tlwidgets.core.export`;
- ``classifier.json``: class names, preprocessing, the model file and where the page loads
  ONNX Runtime Web from. The page reads it with ``fetch`` and shows class names only as
  text, so a class named ``<script>`` stays text;
- ``ort/``: only with ``runtime=<local folder>``, a copy of ONNX Runtime Web's WebAssembly
  build for hosting with no internet access.

The page classifies an uploaded picture or the webcam with top-3 bars. Its preprocessing
(``preprocess.js``) computes what :meth:`Session.predict <tlwidgets.core.session.Session.predict>`
computes: the shorter side resized with Pillow's filter arithmetic (the long side capped as
:class:`tlwidgets.core.transforms.Resize` does), the centre crop of torchvision with its zero
padding, and the float32 normalisation; for a PNG the model's input is bit for bit the one
Python builds. Every path is relative, so the folder works from any sub-path of a host.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from torchvision import transforms as T

from . import export
from .errors import ConfigError, ModelError
from .images import NotRegularFileError, file_kind, open_regular_file
from .paths import writable_file_target
from .transforms import _MAX_ASPECT, Resize, make_transforms

#: Version of the ``onnxruntime-web`` npm package the page loads (by default from the CDN).
ORT_WEB_VERSION = "1.30.0"
#: Where the page loads ONNX Runtime Web from by default: a pinned release on jsDelivr.
ORT_WEB_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"
#: The files of ONNX Runtime Web's WebAssembly build the page needs: the script, the module
#: that loads the WebAssembly, and the WebAssembly itself (about 14 MB).
RUNTIME_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
RUNTIME_FOLDER = "ort"
#: The page's own files, copied from ``webapp_assets/``.
ASSET_FILES = ("index.html", "app.js", "preprocess.js", "style.css")
MODEL_FILE = "model.onnx"
CONFIG_FILE = "classifier.json"
#: ``format`` of :data:`CONFIG_FILE`; a folder whose config says so may be written over.
FORMAT = "tlwidgets-webapp"
FORMAT_VERSION = 1
TOP_K = 3

ASSETS = Path(__file__).resolve().parent / "webapp_assets"
_MAX_RUNTIME_FILE = 128 * 2**20  # a runtime file larger than this is not ONNX Runtime Web
_MAX_CONFIG = 64 * 2**20  # the config of an earlier export: 100,000 long class names fit
_MAX_TITLE = 200


@dataclass(frozen=True)
class WebAppExport:
    """What :func:`export_webapp` wrote.

    Attributes:
        folder: the web app's folder (absolute).
        files: the files written, relative to ``folder`` (``/``-separated).
        runtime: the URL the page loads ONNX Runtime Web's script from; relative
            (``ort/ort.wasm.min.js``) for a copy inside the folder.
        runtime_version: the ONNX Runtime Web version, when known.
        onnx: the ONNX export and its check against PyTorch.
    """

    folder: Path
    files: tuple[str, ...]
    runtime: str
    runtime_version: str | None
    onnx: export.OnnxExport

    @property
    def local_runtime(self) -> bool:
        """True when the runtime is a copy inside the folder (works with no internet)."""
        return not self.runtime.startswith(("http://", "https://"))

    def serve_command(self) -> str:
        """A command that serves the folder on this machine (then open http://localhost:8000)."""
        return f"python -m http.server --directory {_shell_quote(str(self.folder))} 8000"

    def summary(self) -> str:
        """One line for people."""
        where = (f"a copy of ONNX Runtime Web in {RUNTIME_FOLDER}/" if self.local_runtime
                 else f"ONNX Runtime Web {self.runtime_version} from {urllib.parse.urlsplit(self.runtime).netloc}")
        listed = ", ".join(self.files[:6]) + (", ..." if len(self.files) > 6 else "")
        return (f"Wrote a web app to {self.folder} ({listed}); it loads {where}. Serve the folder from any "
                f"static host, or try it with: {self.serve_command()}")


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# ---------------------------------------------------------------- what the page needs
def preprocessing(session: Any) -> dict[str, Any]:
    """The preprocessing of :meth:`Session.predict` as plain values for the page.

    Read from the evaluation transform ``predict`` uses (the data's, else the one the
    model's spec and the image size give), so the page cannot drift from it.

    Raises:
        ModelError: the transform holds a step the page does not implement.
    """
    eval_tf = (session.data.eval_tf if session.data is not None
               else make_transforms(session.spec, None, session.image_size)[1])
    steps = list(getattr(eval_tf, "transforms", []))
    kinds = [type(step).__name__ for step in steps]
    if (len(steps) != 4 or not isinstance(steps[0], Resize) or not isinstance(steps[1], T.CenterCrop)
            or not isinstance(steps[2], T.ToTensor) or not isinstance(steps[3], T.Normalize)):
        raise ModelError(
            f"The web page implements Resize, CenterCrop, ToTensor and Normalize; this session's "
            f"preprocessing is {', '.join(kinds) or repr(eval_tf)}."
        )
    resize, crop, _, norm = steps
    size = resize.size
    if isinstance(size, (list, tuple)) and len(size) == 1:
        size = size[0]
    if not isinstance(size, int) or resize.max_size is not None:
        raise ModelError(f"The web page resizes the shorter side only; this session's resize is {resize!r}.")
    crop_h, crop_w = crop.size
    if crop_h != crop_w or int(crop_h) != session.input_size:
        raise ModelError(f"The web page crops a {session.input_size}-pixel square; this session crops {crop.size}.")
    interpolation = resize.interpolation.value
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        raise ModelError(f"The web page resizes with bilinear, bicubic or nearest; this session uses {interpolation}.")
    mean, std = [float(v) for v in norm.mean], [float(v) for v in norm.std]
    if len(mean) != 3 or len(std) != 3:
        raise ModelError(f"The web page normalises 3 colour channels; this session's mean is {mean}, std {std}.")
    return {
        "resize": "shorter side", "resize_size": int(size), "max_aspect": _MAX_ASPECT,
        "interpolation": interpolation, "crop": "center", "input_size": int(crop_h),
        "scale": 255, "mean": mean, "std": std, "max_pixels": Image.MAX_IMAGE_PIXELS,
    }


def config_json(config: dict[str, Any]) -> str:
    """``config`` as JSON in which no ``<``, ``>`` or ``&`` appears (they are ``\\u`` escapes)."""
    text = json.dumps(config, ensure_ascii=True, indent=1, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n"


# ---------------------------------------------------------------- the runtime
@dataclass(frozen=True)
class _Runtime:
    script: str  # what the page loads
    version: str | None
    source: Path | None  # a local dist folder to copy from


def _runtime(runtime: str | os.PathLike[str] | None) -> _Runtime:
    """Where the page gets ONNX Runtime Web: the pinned CDN, another URL, or a local copy."""
    if runtime is None:
        return _Runtime(ORT_WEB_CDN + RUNTIME_FILES[0], ORT_WEB_VERSION, None)
    if isinstance(runtime, str) and runtime.strip().lower().startswith(("http://", "https://")):
        return _Runtime(_runtime_url(runtime.strip()), None, None)
    if not isinstance(runtime, (str, os.PathLike)) or not os.fspath(runtime).strip():
        raise ConfigError(
            f"runtime={runtime!r}: pass None (ONNX Runtime Web {ORT_WEB_VERSION} from the CDN), an https:// URL "
            "of a folder that holds ONNX Runtime Web's dist files, or a local onnxruntime-web folder to copy."
        )
    given = Path(runtime).expanduser()
    candidates = [given, given / "dist", given / "node_modules" / "onnxruntime-web" / "dist"]
    for folder in candidates:
        if all((folder / name).is_file() for name in RUNTIME_FILES):
            return _Runtime(f"{RUNTIME_FOLDER}/{RUNTIME_FILES[0]}", _package_version(folder.parent), folder)
    what = "does not exist" if not given.exists() else f"holds no {', '.join(RUNTIME_FILES)}"
    raise ConfigError(
        f"runtime={os.fspath(runtime)!r} {what}. Pass the dist folder of an onnxruntime-web install "
        f"(npm install onnxruntime-web@{ORT_WEB_VERSION}: node_modules/onnxruntime-web/dist), "
        "or an https:// URL, or None for the CDN."
    )


def _runtime_url(url: str) -> str:
    """The script URL for a runtime URL: the script itself, or ``ort.wasm.min.js`` in that folder."""
    parts = urllib.parse.urlsplit(url)
    bad = [c for c in url if c.isspace() or ord(c) < 32 or c in "\"'<>\\`"]
    if parts.scheme not in ("http", "https") or not parts.netloc or bad:
        raise ConfigError(f"runtime={url!r} is not a usable http(s) URL of ONNX Runtime Web's dist folder.")
    if parts.path.endswith(".js"):
        return url
    return url.rstrip("/") + "/" + RUNTIME_FILES[0] if not parts.query and not parts.fragment else url


def _package_version(package: Path) -> str | None:
    """``version`` from an onnxruntime-web ``package.json``, when there is a readable one."""
    try:
        with open_regular_file(package / "package.json") as fp:
            meta = json.loads(fp.read(2**20))
    except (OSError, ValueError):
        return None
    version = meta.get("version") if isinstance(meta, dict) and meta.get("name") == "onnxruntime-web" else None
    return version if isinstance(version, str) and len(version) < 64 else None


def _copy_regular(source: Path, dest: Path) -> None:
    """Copy a regular file of at most :data:`_MAX_RUNTIME_FILE` bytes (a pipe or device is refused)."""
    try:
        with open_regular_file(source) as src:
            size = os.fstat(src.fileno()).st_size
            if size > _MAX_RUNTIME_FILE:
                raise ConfigError(f"{source} is {size:,} bytes, more than ONNX Runtime Web's files ever are.")
            with open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 2**20)
    except NotRegularFileError as exc:
        raise ConfigError(f"Cannot copy the runtime file {source}: it is {exc}, not a regular file.") from exc


# ---------------------------------------------------------------- the folder
def _our_paths() -> list[str]:
    """Every file an export may write, relative to its folder."""
    return [*ASSET_FILES, MODEL_FILE, CONFIG_FILE, *(f"{RUNTIME_FOLDER}/{name}" for name in RUNTIME_FILES)]


def _is_earlier_export(folder: Path) -> bool:
    """True when ``folder`` holds a ``classifier.json`` this module wrote."""
    try:
        with open_regular_file(folder / CONFIG_FILE) as fp:
            config = json.loads(fp.read(_MAX_CONFIG + 1))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def check_folder(folder: str | os.PathLike[str]) -> Path:
    """Return ``folder`` (absolute) when a web app may be written there, else raise ConfigError.

    A missing folder is fine (it is created), and so is a folder of other files: only the
    web app's own files are written. A folder that already holds a file of the same name
    as one of them (``index.html``, ...) is refused unless an earlier export wrote it;
    a file, or a symbolic link, folder or special file in place of one of those files,
    is refused.
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise ConfigError(f"folder={folder!r} is not a path: give a folder name such as 'webapp'.")
    given = os.fspath(folder)
    if isinstance(given, bytes) or not given.strip():
        raise ConfigError(f"folder={given!r}: give a folder name such as 'webapp'.")
    target = Path(given).expanduser().absolute()
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):  # missing, or under a file (said below)
        mode = None
    except OSError as exc:
        raise ConfigError(f"Cannot write the web app to {given}: {exc.strerror}. Choose another folder.") from exc
    if mode is None and os.path.lexists(target):
        raise ConfigError(f"Cannot write the web app to {given}: it is a link to nothing. Choose another folder.")
    if mode is not None and not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
        raise ConfigError(
            f"Cannot write the web app to {given}: it is {kind}, not a folder. "
            "Give a folder (it is created when missing)."
        )
    if mode is None:
        parent = target.parent
        while not os.path.lexists(parent) and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(
                f"Cannot write the web app to {given}: {parent} is a file, not a folder. Choose another folder."
            )
        writable_file_target(target / CONFIG_FILE, "web app")  # the nearest existing folder accepts new files
        return target
    sub = target / RUNTIME_FOLDER
    if os.path.lexists(sub) and (sub.is_symlink() or not sub.is_dir()):
        raise ConfigError(
            f"Cannot write the web app to {given}: {sub} is not a plain folder, and the runtime copy goes there. "
            "Remove it or choose another folder."
        )
    present = []
    for name in _our_paths():
        path = target / name
        try:
            found = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(found) or not stat.S_ISREG(found):
            kind = "a symbolic link" if stat.S_ISLNK(found) else file_kind(found)
            raise ConfigError(
                f"Cannot write the web app to {given}: {path} is {kind}, where the web app writes its own file. "
                "Remove it or choose another folder."
            )
        present.append(name)
    if present and not _is_earlier_export(target):
        raise ConfigError(
            f"Cannot write the web app to {given}: it already holds {present[0]}, which no tlwidgets web app wrote "
            f"(there is no tlwidgets {CONFIG_FILE}). Choose a new or empty folder."
        )
    writable_file_target(target / CONFIG_FILE, "web app")  # the folder accepts new files
    return target


# ---------------------------------------------------------------- the export
def export_webapp(
    session: Any,
    folder: str | os.PathLike[str],
    images: Any = None,
    *,
    runtime: str | os.PathLike[str] | None = None,
    title: str | None = None,
    **options: Any,
) -> WebAppExport:
    """Write a static web page that classifies pictures and the webcam with the session's model.

    Args:
        session: a :class:`~tlwidgets.core.session.Session` with a model (trained).
        folder: where the page goes; created when missing. Other files in it stay; an
            earlier web app in it is replaced (only its own files).
        images: image files to check the ONNX export on (default: a few images of the data).
        runtime: ``None`` loads ONNX Runtime Web :data:`ORT_WEB_VERSION` from jsDelivr (the
            folder stays small, the page needs the internet); an ``https://`` URL of a
            folder holding ONNX Runtime Web's dist files (or of its ``ort.wasm.min.js``);
            or a local folder (an onnxruntime-web package, its ``dist`` folder, or a folder
            with ``node_modules/onnxruntime-web``) whose WebAssembly build is copied into
            ``ort/`` (about 14 MB) so the page works with no internet access.
        title: the page's heading (default: "Image classifier").
        **options: passed to :func:`tlwidgets.core.export.export_onnx` (``exporter``,
            ``opset``, ``verify``, ``atol``).

    Raises:
        ConfigError: a folder or runtime that cannot be used (nothing is written then).
        ModelError: no model, preprocessing the page cannot do, or the ONNX export failed;
            an earlier web app in the folder is left whole.
    """
    if session.model is None or session.spec is None:
        raise ModelError("Nothing to export: load a model first (and train it).")
    if title is None:
        title = "Image classifier"
    if not isinstance(title, str) or not title.strip() or len(title) > _MAX_TITLE:
        raise ConfigError(f"title={title!r} must be a non-empty text of at most {_MAX_TITLE} characters.")
    target = check_folder(folder)
    rt = _runtime(runtime)
    prep = preprocessing(session)
    classes = [str(name) for name in session.classes]
    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "title": title.strip(),
        "model": {"file": MODEL_FILE, "name": str(session.spec.name), "input": export.INPUT_NAME,
                  "output": export.OUTPUT_NAME, "input_shape": [1, 3, prep["input_size"], prep["input_size"]]},
        "classes": classes, "top_k": min(TOP_K, len(classes)), "preprocessing": prep,
        "runtime": {"package": "onnxruntime-web", "version": rt.version, "script": rt.script},
    }
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tlw-webapp-", dir=target))
    try:
        result = export.export_session(session, staging / MODEL_FILE, images, **options)
        for name in ASSET_FILES:
            _copy_regular(ASSETS / name, staging / name)
        written = [*ASSET_FILES, MODEL_FILE]
        if rt.source is not None:
            (staging / RUNTIME_FOLDER).mkdir()
            for name in RUNTIME_FILES:
                _copy_regular(rt.source / name, staging / RUNTIME_FOLDER / name)
            written += [f"{RUNTIME_FOLDER}/{name}" for name in RUNTIME_FILES]
        (staging / CONFIG_FILE).write_text(config_json(config), encoding="utf-8")
        written.append(CONFIG_FILE)
        _move_into_place(staging, target, written, local_runtime=rt.source is not None)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    onnx = export.OnnxExport(target / MODEL_FILE, result.exporter, result.input_size, result.max_abs_diff,
                             result.batch_sizes)
    return WebAppExport(target, tuple(written), rt.script, rt.version, onnx)


def _move_into_place(staging: Path, target: Path, written: list[str], *, local_runtime: bool) -> None:
    """Replace the folder's files with the staged ones, ``classifier.json`` last.

    Without a local runtime, an earlier export's ``ort/`` copy is removed (only its files,
    and the folder when that leaves it empty).
    """
    runtime_dir = target / RUNTIME_FOLDER
    if local_runtime:
        runtime_dir.mkdir(exist_ok=True)
    for name in written:  # CONFIG_FILE is last in the list
        os.replace(staging / name, target / name)
    if not local_runtime and runtime_dir.is_dir() and not runtime_dir.is_symlink():
        for name in RUNTIME_FILES:
            stale = runtime_dir / name
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()
        try:
            runtime_dir.rmdir()
        except OSError:
            pass  # other files are in it: they stay
