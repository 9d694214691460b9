"""A real tailnet on loopback: headscale and two userspace tailscaled. One node serves an
HTTP server with `tailscale serve`; the other reaches it by MagicDNS name through its
outbound HTTP proxy. By tailnet IP, serve answers 404 until the configuration has an
IP-keyed entry, which the sidecar's serve configuration (agent_mesh.tailscale) has.
Every process runs under strace: none connects or sends to an address that is not the
machine's own."""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_mesh.devcluster.tailnet import LocalTailnet, TailnetNode, headscale_config
from agent_mesh.tailscale.sidecar import serve_config
from tests.support.stand_ins import answering
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.tailscale, pytest.mark.timeout(900)]  # a cold build takes minutes


@pytest.fixture
def agent_port() -> Iterator[int]:
    """A stand-in agent: the server a tailnet node serves."""
    with answering(lambda host: f"hello from the agent, Host {host}") as port:
        yield port


def _get(via: TailnetNode, url: str) -> tuple[int, str]:
    assert via.http_proxy is not None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": via.http_proxy}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_headscale_configuration_names_nothing_outside_this_machine(tmp_path: Path) -> None:
    config = headscale_config(
        workdir=tmp_path, port=1, metrics_port=2, grpc_port=3, stun_port=4, domain="tailnet.test"
    )
    derp = config["derp"]
    assert (derp["urls"], derp["paths"], derp["auto_update_enabled"]) == ([], [], False)
    assert config["disable_check_updates"] is True
    assert config["logtail"] == {"enabled": False}
    assert config["dns"]["nameservers"] == {"global": [], "split": {}}
    text = str(config)
    assert "http" not in text.replace("http://127.0.0.1:1", "")  # the server's own URL only


def test_node_reaches_a_served_http_server_by_magicdns_name_through_its_proxy(
    tailnet: LocalTailnet, agent_port: int
) -> None:
    server = tailnet.join("agent-mesh-tn-server")
    client = tailnet.join("agent-mesh-tn-client", http_proxy=True)
    assert server.fqdn == f"agent-mesh-tn-server.{tailnet.domain}"
    server.cli("serve", "--bg", f"--http={agent_port}", f"http://127.0.0.1:{agent_port}")

    by_name = f"http://{server.fqdn}:{agent_port}/"
    _, body = wait_for(
        "the served agent by MagicDNS name",
        lambda: (answer := _get(client, by_name))[0] == 200 and answer,
        timeout=30,
    )
    assert body == f"hello from the agent, Host {server.fqdn}:{agent_port}"
    short = _get(client, f"http://agent-mesh-tn-server:{agent_port}/")
    assert short[0] == 200

    ipv4 = next(ip for ip in server.ips if "." in ip)
    by_ip = f"http://{ipv4}:{agent_port}/"
    assert _get(client, by_ip)[0] == 404  # serve looks requests up by <Host>.<domain>

    server.serve_config(serve_config(server.fqdn, server.ips, agent_port))
    assert wait_for(
        "the served agent by tailnet IP", lambda: _get(client, by_ip)[0] == 200, timeout=15
    )
    assert _get(client, by_name)[0] == 200


def test_no_tailnet_process_connects_or_sends_beyond_this_machine(
    tailnet: LocalTailnet,
) -> None:
    # after the tests above: the nodes joined, served and were reached (module order)
    seen = tailnet.destinations()
    assert "headscale" in seen and len(seen) >= 3, seen  # headscale and two tailscaled
    # the trace saw the traffic: every process talked to loopback (control, DERP, STUN)
    assert all(any(_loopback(a) for a in addresses) for addresses in seen.values()), seen
    assert tailnet.beyond_this_machine() == {process: [] for process in seen}


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback
