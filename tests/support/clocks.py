"""A monotonic clock the test moves by hand, for what takes one as a callable returning
seconds (as time.monotonic): rate limits, kept answers, token renewal."""

from __future__ import annotations


class Ticks:
    """`ticks()` is `ticks.now`; a test moves it (`ticks.now += 5`)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
