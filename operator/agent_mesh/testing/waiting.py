"""Waiting on a condition with a deadline, and asking an HTTP endpoint whether it is up."""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable
from typing import Any


class HarnessError(RuntimeError):
    """A process the harness started exited, or what it waited for did not come in time."""


def wait_until(
    what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1
) -> Any:
    """Poll `check` until it returns something truthy, and return that; HarnessError naming
    `what` (and the last answer) at the deadline. An exception from `check` propagates."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Does GET `url` answer 200 within a second? `context` verifies an https `url`."""
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False
