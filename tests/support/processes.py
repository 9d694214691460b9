"""Processes a test looks for after the fact (what `agent-mesh dev down` or the demo
should have left running: nothing), and idle ones it starts as stand-ins."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


IDLE_UNTIL_STDIN_CLOSES = "import sys; sys.stdin.read()"
"""Python that does nothing until its stdin closes: a stand-in for a long-lived process
whose lifetime is the test's (the pipe closes when the test ends or dies), not a guess."""


@contextmanager
def idle_process() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that does no work, for a test that needs the pid of an owner that
    lives; it is dead once the block ends."""
    child = subprocess.Popen([sys.executable, "-c", IDLE_UNTIL_STDIN_CLOSES], stdin=subprocess.PIPE)
    try:
        yield child
    finally:
        child.kill()
        child.wait()
        if child.stdin is not None:
            child.stdin.close()
