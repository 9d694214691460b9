"""The benchmarks' command line: every script takes `--quick` (the smallest sizes: a
smoke run of a minute or so) and names its sizes as flags (`--tasks`, `--agents`, …)
whose default depends on `--quick`; a size given explicitly wins. `run(main)` is the
scripts' entry: SIGTERM ends the bench through its finally blocks, and every process it
started is stopped by pid when it ends, however it ends."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Any

from .children import stop_all


class BenchParser(argparse.ArgumentParser):
    """argparse with `--quick` and size flags: `size("--tasks", quick=200, full=2000)`."""

    def __init__(self, doc: str | None) -> None:
        super().__init__(description=(doc or "").split("\n\n")[0])
        self.add_argument("--quick", action="store_true", help="the smallest sizes (smoke)")
        self._sizes: dict[str, tuple[Any, Any]] = {}

    def size(self, flag: str, *, quick: Any, full: Any, help: str, type: Any = int) -> None:
        """A size flag whose default is `quick` with --quick, else `full`."""
        dest = flag.lstrip("-").replace("-", "_")
        self._sizes[dest] = (quick, full)
        shown = f"{full:,}" if isinstance(full, int) else str(full)
        quick_shown = f"{quick:,}" if isinstance(quick, int) else str(quick)
        self.add_argument(
            flag, type=type, default=None, help=f"{help} (default {shown}; --quick {quick_shown})"
        )

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        args = self.parse_args(argv)
        for dest, (quick, full) in self._sizes.items():
            if getattr(args, dest) is None:
                setattr(args, dest, quick if args.quick else full)
        return args


def quick_or_full(args: argparse.Namespace, quick: Any, full: Any) -> Any:
    """For a size that is not a flag: `quick` with --quick, else `full`."""
    return quick if args.quick else full


def run(main: Callable[[], int | None]) -> None:
    """Run a bench's `main` and exit with its code; SIGTERM runs the finally blocks, and
    every child still running is stopped at the end."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        code = main()
    finally:
        stop_all()
    sys.exit(code or 0)
