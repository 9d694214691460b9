"""Ports: pick a free one, or fail with a clear message when one asked for is taken."""

from __future__ import annotations

import errno
import secrets
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 20000
"""Below this, ports are left to fixed services (the node's kubelet listens on 10250)."""

_handed_out: set[int] = set()
"""Ports this process handed out: not handed out again (the first may not be bound yet)."""


class PortInUseError(RuntimeError):
    """A port asked for explicitly is taken by another process."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, for a server started a moment later. Picked below the
    kernel's ephemeral range: a port from that range (what binding port 0 gives) can be
    taken, before its server binds it, as the source port of any outgoing connection
    (an agent of a fleet once failed to start so). Never the same twice in a process."""
    start, stop = LOWEST, _ephemeral_low()
    for _ in range(200):
        port = start + secrets.randbelow(max(stop - start, 1))
        if stop > start and port not in _handed_out and _binds(host, port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room below it
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    _handed_out.add(port)
    return port


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux's default when unreadable)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _binds(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_port_free(host: str, port: int, flag: str) -> None:
    """Raise PortInUseError naming `flag` when host:port cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"{flag}: port {port} on {host} is already in use; "
                    f"choose another port or stop the process that holds it"
                ) from exc
            raise PortInUseError(f"{flag}: cannot bind {host}:{port}: {exc.strerror}") from exc
