"""Fresh virtualenvs holding the project as a user installs it, for the packaging tests.

The project's wheel is built from a copy of the working tree's sources (the tree is left
as it is) once per test session. A venv's dependencies come from the package index
through pip as configured, so these tests need it (they fail, never skip, without it);
each venv is cached under the agent-mesh cache directory, keyed by the Python version and
the requirements it was made from, so later runs only reinstall the project's wheel.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "agent-mesh"
SOURCES = ("pyproject.toml", "README.md", "operator")
PIP_TIMEOUT = 900.0


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(extra: str | None = None) -> list[Requirement]:
    """The project's requirements (base, or one extra's), without references to itself."""
    project = pyproject()["project"]
    raw = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [r for r in map(Requirement, raw) if canonical(r.name) != PROJECT]


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def run(argv: Sequence[str | Path], *, timeout: float = PIP_TIMEOUT, **kwargs: Any) -> str:
    """Run a command; fail with its output (pip's error names the missing package)."""
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def build_wheel(work: Path) -> Path:
    """The project's wheel, built (pip, isolated build) from a copy of the tree's sources."""
    source = work / "source"
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(
                origin,
                source / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
            )
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name)
    wheels = work / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, source])
    (wheel,) = wheels.glob("agent_mesh-*.whl")
    return wheel


def cache_dir() -> Path:
    from agent_mesh.devcluster.versions import cache_root

    return cache_root() / "venvs"


def cached_venv(name: str, key: Sequence[str], install: Sequence[str | Path]) -> Path:
    """A venv made by one `pip install *install`, once per Python version and `key` (the
    requirements the install resolves); its Python interpreter."""
    key_text = json.dumps([sys.version, sorted(key)])
    digest = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}-{digest}"
    python = path / "bin" / "python"
    done = path / ".complete"
    with (root / f"{name}-{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be making the same
        if done.exists():
            return python
        shutil.rmtree(path, ignore_errors=True)
        run([sys.executable, "-m", "venv", path])
        run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        run([python, "-m", "pip", "install", "--quiet", *install])
        done.write_text(key_text)
    return python


def install_project(python: Path, wheel: Path) -> None:
    """Put this tree's code into the venv, leaving its dependencies as they are."""
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", wheel])


def installed(python: Path) -> dict[str, str]:
    """Canonical distribution name → version, as `pip list` reports them."""
    listing = json.loads(run([python, "-m", "pip", "list", "--format=json"]))
    return {canonical(d["name"]): d["version"] for d in listing}


def isolated_env() -> dict[str, str]:
    """The environment without what would import the tree's code instead of the venv's."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
