"""The declared dependency floors are real: the oldest release every requirement allows,
installed together in a fresh venv (nothing newer), runs the whole unit suite.

Marked `packaging` (its folder): it needs the package index the first time; the venv is
then cached by the set of floors, so a later run costs the unit suite and a wheel build.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from tests.support.venvs import (
    ROOT,
    build_wheel,
    cached_venv,
    canonical,
    install_project,
    installed,
    isolated_env,
    requirements,
    run,
)

LINT_ONLY = frozenset({"ruff", "mypy", "import-linter", "types-pyyaml"})
"""Dev requirements the unit suite does not run (make lint does)."""
UNIT_SUITE_TIMEOUT = 600.0


def floor_pins() -> list[str]:
    """`name==floor` for every requirement of the SDK, the operator extra and the test
    tools; a requirement without a floor fails here, naming it."""
    pins = []
    for extra in (None, "operator", "dev"):
        for req in requirements(extra):
            if canonical(req.name) in LINT_ONLY:
                continue
            floors = [s.version for s in req.specifier if s.operator in (">=", "~=", "==")]
            assert floors, f"{req} (extra {extra or 'none'}) declares no floor"
            extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
            pins.append(f"{req.name}{extras}=={floors[0]}")
    return pins


def test_the_unit_suite_passes_on_the_oldest_declared_dependencies(tmp_path: Path) -> None:
    pins = floor_pins()
    python = cached_venv("floors", pins, pins)
    install_project(python, build_wheel(tmp_path))
    got = installed(python)
    for pin in map(Requirement, pins):
        (floor,) = pin.specifier
        assert Version(got[canonical(pin.name)]) == Version(floor.version), pin
    run([python, "-m", "pip", "check"])
    result = subprocess.run(
        [python, "-m", "pytest", "-m", "unit", "-q", "-p", "no:cacheprovider", "tests/unit"],
        cwd=ROOT,
        env=isolated_env(),
        capture_output=True,
        text=True,
        timeout=UNIT_SUITE_TIMEOUT,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
    assert " passed" in summary and "failed" not in summary, summary
