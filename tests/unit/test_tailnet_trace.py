"""The local tailnet's proof that nothing leaves the machine: which traced destinations
count as beyond it (devcluster/tailnet.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_mesh.devcluster import tailnet
from agent_mesh.devcluster.binaries import TailnetBinaries


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tailnet.LocalTailnet:
    binary = tmp_path / "bin"
    net = tailnet.LocalTailnet(
        TailnetBinaries(binary, binary, binary, binary, "1.86.5", "0.27.1"), tmp_path, trace=True
    )
    monkeypatch.setattr(tailnet, "machine_addresses", lambda: {"127.0.0.1", "192.0.2.7"})
    monkeypatch.setattr(
        net,
        "destinations",
        lambda: {
            "headscale": {"127.0.0.1"},
            # the node's bridge, a pod and a Service: on this machine even when the node
            # went down before the check (its bridge address no longer on an interface)
            "client": {"10.244.0.1", "10.244.0.17", "10.96.0.10", "192.0.2.7", "::1"},
            "leaky": {"198.51.100.4", "10.245.0.1", "2001:db8::1", "127.0.0.1"},
        },
    )
    return net


def test_only_addresses_off_the_machine_and_its_node_are_reported(
    traced: tailnet.LocalTailnet,
) -> None:
    assert traced.beyond_this_machine() == {
        "headscale": [],
        "client": [],
        "leaky": ["10.245.0.1", "198.51.100.4", "2001:db8::1"],
    }
