"""No test sleeps a fixed time and then asserts that something happened meanwhile: on a
loaded machine the something may not have happened yet. Tests wait on a condition with a
deadline instead (tests/support/waiting.py `wait_for`, `wait_for_async`).

A sleep that is itself the behaviour under test (letting a lease or a TTL run out) says
so with the marker comment `# sleep-is-the-test: <why>` on the sleep's line.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

TESTS: Final = Path(__file__).resolve().parents[1]
MARKER: Final = "# sleep-is-the-test:"


def _is_sleep(statement: ast.stmt) -> bool:
    """`time.sleep(...)`, `asyncio.sleep(...)` or `await asyncio.sleep(...)`, as a
    statement of its own, sleeping a nonzero time (sleep(0) only yields to the loop)."""
    if not isinstance(statement, ast.Expr):
        return False
    call = statement.value.value if isinstance(statement.value, ast.Await) else statement.value
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
        return False
    target = call.func
    named = (
        target.attr == "sleep"
        and isinstance(target.value, ast.Name)
        and target.value.id in ("time", "asyncio")
    )
    yields_only = (
        bool(call.args) and isinstance(call.args[0], ast.Constant) and call.args[0].value == 0
    )
    return named and not yields_only


def _scan(
    statements: list[ast.stmt], in_loop: bool, sleeps: list[ast.stmt], asserts: list[int]
) -> None:
    """Collect, in one function, the sleeps outside loops and the lines of its asserts;
    nested functions (stand-in handlers, helpers) are functions of their own."""
    for statement in statements:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(statement, ast.Assert):
            asserts.append(statement.lineno)
        elif _is_sleep(statement) and not in_loop:
            sleeps.append(statement)
        looping = in_loop or isinstance(statement, ast.For | ast.AsyncFor | ast.While)
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(statement, name, None) or []:
                if isinstance(child, ast.stmt):
                    _scan([child], looping, sleeps, asserts)
                elif hasattr(child, "body"):  # except handlers, match cases
                    _scan(child.body, looping, sleeps, asserts)


def sleeps_before_asserts(path: Path) -> list[str]:
    """`path:line` of every unmarked sleep that is not a polling loop's pause and is
    followed, later in its function, by an assert."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        sleeps: list[ast.stmt] = []
        asserts: list[int] = []
        _scan(node.body, False, sleeps, asserts)
        for sleep in sleeps:
            if MARKER in lines[sleep.lineno - 1]:
                continue
            if any(line > sleep.lineno for line in asserts):
                found.append(f"{path.relative_to(TESTS.parent)}:{sleep.lineno}")
    return found


def test_no_test_sleeps_a_fixed_time_and_then_asserts() -> None:
    offenders = [hit for path in sorted(TESTS.rglob("*.py")) for hit in sleeps_before_asserts(path)]
    assert offenders == [], (
        "a fixed sleep followed by an assert: wait on the condition with a deadline "
        "(wait_for / wait_for_async), or mark a sleep that is the behaviour under test "
        f"with {MARKER!r}:\n" + "\n".join(offenders)
    )


def test_the_scan_finds_a_sleep_followed_by_an_assert(tmp_path: Path) -> None:
    sample = TESTS / "unit" / "_sleep_sample_for_scan.py"
    body = (
        "import asyncio, time\n"
        "async def t(x):\n"
        "    await asyncio.sleep(1.5)\n"
        "    y = x()\n"
        "    assert y\n"
        "def u(x):\n"
        "    while not x():\n"
        "        time.sleep(0.1)\n"  # a poll: nothing after it in its block
        "    assert x()\n"
        "    time.sleep(2)  # sleep-is-the-test: the lease runs out\n"
        "    assert not x()\n"
        "    time.sleep(1)\n"
        "    with x():\n"
        "        y = x()\n"
        "    if y:\n"
        "        assert x()\n"
        "    async def handler():\n"
        "        await asyncio.sleep(5)  # a slow stand-in: nothing asserted after it\n"
        "        return 1\n"
    )
    sample.write_text(body)
    try:
        assert sleeps_before_asserts(sample) == [
            "tests/unit/_sleep_sample_for_scan.py:3",
            "tests/unit/_sleep_sample_for_scan.py:12",
        ]
    finally:
        sample.unlink()
