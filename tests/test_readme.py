"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    blocks = _bash_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    demo = [b for b in blocks if "examples/quickstart.ipynb" in b]
    tests = [b for b in blocks if "pytest" in b]
    assert len(demo) == 1 and demo[0].startswith("pip install"), blocks
    assert len(tests) == 1, blocks
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests[0] in ci, "CI must run the README's test command verbatim"
    assert (ROOT / "examples" / "quickstart.ipynb").is_file()
