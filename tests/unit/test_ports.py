"""free_port: ports for servers started a moment later, out of the way of the source
ports the kernel gives outgoing connections."""

from __future__ import annotations

import socket

import pytest

from agent_mesh.devcluster import ports
from agent_mesh.devcluster.ports import free_port


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low = ports._ephemeral_low()
    picked = [free_port() for _ in range(300)]
    assert all(ports.LOWEST <= port < low for port in picked), picked
    assert len(set(picked)) == len(picked)


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    busy, other = free_port(), free_port()
    ports._handed_out -= {busy, other}
    offsets = iter([busy - ports.LOWEST, other - ports.LOWEST])
    monkeypatch.setattr(ports.secrets, "randbelow", lambda _: next(offsets))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", busy))
        assert free_port() == other
