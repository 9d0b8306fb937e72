"""The core must stay usable without any widget library."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_widget_library() -> None:
    code = (
        "import sys, tlwidgets.core, tlwidgets.core.session;"
        "bad = sorted(m for m in ('ipywidgets', 'plotly', 'ipyfilechooser', 'anywidget') if m in sys.modules);"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"tlwidgets.core pulled in: {out.stdout.strip()}"
