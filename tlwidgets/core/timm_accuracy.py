"""ImageNet top-1 and top-5 of the timm models, from timm's published results table.

The table is not shipped with tlwidgets: the user fetches it at run time
(:func:`update_accuracy`), and it is kept in the cache folder with the date it was fetched.
"""

from __future__ import annotations

import csv
import datetime as _dt
import http.client
import io
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tlwidgets.core import _cache
from tlwidgets.core.errors import DataError
from tlwidgets.core.regular_files import open_regular_file

CACHE_FILE = "timm_accuracy.json"


def cache_file() -> Path:
    """Where the fetched table is kept: ``<tlwidgets cache>/timm_accuracy.json``."""
    return Path(os.environ.get("TLWIDGETS_CACHE_DIR") or Path.home() / ".cache" / "tlwidgets") / CACHE_FILE


def stamp() -> tuple[float, int] | None:
    """Modification time and size of the cached table (None: not fetched): changes when it is replaced."""
    try:
        st = cache_file().stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


def read() -> dict[str, tuple[float, float]]:
    """``{"<arch>.<tag>": (top1, top5)}`` from the cached table (empty when not fetched or damaged)."""
    rows = _cache.read_json(CACHE_FILE).get("rows")
    if not isinstance(rows, dict):
        return {}
    out = {}
    for name, pair in rows.items():
        if (isinstance(name, str) and isinstance(pair, list) and len(pair) == 2
                and all(isinstance(v, (int, float)) and 0 <= v <= 100 for v in pair)):
            out[name] = (float(pair[0]), float(pair[1]))
    return out


#: timm's published ImageNet validation results (one row per model and image size).
DEFAULT_URL = (
    "https://raw.githubusercontent.com/huggingface/pytorch-image-models/main/results/results-imagenet.csv"
)
#: Largest table read (the real one is about 200 KB).
MAX_BYTES = 20 * 2**20
_REQUIRED = ("model", "img_size", "top1", "top5")
_MODEL_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


def _offline_advice(url: str) -> str:
    return (f"Without internet access, download {url} on another machine, copy it here and call "
            f"tlwidgets.core.timm_accuracy.update_accuracy(path='results-imagenet.csv'); the table is then "
            f"kept at {cache_file()}.")


def _download(url: str, timeout: float, max_bytes: int) -> bytes:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DataError(f"{url!r} is not an http(s) address; pass a local file with path= instead.")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise DataError(f"{url} is {declared} bytes, more than the {max_bytes} a results table may have.")
            body = response.read(max_bytes + 1)
    except DataError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"Could not fetch timm's results table from {url} ({reason}). {_offline_advice(url)}") from exc
    if len(body) > max_bytes:
        raise DataError(f"{url} sent more than {max_bytes} bytes; a results table is far smaller. Nothing was kept.")
    return body


def parse_table(body: bytes, origin: str) -> dict[tuple[str, int], tuple[float, float]]:
    """``{(model, img_size): (top1, top5)}`` from the CSV text of a results table.

    Rows with a malformed name, size or accuracy are skipped; a table without the columns
    ``model, img_size, top1, top5`` or without one valid row is refused.

    Raises:
        DataError: not a results table (wrong encoding, missing columns, no valid row).
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{origin} is not UTF-8 text, so not timm's results table.") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{origin} lacks the column(s) {', '.join(missing)}; expected timm's results-imagenet.csv "
                        f"(columns {', '.join(_REQUIRED)}, ...).")
    table: dict[tuple[str, int], tuple[float, float]] = {}
    try:
        for row in reader:
            try:
                model, size = str(row["model"]).strip(), int(str(row["img_size"]).strip())
                top1, top5 = float(row["top1"]), float(row["top5"])
            except (TypeError, ValueError):
                continue
            if (_MODEL_RE.match(model) and 8 <= size <= 4096 and all(0 <= v <= 100 for v in (top1, top5))
                    and top5 >= top1):
                table[(model, size)] = (top1, top5)
    except csv.Error as exc:
        raise DataError(f"{origin} is not a readable CSV file: {exc}") from exc
    if not table:
        raise DataError(f"{origin} has no row with a valid model name, image size and accuracies.")
    return table


def join(table: dict[tuple[str, int], tuple[float, float]], rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Accuracy per snapshot row ``"<arch>.<tag>"``: the table row of the same name and image size,
    else, where the table names models without their tag, the one of the architecture at that
    size when only one pretrained tag of it has that size."""
    per_arch_size: dict[tuple[str, int], int] = {}
    for row in rows:
        key = (row["arch"], int(row["input_size"][0]))
        per_arch_size[key] = per_arch_size.get(key, 0) + 1
    out = {}
    for row in rows:
        name, size = f"{row['arch']}.{row['tag']}", int(row["input_size"][0])
        found = table.get((name, size))
        if found is None and per_arch_size[(row["arch"], size)] == 1:
            found = table.get((row["arch"], size))
        if found is not None:
            out[name] = [found[0], found[1]]
    return out


def update_accuracy(
    url: str = DEFAULT_URL, *, path: str | os.PathLike[str] | None = None, timeout: float = 30,
    max_bytes: int = MAX_BYTES,
) -> dict[str, Any]:
    """Fetch timm's ImageNet results table and keep the top-1/top-5 of the catalog's timm models.

    Args:
        url: the table to download (http or https).
        path: read this local copy instead of downloading.
        timeout: seconds for the connection and each read.
        max_bytes: larger answers are refused.

    Returns:
        ``{"fetched": date, "url": ..., "matched": models with an accuracy, "models": timm rows}``;
        :func:`tlwidgets.list_models` shows the accuracies from now on.

    Raises:
        DataError: offline (the message names the URL and what to do), too large, or not a
            results table; the previously kept table stays.
    """
    from tlwidgets.core import timm_catalog

    if path is not None:
        file = Path(path).expanduser()
        try:
            with open_regular_file(file) as fh:
                body = fh.read(max_bytes + 1)
        except OSError as exc:
            raise DataError(f"Cannot read {file} ({exc}); pass the results-imagenet.csv downloaded from {url}.") from exc
        if len(body) > max_bytes:
            raise DataError(f"{file} is larger than {max_bytes} bytes; a results table is far smaller.")
        origin = str(file)
    else:
        body, origin = _download(url, timeout, max_bytes), url
    table = parse_table(body, origin)
    rows = timm_catalog.snapshot()["rows"]
    matched = join(table, rows)
    if not matched:
        raise DataError(f"{origin} names none of the {len(rows)} timm models of the catalog; nothing was kept.")
    record = {"fetched": _dt.date.today().isoformat(), "url": origin, "matched": len(matched),
              "models": len(rows), "rows": matched}
    _cache.write_json(CACHE_FILE, record)
    return {k: v for k, v in record.items() if k != "rows"}


def fetched() -> dict[str, Any]:
    """When and from where the kept table came (``{}`` when none): ``fetched``, ``url``, ``matched``."""
    return {k: v for k, v in _cache.read_json(CACHE_FILE).items() if k != "rows"}
