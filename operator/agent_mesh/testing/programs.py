"""The programs and manifests shipped with the package (package data, so an installed
wheel has them): the example agents (examples/ in the source tree) and the sample
manifests (config/samples/). In the source tree the package reaches them through
symbolic links, so each file has one copy."""

from __future__ import annotations

from pathlib import Path

import agent_mesh

PACKAGE = Path(agent_mesh.__file__).parent


def example_program(name: str) -> Path:
    """Example agent `name` (e.g. "echo_worker.py"), inside the installed package."""
    path = PACKAGE / "examples" / name
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.py"))
        raise FileNotFoundError(f"no example agent {name!r} in {path.parent} (found: {found})")
    return path


def sample_manifests() -> Path:
    """The folder of sample manifests (MeshAgents, ACLPolicies, a MeshTask)."""
    path = PACKAGE / "samples"
    if not any(path.glob("*.yaml")):
        raise FileNotFoundError(f"no sample manifests in {path}")
    return path
