"""Where tlwidgets keeps files it makes: speed results, extracted archives, demo data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Return (and create) ``$TLWIDGETS_CACHE_DIR/parts...``, default ``~/.cache/tlwidgets``."""
    base = Path(os.environ.get("TLWIDGETS_CACHE_DIR") or Path.home() / ".cache" / "tlwidgets")
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
