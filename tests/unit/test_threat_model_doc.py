"""docs/security.md's threat model names a test for every attack: each must exist, so the
table cannot drift from the suite it points at."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_CELL = re.compile(r"`([^`]+)`")


def _named_tests() -> list[tuple[str, str]]:
    """(test file, test name) of every test the table's third column names; `…::name`
    means the file named just before it."""
    text = (ROOT / "docs" / "security.md").read_text()
    table = text.split("## Threat model", 1)[1]
    named: list[tuple[str, str]] = []
    for line in table.splitlines():
        cells = line.split("|")
        if len(cells) < 5 or not cells[3].strip().startswith("`"):
            continue
        current = ""
        for ref in _CELL.findall(cells[3]):
            path, _, name = ref.rpartition("::")
            if path and not path.startswith("…"):
                current = path
            name = name.removeprefix("…")
            if "…" in name:  # an abbreviation of several tests, e.g. `…hex…`
                continue
            named.append((current, name))
    return named


def test_every_test_the_threat_model_names_exists() -> None:
    named = _named_tests()
    assert len(named) >= 40
    missing = [
        f"{path}::{name}"
        for path, name in named
        if f"def {name}(" not in (ROOT / "tests" / path).read_text()
    ]
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
