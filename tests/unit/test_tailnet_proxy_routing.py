"""Which calls go through the tailnet proxy: MagicDNS names under the configured tailnet
domain only; direct endpoints never. The egress guard does not look tailnet names up (only
the proxy can), and still checks their form and every other host."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import ValidationError

from agent_mesh.config import OperatorConfig
from agent_mesh.domain.egress import EgressClass, EgressPolicy, in_tailnet
from agent_mesh.domain.errors import EgressRefusedError
from agent_mesh.transport.client import Transport, TransportConfig, on_tailnet
from agent_mesh.transport.egress import EgressGuard

PROXY = "http://127.0.0.1:1055"
TAILNET = TransportConfig(tailnet_proxy_url=PROXY, tailnet_domain="tailnet.test")


@pytest.mark.parametrize(
    ("endpoint", "through"),
    [
        ("http://agent-mesh-prod-summ.tailnet.test:8081", PROXY),
        ("http://AGENT-MESH-PROD-SUMM.Tailnet.Test.:8081", PROXY),
        ("http://summ.prod.svc:8081", None),  # direct mode: the Service
        ("http://10.244.0.7:8081", None),
        ("http://100.64.0.7:8081", None),  # a tailnet IP literal is not a MagicDNS name
        ("http://tailnet.test:8081", None),  # the suffix itself names no device
        ("http://eviltailnet.test:8081", None),
    ],
)
def test_only_magicdns_names_go_through_the_tailnet_proxy(endpoint: str, through: str) -> None:
    assert Transport(TAILNET).proxy_for(endpoint) == through


def test_without_a_tailnet_proxy_nothing_goes_through_one() -> None:
    plain = Transport(TransportConfig(tailnet_domain="tailnet.test"))
    assert plain.proxy_for("http://agent-mesh-prod-summ.tailnet.test:8081") is None
    assert not on_tailnet("http://a.tailnet.test:1", None)
    assert not in_tailnet("a.tailnet.test", "")


class _Unresolvable(AbstractResolver):
    """Fails every lookup, recording it: the system resolver knows no MagicDNS name."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: Any = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        raise OSError(f"{host} does not resolve")

    async def close(self) -> None:
        pass


async def test_guard_does_not_look_up_tailnet_names_but_checks_everything_else() -> None:
    resolver = _Unresolvable()
    guard = EgressGuard(EgressPolicy(), resolver, tailnet_domain="tailnet.test")
    await guard.check(
        EgressClass.DECLARED, "http://agent-mesh-x-a.tailnet.test:8080", "spec.endpoint"
    )
    assert resolver.asked == []
    with pytest.raises(EgressRefusedError, match="does not resolve"):
        await guard.check(EgressClass.DECLARED, "http://agent.example.test:8080", "spec.endpoint")
    with pytest.raises(EgressRefusedError):  # a literal is judged as always: metadata
        await guard.check(EgressClass.DECLARED, "http://169.254.169.254:80", "spec.endpoint")
    with pytest.raises(EgressRefusedError):  # and the URL's form
        await guard.check(EgressClass.DECLARED, "ftp://agent-mesh-x-a.tailnet.test:8080", "e")


async def test_guard_without_a_tailnet_resolves_tailnet_names_like_any_other() -> None:
    resolver = _Unresolvable()
    guard = EgressGuard(EgressPolicy(), resolver)
    with pytest.raises(EgressRefusedError, match="does not resolve"):
        await guard.check(EgressClass.DECLARED, "http://agent-mesh-x-a.tailnet.test:8080", "e")


def test_tailnet_proxy_needs_the_tailnet_domain_and_a_loopback_http_url() -> None:
    with pytest.raises(ValidationError, match="AGENT_MESH_TAILSCALE_TAILNET_DOMAIN"):
        OperatorConfig(tailnet_proxy=PROXY)
    with pytest.raises(ValidationError, match="tailnet_proxy"):
        OperatorConfig(tailnet_proxy="http://10.0.0.5:1055", tailscale_tailnet_domain="t.test")
    ok = OperatorConfig(tailnet_proxy=PROXY, tailscale_tailnet_domain="tailnet.test")
    assert ok.tailnet_proxy == PROXY
