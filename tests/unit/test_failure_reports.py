"""A failing test's report carries the logs of the operator and agent processes it ran
(tests/support/reporting.py pytest_runtest_makereport), shown by a pytest run of its own over
tests/programs/failing_with_logs.py; the run ends with the time per tier."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    """A pytest run of its own over `args`, from the repository root, as `make test` runs."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_failing_test_report_carries_the_logs_of_its_processes() -> None:
    run = _pytest("tests/programs/failing_with_logs.py")
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "1 failed, 1 passed" in out, out
    # the fixture's operator and the agent the test body started, each with its log
    assert "operator log (pid" in out and "operator-line-7f3a" in out, out
    assert "agent stray log (pid" in out and "agent-line-91c2" in out, out
    assert "quiet-line-5d0e" not in out, out  # a passing test's logs stay out


def test_a_run_ends_with_each_tiers_time_against_its_budget() -> None:
    run = _pytest("-o", "tier_budget_seconds=unit = 0.001", "tests/unit/test_retry.py")
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    summary = out[out.index("time per tier") :]
    assert "unit" in summary and "OVER BUDGET" in summary, out
    assert "tier(s) over their time budget: unit" in summary, out
