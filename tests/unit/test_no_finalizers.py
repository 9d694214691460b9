"""The operator puts no finalizer on custom resources: uninstalled, it must leave none stuck
(the Helm issue's promise). kopf adds its finalizer to every object of a resource that has a
timer, a daemon or a non-optional deletion handler, so none of those may be declared."""

from __future__ import annotations

import re
from pathlib import Path

import agent_mesh

PACKAGE = Path(agent_mesh.__file__).parent
FINALIZING = re.compile(r"@kopf\.(timer|daemon)\b|@kopf\.on\.delete\((?![^)]*optional=True)")


def test_no_handler_makes_kopf_add_a_finalizer() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FINALIZING.search(line)
    ]
    assert not found, (
        "kopf puts a finalizer on every object of a resource with a timer, daemon or "
        "non-optional deletion handler; use an operator-wide loop instead:\n" + "\n".join(found)
    )
