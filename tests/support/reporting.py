"""What a run reports beyond pass and fail: each tier's time against its budget, and the
logs of the operators and agents a failing test ran (a pytest plugin, loaded by
tests/conftest.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

import pytest

from agent_mesh.testing import AgentProcess, OperatorProcess

TIERS = ("unit", "integration", "e2e", "packaging", "node")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "tier_budget_seconds",
        "seconds each tier may take in one run, one `<tier> = <seconds>` a line; a run "
        "says loudly which tiers went over",
        type="linelist",
        default=[],
    )


_tier_seconds: dict[str, float] = {}
_tier_tests: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tier = next((t for t in TIERS if t in report.keywords), None)
    if tier is None:
        return
    _tier_seconds[tier] = _tier_seconds.get(tier, 0.0) + report.duration
    if report.when == "call" or (report.when == "setup" and report.skipped):
        _tier_tests[tier] = _tier_tests.get(tier, 0) + 1


def tier_budgets(config: pytest.Config) -> dict[str, float]:
    """`tier_budget_seconds` from pyproject: {tier: seconds}; a bad line names itself."""
    budgets = {}
    for line in config.getini("tier_budget_seconds"):
        tier, _, seconds = line.partition("=")
        tier = tier.strip()
        if tier not in TIERS or not seconds.strip().replace(".", "", 1).isdigit():
            raise pytest.UsageError(
                f"tier_budget_seconds: {line!r} must read `<tier> = <seconds>` with a tier "
                f"of {', '.join(TIERS)}"
            )
        budgets[tier] = float(seconds)
    return budgets


@pytest.hookimpl(trylast=True)  # after --durations: the last word of a run
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Each tier's total time (setup, call and teardown of its tests) against its budget;
    a tier over its budget is named in red, so a slow suite cannot creep in unseen."""
    if not _tier_seconds:
        return
    budgets = tier_budgets(config)
    terminalreporter.section("time per tier")
    over = []
    for tier in TIERS:
        if tier not in _tier_seconds:
            continue
        spent, budget = _tier_seconds[tier], budgets.get(tier)
        line = f"{tier:<12} {spent:8.1f} s  {_tier_tests.get(tier, 0):4d} tests"
        if budget is None:
            terminalreporter.write_line(f"{line}  (no budget)")
        elif spent > budget:
            over.append(tier)
            terminalreporter.write_line(
                f"{line}  OVER BUDGET: {spent:.0f} s of {budget:.0f} s", red=True, bold=True
            )
        else:
            terminalreporter.write_line(f"{line}  of {budget:.0f} s budget")
    if over:
        terminalreporter.write_line(
            f"!!! {len(over)} tier(s) over their time budget: {', '.join(over)} "
            "(tier_budget_seconds in pyproject.toml) !!!",
            red=True,
            bold=True,
        )


LOG_TAIL_CHARS = 20_000
"""How much of each process's log a failure report carries (its end: the failure)."""


def processes_in(*roots: object) -> list[OperatorProcess | AgentProcess]:
    """The operator and agent processes reachable from `roots` (a fixture's value, a
    frame's locals): directly, in dicts, lists, tuples or a dataclass's fields (a
    fleet's), two levels down; each once."""
    found: dict[int, OperatorProcess | AgentProcess] = {}

    def visit(value: object, depth: int) -> None:
        if isinstance(value, OperatorProcess | AgentProcess):
            found.setdefault(id(value), value)
        elif depth == 0:
            return
        elif isinstance(value, dict):
            for inner in list(value.values()):
                visit(inner, depth - 1)
        elif isinstance(value, list | tuple | set | frozenset):
            for inner in list(value):
                visit(inner, depth - 1)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for field in dataclasses.fields(value):
                visit(getattr(value, field.name, None), depth - 1)

    for root in roots:
        visit(root, 3)
    return list(found.values())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report carries the logs of the operators and agents it ran: the
    ones its fixtures hold and the ones its own code started (the locals of the frames
    the failure passed through), so a failure on a loaded machine can be read afterwards."""
    report = yield
    if not report.failed:
        return report
    roots: list[object] = list(getattr(item, "funcargs", {}).values())
    if call.excinfo is not None:
        roots.extend(entry.frame.f_locals for entry in call.excinfo.traceback)
    for process in processes_in(*roots):
        what = "operator" if isinstance(process, OperatorProcess) else f"agent {process.agent_id}"
        try:
            text = process.logs()
        except OSError as exc:
            text = f"(log unreadable: {exc})"
        if len(text) > LOG_TAIL_CHARS:
            text = f"... ({len(text) - LOG_TAIL_CHARS} characters before)\n{text[-LOG_TAIL_CHARS:]}"
        report.sections.append((f"{what} log (pid {process.pid}, {process.log.name})", text))
    return report
