"""The package's structure, read from its source: no import cycles (imports inside functions
count, ``TYPE_CHECKING`` blocks do not), and no module outside the session's own files assigns
a Session's traits or private attributes (they go through ``Session.install_state``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tlwidgets"
SESSION_FILES = {"session.py", "session_state.py", "session_layers.py", "session_outputs.py"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, from every import statement."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        skip = _type_checking_nodes(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            deps.update(t for t in targets if t in modules and t != name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()
    assert "tlwidgets.core.catalog" in graph["tlwidgets.core.session"]
    assert "tlwidgets.core.recipes" in graph["tlwidgets.core.session"]  # imported inside lr_find()


def test_the_package_has_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert found == [], f"import cycles: {found}"


def _outside_writes(package: Path = PACKAGE) -> list[str]:
    from tlwidgets.core.session import Session

    traits = set(Session.class_trait_names())
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name in SESSION_FILES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            for target in targets:
                for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if not isinstance(t, ast.Attribute):
                        continue
                    base = ast.unparse(t.value)
                    names_a_session = base.endswith("session") or base in ("work", "s")
                    if names_a_session and (t.attr in traits or t.attr.startswith("_")):
                        found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {ast.unparse(t)} = ...")
    return found


def test_no_module_outside_the_session_assigns_its_traits_or_private_attributes() -> None:
    assert _outside_writes() == []


@pytest.mark.parametrize("line", ["session.model = m", "self.session.runs = ()", "work._trainer = None",
                                  "session.model_version += 1"])
def test_the_write_check_catches_each_kind_of_write(tmp_path: Path, line: str) -> None:
    fake = tmp_path / "tlwidgets"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "intruder.py").write_text(f"def f(session, self, work, m):\n    {line}\n")
    (fake / "core" / "session.py").write_text(f"def g(session, self, work, m):\n    {line}\n")  # its own file
    assert len(_outside_writes(fake)) == 1


def test_test_files_have_unique_names() -> None:
    """The test folders are not packages: two test files with one name stop the whole run at collection."""
    tests = Path(__file__).resolve().parent
    seen: dict[str, list[str]] = {}
    for path in tests.rglob("test_*.py"):
        seen.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
    assert len(seen) > 50  # the search found the suite
