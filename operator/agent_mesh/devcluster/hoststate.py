"""What a node leaves on the host besides its network: processes, mounts, cgroups, paths.

Used to take a node down (and to reclaim one whose processes were killed hard) and to
prove afterwards that nothing is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import time
from collections.abc import Iterable
from pathlib import Path

_MNT_DETACH = 2
# The kubelet (cgroupfs driver) puts every pod under `kubepods` in each hierarchy.
CGROUP_PARENT = "kubepods"
# Written by the stack whatever its configured directories: kept only when they existed
# before the node started.
FIXED_PATHS = (
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/cni",
    "/run/netns",
    "/var/run/netns",
    "/run/containerd",
    "/var/run/nri",
    "/etc/cni",
    "/opt/containerd",
)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return (
        field.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount this process sees."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        found.append((_unescape(fields[4]), fields[sep + 1]))
    return found


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def mounts_under(prefixes: Iterable[str]) -> list[str]:
    wanted = list(prefixes)
    return [point for point, _ in mounts() if _under(point, wanted)]


def unmount_under(prefixes: Iterable[str]) -> None:
    """Detach every mount below `prefixes`, deepest first (a lazy unmount never blocks)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(3):  # a detached parent may uncover another layer
        points = sorted(set(mounts_under(prefixes)), key=lambda p: p.count("/"), reverse=True)
        if not points:
            return
        for point in points:
            libc.umount2(os.fsencode(point), _MNT_DETACH)


def cgroup_roots() -> list[Path]:
    return [Path(p) for p, fstype in mounts() if fstype in ("cgroup", "cgroup2")]


def node_cgroups() -> list[Path]:
    """The pods' cgroup trees (one per hierarchy)."""
    return [root / CGROUP_PARENT for root in cgroup_roots() if (root / CGROUP_PARENT).is_dir()]


def _cgroup_pids(tree: Path) -> set[int]:
    pids: set[int] = set()
    for procs in tree.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroups(timeout: float = 10.0) -> None:
    """Kill whatever still runs in the pods' cgroups, then remove the trees bottom-up."""
    deadline = time.monotonic() + timeout
    while True:
        pids = set().union(*(_cgroup_pids(t) for t in node_cgroups())) if node_cgroups() else set()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for tree in node_cgroups():
        for directory in sorted(
            (d for d in tree.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            tree.rmdir()


def processes_of(binaries: Iterable[Path]) -> list[tuple[int, str]]:
    """(pid, binary) of every live process executing one of `binaries`."""
    wanted = {str(b) for b in binaries}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        exe = exe.removesuffix(" (deleted)")
        if exe in wanted and not _zombie(int(entry.name)):
            found.append((int(entry.name), exe))
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def kill_processes(binaries: Iterable[Path], timeout: float = 10.0) -> None:
    """SIGTERM every process of `binaries`, SIGKILL what is left at the deadline."""
    targets = list(binaries)
    for pid, _ in processes_of(targets):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while processes_of(targets) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, _ in processes_of(targets):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while processes_of(targets) and time.monotonic() < deadline:
        time.sleep(0.05)


def existing(paths: Iterable[str]) -> list[str]:
    return [p for p in paths if os.path.lexists(p)]


def remove_paths(paths: Iterable[str]) -> None:
    for path in paths:
        if os.path.islink(path) or os.path.isfile(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
