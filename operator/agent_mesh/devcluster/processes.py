"""Child processes of the control plane: started with a death signal, stopped by pid.

A plane started for tests dies with the process that started it (PR_SET_PDEATHSIG), so an
interrupted or killed test run leaves no orphans. Every child gets a session of its own, so
a Ctrl-C in the terminal reaches only the process that started it, which then cleans up
against a cluster that still runs (in the terminal's process group, etcd would stop at the
same moment and every teardown call would hang on the apiserver). A plane started by
`dev up` is detached and stopped later by `dev down`, which checks a pid still runs our
binary before signalling.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # SIGKILL, not SIGTERM: both components get the signal at once, and an apiserver
    # shutting down gracefully waits on the etcd that is already gone.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def spawn(
    argv: list[str], log_path: Path, *, detached: bool, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a binary with its output appended to `log_path`."""
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=None if detached else _die_with_parent,
        )
    finally:
        log.close()


def exit_report(
    component: str, child: subprocess.Popen[bytes] | None, log_path: Path, during: str
) -> str | None:
    """Why `child` stopped `during` a start, with the last lines of its log; None while
    it runs (or when there is no child)."""
    if child is None or child.poll() is None:
        return None
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
    return (
        f"{component} exited with code {child.returncode} {during}; "
        f"last lines of {log_path}:\n{tail}"
    )


def runs_binary(pid: int, binary: Path) -> bool:
    """True when `pid` is alive and executes `binary` (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0] == os.fsencode(str(binary))


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot (/proc/<pid>/stat, field 22); None when
    no such process. With the pid it names one process: a reused pid starts later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # from field 3 (state) on: the name may hold ")"
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_recorded(pid: int, started: int, binary: Path | None = None) -> bool:
    """True when `pid` is still the process that was recorded: alive, started at `started`
    and, when given, executing `binary`. A pid reused since is never taken for it."""
    if not alive(pid) or start_time(pid) != started:
        return False
    return binary is None or runs_binary(pid, binary)


def stop_recorded(pid: int, started: int, binary: Path, *, grace: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after `grace`, the recorded process `pid` (not our child), each
    signal only while it is still that process. True when it was running."""
    if not is_recorded(pid, started, binary):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not is_recorded(pid, started, binary):
            return True
        time.sleep(0.05)
    if is_recorded(pid, started, binary):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def terminate(
    pid: int, *, grace: float = 10.0, child: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; reap it when it is our child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            return
        if child is None and not alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if child is not None:
        child.wait(timeout=5)
