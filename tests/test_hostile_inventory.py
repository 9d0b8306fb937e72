"""docs/hostile_inputs.md names only tests that exist.

The inventory's tables name tests as ``file::test`` or ``file::test[id]``. Collecting
those files with pytest (in a subprocess, collection only) and looking the names up
means a renamed or removed test, or a parametrized case that is gone, fails here
instead of leaving the inventory quietly wrong.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "hostile_inputs.md"
HEADER = ["Case", "Expected answer", "Test"]
# `tests/core/test_x.py::test_name` or `tests/core/test_x.py::test_name[parametrization id]`
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([^`]*)\])?`")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def case_rows(text: str) -> list[list[str]]:
    """The rows of every table whose header is Case | Expected answer | Test."""
    rows: list[list[str]] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block and _cells(block[0]) == HEADER:
            rows += [_cells(row) for row in block[2:]]  # after the header and the --- line
        block = []
    return rows


def references(rows: list[list[str]]) -> list[tuple[str, str, str | None]]:
    """(file, test function, parametrization id or None) for every test named in ``rows``."""
    return [(f, name, case or None) for row in rows for f, name, case in REF.findall(row[-1])]


def collected_ids(files: list[str]) -> tuple[set[str], str]:
    """Every test id pytest collects from ``files``, and the collection's own output."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    output = done.stdout + done.stderr
    # A collection error (a file that no longer imports) shows as missing names, with the output.
    ids = {line.strip() for line in done.stdout.splitlines() if line.startswith("tests/") and "::" in line}
    return ids, output


def test_every_row_names_a_case_an_answer_and_a_test() -> None:
    rows = case_rows(DOC.read_text(encoding="utf-8"))
    assert len(rows) > 100, "the inventory's tables were not found"
    for row in rows:
        assert len(row) == 3, f"a row needs three cells (case, expected answer, test): {row}"
        case, answer, tests = row
        assert case and answer, row
        assert REF.findall(tests), f"no test named as `tests/...py::test` in: {row}"


def test_every_test_named_in_the_inventory_exists() -> None:
    refs = references(case_rows(DOC.read_text(encoding="utf-8")))
    files = sorted({f for f, _, _ in refs})
    absent = [f for f in files if not (ROOT / f).is_file()]
    assert not absent, f"docs/hostile_inputs.md names test files that do not exist: {absent}"

    ids, output = collected_ids(files)
    functions = {i.split("[", 1)[0] for i in ids}
    missing = []
    for f, name, case in refs:
        if case is None and f"{f}::{name}" not in functions:
            missing.append(f"{f}::{name}")
        elif case is not None and f"{f}::{name}[{case}]" not in ids:
            missing.append(f"{f}::{name}[{case}]")
    assert not missing, (
        "docs/hostile_inputs.md names tests that pytest does not collect (renamed or removed?):\n  "
        + "\n  ".join(sorted(set(missing)))
        + "\n\npytest --collect-only said:\n"
        + output[-3000:]
    )
