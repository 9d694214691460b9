"""Processes a test looks for after the fact: what `agent-mesh dev down` or the demo
should have left running (nothing)."""

from __future__ import annotations

from pathlib import Path

from agent_mesh.devcluster.processes import alive


def processes_under(directory: Path) -> list[int]:
    """Pids whose command line mentions `directory` (etcd and the apiserver do)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(directory).encode() in cmdline and alive(int(proc.name)):
            found.append(int(proc.name))
    return found
