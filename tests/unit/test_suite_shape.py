"""The suite's shape (docs/testing.md): each fault class registered as a marker has its
files, named after it, and every test in such a file carries that marker."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def registered_markers() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = config["tool"]["pytest"]["ini_options"]["markers"]
    return {line.split(":", 1)[0].strip() for line in lines}


def module_marks(path: Path) -> set[str]:
    """The names X of `pytestmark = pytest.mark.X` (or a list of such) in a test file."""
    marks: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            values = node.value.elts if isinstance(node.value, ast.List) else [node.value]
            marks |= {v.attr for v in values if isinstance(v, ast.Attribute)}
    return marks


def fault_files() -> list[Path]:
    return sorted((ROOT / "tests").glob("*/test_fault_*.py"))


def test_each_fault_file_marks_its_tests_with_the_fault_it_is_named_after() -> None:
    assert fault_files()
    for path in fault_files():
        fault = path.stem.removeprefix("test_")
        assert module_marks(path) == {fault}, path.relative_to(ROOT)


def test_each_fault_class_is_a_registered_marker_with_files_named_after_it() -> None:
    faults = {m for m in registered_markers() if m.startswith("fault_")}
    named = {p.stem.removeprefix("test_") for p in fault_files()}
    assert faults == named
    assert {"smoke", "disruptive"} <= registered_markers()
