"""What a process (or the machine) used, read from Linux's /proc and getrlimit: CPU
seconds, memory, open files; and the share of the machine that other processes took."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(*pids: int) -> float:
    """User + system CPU time so far of the processes `pids` (their threads included),
    summed; a process that is gone counts 0. For this process, time.process_time() is
    finer."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def own_seconds() -> float:
    """CPU time of this process and of its children that have ended and been reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine_busy_seconds() -> float:
    """CPU time every process of this machine spent so far (all CPUs; not idle, not
    iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def others_share(busy_seconds: float, ours_seconds: float, window_seconds: float) -> float:
    """The share of the machine's CPU (all CPUs over `window_seconds`) that processes
    other than ours used, from the machine's busy time and ours over that window: above
    a few percent, a run's figures are disturbed."""
    others = max(0.0, busy_seconds - ours_seconds)
    return others / (max(1e-9, window_seconds) * (os.cpu_count() or 1))


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and VmHWM of `pid` in KiB (empty when it is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` in bytes; RuntimeError when it is gone."""
    kib = memory_kib(pid).get("VmRSS")
    if kib is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return kib * 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_hard_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)


def raise_fd_limit() -> int:
    """RLIMIT_NOFILE soft limit raised to the hard limit (never beyond); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = fd_hard_limit()
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def wait_idle(pid: int, quiet: float = 6.0, limit: float = 180.0) -> float:
    """Wait until `pid` has used under 5% of a CPU for 2 s (e.g. an operator caught up
    with its watch), then `quiet` seconds more; the seconds it took."""
    started = time.monotonic()
    calm = 0
    last = cpu_seconds(pid)
    while calm < 2 and time.monotonic() - started < limit:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        calm = calm + 1 if now - last < 0.05 else 0
        last = now
    time.sleep(quiet)
    return time.monotonic() - started
