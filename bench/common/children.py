"""The processes a benchmark starts: each stopped by its pid when the bench ends, fails or
gets SIGTERM (`stop_all`, called by cli.run), and each dying with the bench if it is
killed without that chance.

Two kinds:
- `Child`: a Python function in a spawned process (multiprocessing, "spawn": a fresh
  interpreter that imports only what the function's module needs). It watches its
  parent and exits when the bench is gone.
- `Started`: a program exec'd with its output in a log file (devcluster's `spawn`, which
  gives it a death signal: SIGKILL when the bench dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

SPAWN = multiprocessing.get_context("spawn")


_live: list[Callable[[], None]] = []


def on_stop(stop: Callable[[], None]) -> None:
    """Have `stop_all` call `stop` (before what was registered earlier)."""
    _live.append(stop)


def forget(stop: Callable[[], None]) -> None:
    with contextlib.suppress(ValueError):
        _live.remove(stop)


def stop_all() -> None:
    """Stop everything still running, the latest started first; errors are swallowed (a
    bench that fails must still stop the rest)."""
    while _live:
        with contextlib.suppress(Exception):
            _live.pop()()


# --- spawned Python functions ----------------------------------------------------------


def _child_main(
    target: Callable[..., None],
    args: tuple[Any, ...],
    quiet: bool,
    exit_on_stop: bool,
    ready: Event,
    stop: Event,
) -> None:
    if quiet:
        logging.disable(logging.CRITICAL)  # log lines would cost time, not what is measured
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench decides when we stop
    watch_parent(stop if exit_on_stop else None)
    target(*args, ready, stop)


class Child:
    """`target(*args, ready, stop)` in a spawned process: it sets `ready` once it serves
    (or has started its work) and returns soon after `stop` is set. `quiet`: logging off
    and Ctrl-C ignored in the child; `exit_on_stop`: the child exits as soon as `stop`
    is set (for one with nothing to finish). Stopped by pid: politely first, then
    terminated, then killed."""

    def __init__(
        self,
        name: str,
        target: Callable[..., None],
        *args: Any,
        quiet: bool = True,
        exit_on_stop: bool = False,
        grace: float = 20.0,
    ) -> None:
        self.name = name
        self.grace = grace
        self.ready = SPAWN.Event()
        self.stop_event = SPAWN.Event()
        self.process = SPAWN.Process(
            target=_child_main,
            args=(target, args, quiet, exit_on_stop, self.ready, self.stop_event),
            name=name,
            daemon=True,
        )

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def start(self, timeout: float = 120, wait: bool = True) -> Child:
        """Start it; with `wait`, until it is ready (RuntimeError if it dies or
        `timeout` passes first)."""
        self.process.start()
        on_stop(self.stop)
        if wait:
            deadline = time.monotonic() + timeout
            while not self.ready.wait(0.2):
                if not self.process.is_alive() or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"{self.name} did not start (exit code {self.process.exitcode})"
                    )
        return self

    def stop(self, grace: float | None = None) -> None:
        forget(self.stop)
        if self.process.pid is None:  # never started
            return
        self.stop_event.set()
        self.process.join(self.grace if grace is None else grace)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def __enter__(self) -> Child:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def receive(conn: Connection, child: Child, timeout: float) -> Any:
    """What `child` sends on `conn`; RuntimeError when it dies first or `timeout`
    passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.poll(0.5):
            return conn.recv()
        if not child.process.is_alive() and not conn.poll(0.5):
            raise RuntimeError(
                f"{child.name} exited with {child.process.exitcode} and sent nothing"
            )
    raise RuntimeError(f"{child.name} did not finish within {timeout:.0f} s")


def orphaned() -> bool:
    """In a child: has the bench died without stopping us (SIGKILL)?"""
    parent = multiprocessing.parent_process()
    return parent is not None and not parent.is_alive()


def watch_parent(stop: Event | None = None) -> None:
    """In a child: exit at once when the bench is gone without stopping us (killed), or,
    given `stop`, as soon as it is set."""

    def watch() -> None:
        while not orphaned() and not (stop is not None and stop.is_set()):
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


async def wait_for_stop(stop: Event) -> None:
    """In a child's event loop: block (in a thread) until the bench sets `stop`."""
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)


# --- exec'd programs ---------------------------------------------------------------------


@dataclass
class Started:
    """A program this benchmark started (`start`), stopped by its pid: SIGTERM, `grace`
    seconds, then SIGKILL."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    grace: float = 10.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        from agent_mesh.devcluster.processes import terminate

        forget(self.stop)
        if self.process.poll() is None:
            terminate(self.process.pid, grace=self.grace, child=self.process)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def exited(self) -> bool:
        return self.process.poll() is not None


def start(
    name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, grace: float = 10.0
) -> Started:
    """`argv` with its output appended to `log`, killed if the bench dies."""
    # here, not at the top: the local control plane's package is heavy, and the
    # spawned children (agents whose memory a bench measures) import this module
    from agent_mesh.devcluster.processes import spawn

    return adopt(name, spawn(argv, log, detached=False, env=env), log, grace)


def adopt(name: str, process: subprocess.Popen[bytes], log: Path, grace: float = 10.0) -> Started:
    """A program started elsewhere (e.g. by agent_mesh.testing), stopped with the rest."""
    started = Started(name, process, log, grace)
    on_stop(started.stop)
    return started
