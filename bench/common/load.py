"""Load on an async call: one at a time (latencies), closed loop (a fixed number in
flight, each caller sends its next call when its last is answered), and in-process calls
per second."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def sequential(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    """`count` calls one after another: the seconds each took."""
    out = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        out.append(time.perf_counter() - start)
    return out


async def closed_loop(
    call: Callable[[int], Awaitable[object]], count: int, concurrency: int
) -> float:
    """Calls `call(0)` … `call(count - 1)` with `concurrency` in flight (each of that many
    workers takes the next index when its call returns): the seconds it took."""
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < count:
            i = position
            position += 1
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def per_second(call: Callable[[], Awaitable[object]], count: int, concurrency: int) -> float:
    """Calls per second of `call` with `concurrency` in flight, `count` calls in all."""
    return count / await closed_loop(lambda _: call(), count, concurrency)


def calls_per_second(fn: Callable[[T], object], items: Sequence[T], seconds: float) -> float:
    """In-process calls of `fn` per second, cycling through `items`, for about
    `seconds`."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for item in items:
            fn(item)
        done += len(items)
    return done / (time.perf_counter() - start)


def per_call_us(fn: Callable[[], object], seconds: float, repeats: int = 5) -> float:
    """µs per in-process call of `fn`: the best of `repeats` windows (the least disturbed
    by other work)."""
    best = math.inf
    for _ in range(repeats):
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds / repeats:
            for _ in range(100):
                fn()
            done += 100
        best = min(best, (time.perf_counter() - start) / done)
    return best * 1e6
