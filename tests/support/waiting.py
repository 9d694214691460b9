"""Waiting on a condition with a deadline, never a sleep followed by an assert: the test
fails naming what it waited for."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from agent_mesh import testing


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    try:
        return testing.wait_until(what, check, timeout, interval)
    except testing.HarnessError as exc:
        pytest.fail(str(exc))


async def wait_for_async(
    what: str, check: Callable[[], Any], within: float = 30.0, interval: float = 0.1
) -> Any:
    """`wait_for` for async tests: the loop runs between polls; `check` may be async."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while loop.time() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    pytest.fail(f"timed out after {within:.0f} s waiting for {what} (last: {last!r})")
