"""Tests that fail on purpose, run in a pytest of their own by
tests/unit/test_failure_reports.py: a failing test's report must carry the logs of the
operator and agent processes it ran (a fixture's and its own), a passing one's not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent_mesh.testing import AgentProcess, OperatorProcess


def _run(log: Path, line: str) -> subprocess.Popen[bytes]:
    """A process that writes `line` to `log` and exits (a stand-in for an operator or an
    agent: the report reads the log, whatever wrote it)."""
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", f"print({line!r})"], stdout=out)
    process.wait(timeout=60)
    return process


@pytest.fixture
def operator(tmp_path: Path) -> OperatorProcess:
    log = tmp_path / "operator.log"
    return OperatorProcess(_run(log, "operator-line-7f3a"), log, 0, 0, "system")


def test_fails_holding_an_operator_and_an_agent(operator: OperatorProcess, tmp_path: Path) -> None:
    agents = {
        "stray": AgentProcess(
            "stray", _run(tmp_path / "a.log", "agent-line-91c2"), "", tmp_path / "a.log"
        )
    }
    assert not agents, "deliberate failure"


def test_passes_holding_an_agent(tmp_path: Path) -> None:
    agent = AgentProcess(
        "quiet", _run(tmp_path / "q.log", "quiet-line-5d0e"), "", tmp_path / "q.log"
    )
    assert agent.exited()
