"""The local tailnet's proof that nothing leaves the machine: which traced destinations
count as beyond it (devcluster/tailnet.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

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


def test_accepted_counts_the_proxys_loopback_connections_only(tmp_path: Path) -> None:
    binary = tmp_path / "bin"
    net = tailnet.LocalTailnet(
        TailnetBinaries(binary, binary, binary, binary, "1.86.5", "0.27.1"), tmp_path, trace=True
    )
    node_dir = tmp_path / "caller-abc"
    node_dir.mkdir()
    node = cast(tailnet.TailnetNode, SimpleNamespace(directory=node_dir))
    assert net.accepted(node) == 0  # nothing traced yet
    (tmp_path / "caller-abc.strace").write_text(
        '7 accept4(9, {sa_family=AF_INET, sin_port=htons(40112), sin_addr=inet_addr("127.0.0.1")}'
        ", [112 => 16], SOCK_CLOEXEC|SOCK_NONBLOCK) = 12\n"
        "7 accept4(9, 0xc0001, [112], SOCK_CLOEXEC|SOCK_NONBLOCK) = -1 EAGAIN\n"
        "7 accept4(4, {sa_family=AF_UNIX}, [112 => 2], SOCK_CLOEXEC|SOCK_NONBLOCK) = 13\n"
        '8 connect(14, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}'
        ", 16) = 0\n"
        '7 accept4(9, {sa_family=AF_INET, sin_port=htons(40114), sin_addr=inet_addr("127.0.0.1")}'
        ", [112 => 16], SOCK_CLOEXEC|SOCK_NONBLOCK) = 15\n"
    )
    assert net.accepted(node) == 2
    assert tailnet.traced_addresses((tmp_path / "caller-abc.strace").read_text()) == {"127.0.0.1"}


def test_headscale_on_the_nodes_bridge_serves_control_derp_and_stun_there_only(
    tmp_path: Path,
) -> None:
    config = tailnet.headscale_config(
        workdir=tmp_path,
        port=20001,
        metrics_port=20002,
        grpc_port=20003,
        stun_port=20004,
        domain="tailnet.test",
        address="10.244.0.1",
    )
    assert config["server_url"] == "http://10.244.0.1:20001"
    assert config["listen_addr"] == "10.244.0.1:20001"
    derp = config["derp"]
    assert (derp["server"]["ipv4"], derp["server"]["stun_listen_addr"]) == (
        "10.244.0.1",
        "10.244.0.1:20004",
    )
    assert (derp["urls"], derp["paths"], derp["auto_update_enabled"]) == ([], [], False)
    assert config["metrics_listen_addr"] == "127.0.0.1:20002"
    assert config["grpc_listen_addr"] == "127.0.0.1:20003"
