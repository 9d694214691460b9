"""The egress policy (domain/egress.py) applied to real connections.

`EgressGuard.resolver(egress)` gives a TCPConnector a resolver that resolves a name,
checks every address it got, and hands the connector only checked addresses: the
connection goes to an address that was checked, so a DNS answer that changes between a
check and the connect (rebinding) gains nothing. IP-literal hosts never reach a resolver
in aiohttp, so the transport checks them (`check_literal`) before it makes the
connection pool of an endpoint. `check` does both without connecting, for refusing a URL
when it is submitted (a 400 beats a silent failure later).
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp import DefaultResolver
from aiohttp.abc import AbstractResolver, ResolveResult

from agent_mesh.domain.egress import EgressClass, EgressPolicy, Target, in_tailnet, parse_ip_host
from agent_mesh.domain.errors import EgressRefusedError


class EgressGuard:
    """One policy for every connection the operator makes to a URL it did not derive.
    `resolver`: the resolver names go through (default aiohttp's; tests inject one).
    `policy` may be replaced (once the cluster's addresses are known); connections made
    from then on use the new one."""

    def __init__(
        self,
        policy: EgressPolicy,
        resolver: AbstractResolver | None = None,
        tailnet_domain: str | None = None,
    ) -> None:
        self.policy = policy
        self._inner = resolver
        self.tailnet_domain = tailnet_domain
        """Set when the operator reaches the tailnet through its proxy: names under this
        MagicDNS suffix resolve only there (to tailnet peers), so `check` does not look
        them up; their form is still checked, and IP literals as any other."""

    def _resolver(self) -> AbstractResolver:
        if self._inner is None:
            self._inner = DefaultResolver()  # needs the running loop: made on first use
        return self._inner

    def resolver(self, egress: EgressClass) -> AbstractResolver:
        """A resolver for one connector whose URLs are of class `egress`."""
        return GuardedResolver(self, egress, self._resolver())

    def check_literal(self, egress: EgressClass, url: str, what: str = "URL") -> Target:
        """The URL's form and an IP-literal host; EgressRefusedError when refused."""
        return self.policy.check_literal(egress, url, what)

    async def check(self, egress: EgressClass, url: str, what: str = "URL") -> None:
        """Everything the connection would check, without connecting: the URL's form, and
        every address its host resolves to. EgressRefusedError naming `what` when refused."""
        target = self.policy.check_literal(egress, url, what)
        if target.address is not None or egress is EgressClass.DERIVED:
            return
        if in_tailnet(target.host, self.tailnet_domain):
            return  # the tailnet proxy resolves it, to a tailnet peer only
        try:
            found = await self._resolver().resolve(target.host, target.port, socket.AF_UNSPEC)
        except OSError as error:
            raise EgressRefusedError(
                f"{what} {url!r} is refused: its host {target.host!r} does not resolve ({error})"
            ) from None
        for item in found:
            address = _address(item)
            self.policy.check(
                egress,
                address,
                target.port,
                f"{what} {url!r} (its host {target.host!r} resolves to {address})",
            )

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


class GuardedResolver(AbstractResolver):
    """Resolves through `inner`, then refuses the host unless every address is allowed;
    returns exactly the addresses it checked (the connector dials only those)."""

    def __init__(self, guard: EgressGuard, egress: EgressClass, inner: AbstractResolver) -> None:
        self._guard = guard
        self._egress = egress
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        policy = self._guard.policy
        literal = parse_ip_host(host)  # numeric shorthands never reach the C resolver
        if literal is not None:
            policy.check(self._egress, literal, port, f"host {host!r}")
        found = await self._inner.resolve(host, port, family)
        for item in found:
            address = _address(item)
            policy.check(self._egress, address, port, f"host {host!r} (it resolves to {address})")
        return found

    async def close(self) -> None:
        """The inner resolver belongs to the guard, which closes it."""


def _address(item: ResolveResult) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(str(item["host"]).split("%", 1)[0])
