"""cProfile a block of a benchmark, and read a dump back."""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def profiled(path: str | Path | None) -> Iterator[None]:
    """cProfile the block into `path` (nothing when None)."""
    if path is None:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)


def top_functions(path: str | Path, top: int = 30) -> str:
    """The `top` functions of a cProfile dump by own time, as pstats prints them."""
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()
