"""Where tlwidgets keeps files it makes: speed results, extracted archives, demo data."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cache_dir(*parts: str) -> Path:
    """Return (and create) ``$TLWIDGETS_CACHE_DIR/parts...``, default ``~/.cache/tlwidgets``."""
    base = Path(os.environ.get("TLWIDGETS_CACHE_DIR") or Path.home() / ".cache" / "tlwidgets")
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_json(name: str) -> dict[str, Any]:
    """The JSON object in ``name`` under the cache folder, or ``{}`` (missing, damaged, not an object).

    Reading never creates the cache folder (:func:`cache_dir` would).
    """
    base = os.environ.get("TLWIDGETS_CACHE_DIR") or Path.home() / ".cache" / "tlwidgets"
    try:
        data = json.loads((Path(base) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(name: str, data: dict[str, Any]) -> None:
    """Replace ``name`` under the cache folder with ``data`` at once (temporary file, then rename)."""
    path = cache_dir() / name
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{Path(name).stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
