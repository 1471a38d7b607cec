"""The test suite's own layout: no file over 600 lines, no two test modules with one
name (pytest imports them by basename: tests/ has no __init__.py files outside support/),
and no test module importing another (shared helpers belong in tests/support/)."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
MAX_LINES = 600


def _files() -> list[Path]:
    return sorted(
        p
        for p in TESTS.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".hypothesis" not in p.parts
    )


def test_no_file_in_tests_is_over_600_lines() -> None:
    too_long = {
        str(p.relative_to(TESTS)): n
        for p in _files()
        if (n := len(p.read_bytes().splitlines())) > MAX_LINES
    }
    assert too_long == {}, f"split these (at most {MAX_LINES} lines each): {too_long}"


def test_test_module_names_are_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
    assert [p for p in TESTS.rglob("__init__.py") if p.parent.name != "support"] == []


def test_no_test_module_imports_another() -> None:
    modules = {p.stem for p in TESTS.rglob("test_*.py")}
    offenders = []
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{path.relative_to(TESTS)}: {n}" for n in names if n in modules]
    assert offenders == []
