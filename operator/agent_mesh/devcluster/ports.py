"""Ports: pick a free one, or fail with a clear message when one asked for is taken."""

from __future__ import annotations

import errno
import socket


class PortInUseError(RuntimeError):
    """A port asked for explicitly is taken by another process."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
