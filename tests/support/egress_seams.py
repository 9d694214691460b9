"""Seams for tests of outbound requests: nothing but loopback is ever dialled.

`MapResolver` answers a test's names with the addresses the test chose; `record_connects`
records every connection attempted on the event loop and refuses, before any packet, one
to an address that is not loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult


class MapResolver(AbstractResolver):
    """Answers each name with the addresses a test gave it (in turn, when it gave several
    answers); records every lookup. Unknown names do not resolve."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]] | None = None) -> None:
        self.answers = {name: list(seq) for name, seq in (answers or {}).items()}
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        answers = self.answers.get(host)
        if not answers:
            raise OSError(f"{host} does not resolve (test resolver)")
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        pass


@dataclass
class Connects:
    """Every connection attempted on the test's loop: (address, port)."""

    attempts: list[tuple[str, int]] = field(default_factory=list)

    def outside(self) -> list[tuple[str, int]]:
        return [a for a in self.attempts if not ipaddress.ip_address(a[0]).is_loopback]


def record_connects(monkeypatch: pytest.MonkeyPatch) -> Connects:
    """Record each connect on the running loop; one to an address that is not loopback
    fails before a packet is sent (and stays recorded, for the test to fail on)."""
    loop = asyncio.get_running_loop()
    real = loop.sock_connect
    seen = Connects()

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        host, port = str(address[0]), int(address[1])
        seen.attempts.append((host, port))
        if not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
            raise ConnectionRefusedError(f"test recorder: no connection to {host}:{port}")
        await real(sock, address)

    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    return seen
