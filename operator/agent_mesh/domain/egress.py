"""Where the operator may connect: the egress policy, pure (docs/security.md, "Outbound
requests").

Every outbound URL belongs to one class, by who chose it:

- `CALLER`: chosen by a mesh caller (`callbackUrl`, an endpoint reported in a heartbeat).
  Only public addresses, unless the allow list admits the address.
- `DECLARED`: written by someone with RBAC on MeshAgents (`spec.endpoint`, and
  `status.endpoint` read back). LAN addresses are normal; link-local (cloud metadata),
  the Kubernetes Service range and the API server are refused.
- `DERIVED`: made by the operator itself (the Service of a workload, the pod's own IP).
  Allowed by construction.

Loopback is refused in both checked classes unless the operator is configured to allow
it (local demo and tests). An address is judged by every form it takes: an IPv6 address
that embeds an IPv4 one (mapped, compatible, 6to4, NAT64, Teredo) is refused when either
is. Hosts are read as the resolver would read them, and the numeric shorthands the C
resolver also accepts (`2852039166`, `0xa9fea9fe`, `0251.0376.0251.0376`, `127.1`) are
refused outright: nobody writes an address that way except to slip past a check.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from yarl import URL

from agent_mesh.domain.errors import EgressRefusedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressClass(StrEnum):
    """Who chose an outbound URL; decides which addresses it may reach."""

    CALLER = "caller"
    DECLARED = "declared"
    DERIVED = "derived"


class AddressKind(StrEnum):
    """What an address is, for the refusal message and the class rules."""

    UNSPECIFIED = "unspecified"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link-local"
    METADATA = "cloud metadata service"
    PRIVATE = "private (RFC 1918)"
    SHARED = "shared (CGNAT, tailnet)"
    UNIQUE_LOCAL = "unique local (IPv6 ULA)"
    MULTICAST = "multicast"
    RESERVED = "reserved"
    SPECIAL = "special-purpose (not globally routed)"
    PUBLIC = "public"


METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2",  # ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)

_V4: Final[tuple[tuple[str, AddressKind], ...]] = (
    ("0.0.0.0/8", AddressKind.UNSPECIFIED),
    ("127.0.0.0/8", AddressKind.LOOPBACK),
    ("169.254.0.0/16", AddressKind.LINK_LOCAL),
    ("10.0.0.0/8", AddressKind.PRIVATE),
    ("172.16.0.0/12", AddressKind.PRIVATE),
    ("192.168.0.0/16", AddressKind.PRIVATE),
    ("100.64.0.0/10", AddressKind.SHARED),
    ("224.0.0.0/4", AddressKind.MULTICAST),
    ("240.0.0.0/4", AddressKind.RESERVED),
)
_V6: Final[tuple[tuple[str, AddressKind], ...]] = (
    ("::/128", AddressKind.UNSPECIFIED),
    ("::1/128", AddressKind.LOOPBACK),
    ("fe80::/10", AddressKind.LINK_LOCAL),
    ("fc00::/7", AddressKind.UNIQUE_LOCAL),
    ("fec0::/10", AddressKind.PRIVATE),  # site-local, deprecated but still routed by some
    ("ff00::/8", AddressKind.MULTICAST),
)
_TABLE: Final = tuple((ipaddress.ip_network(net), kind) for net, kind in _V4 + _V6)

_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_TRANSLATED: Final = ipaddress.ip_network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")

# Refused for DECLARED endpoints; CALLER URLs are refused for every kind but PUBLIC.
_DECLARED_REFUSED: Final = frozenset(
    {
        AddressKind.UNSPECIFIED,
        AddressKind.LINK_LOCAL,
        AddressKind.METADATA,
        AddressKind.MULTICAST,
        AddressKind.RESERVED,
    }
)

# A host every dot-separated part of which is a number (decimal, 0-octal or 0x-hex): the
# C resolver reads it as an IPv4 address in one of inet_aton's shorthand forms.
_NUMERIC_HOST: Final = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$", re.I)
_OCTET: Final = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD: Final = re.compile(rf"^{_OCTET}(\.{_OCTET}){{3}}$")


def kind_of(address: IPAddress) -> AddressKind:
    """The kind of one address, as written (no unwrapping)."""
    if address in METADATA_ADDRESSES:
        return AddressKind.METADATA
    for network, kind in _TABLE:
        if address.version == network.version and address in network:
            return kind
    return AddressKind.PUBLIC if address.is_global else AddressKind.SPECIAL


def forms(address: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address it embeds (what a connection may really reach)."""
    out: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.ipv4_mapped is not None:
            out.append(address.ipv4_mapped)
        elif address.sixtofour is not None:
            out.append(address.sixtofour)
        elif address.teredo is not None:
            out.extend(address.teredo)
        elif (
            address in _NAT64
            or address in _IPV4_TRANSLATED
            or (address in _IPV4_COMPATIBLE and int(address) > 1)
        ):
            out.append(low)
    return out


def parse_ip_host(host: str) -> IPAddress | None:
    """The address an IP-literal host names (IPv6 without brackets, zone ignored); None for
    a DNS name. A numeric shorthand that is not a dotted quad raises EgressRefusedError."""
    bare = host.strip("[]")
    if ":" in bare:
        try:
            return ipaddress.IPv6Address(bare.split("%", 1)[0])
        except ValueError:
            raise EgressRefusedError(f"host {host!r} is not a valid IPv6 address") from None
    if not _NUMERIC_HOST.match(bare):
        return None
    if _DOTTED_QUAD.match(bare):
        return ipaddress.IPv4Address(bare)
    meant = _inet_aton(bare.rstrip("."))
    raise EgressRefusedError(
        f"host {host!r} is a numeric shorthand"
        + (f" for {meant}" if meant is not None else "")
        + ": write an IPv4 address as four decimal octets (a.b.c.d)"
    )


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """What the C resolver makes of a numeric host (for the message only)."""
    try:
        parts = [int(p, 8) if re.fullmatch(r"0[0-7]+", p) else int(p, 0) for p in text.split(".")]
    except ValueError:
        return None
    if not 1 <= len(parts) <= 4:
        return None
    *head, last = parts
    if any(p > 255 for p in head) or last >= 256 ** (4 - len(head)):
        return None
    value = 0
    for p in head:
        value = value << 8 | p
    return ipaddress.IPv4Address(value << 8 * (4 - len(head)) | last)


@dataclass(frozen=True, slots=True)
class Target:
    """An outbound URL's host and port; `address` when the host is an IP literal."""

    host: str
    port: int
    address: IPAddress | None


def in_tailnet(host: str, tailnet_domain: str | None) -> bool:
    """Whether `host` is a MagicDNS name under `tailnet_domain` (None: no tailnet). Such
    names resolve only in a tailscaled, to tailnet peers: the operator reaches them through
    its tailnet proxy and never looks them up itself."""
    if not tailnet_domain:
        return False
    return host.lower().rstrip(".").endswith("." + tailnet_domain.strip(".").lower())


def target_of(url: str, what: str = "URL") -> Target:
    """Host and port as the HTTP client will read them (yarl, the parser aiohttp uses).
    EgressRefusedError for a URL that is not http(s) with a host, or a numeric shorthand."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as error:
        raise EgressRefusedError(f"{what} {url!r} is not a URL: {error}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host or parsed.port is None:
        raise EgressRefusedError(f"{what} {url!r} must be an http:// or https:// URL with a host")
    try:
        address = parse_ip_host(parsed.host)
    except EgressRefusedError as error:
        raise EgressRefusedError(f"{what} {url!r} is refused: {error.message}") from None
    return Target(parsed.host, parsed.port, address)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The operator's egress settings; `refusal` judges one address for one class."""

    allow: tuple[IPNetwork, ...] = ()
    """AGENT_MESH_EGRESS_ALLOW: admitted for CALLER and DECLARED URLs whatever their kind
    (metadata addresses, the deny list and the API server excepted)."""
    deny: tuple[IPNetwork, ...] = ()
    """AGENT_MESH_EGRESS_DENY: refused for CALLER and DECLARED URLs, allow list or not."""
    allow_loopback: bool = False
    service_ranges: tuple[IPNetwork, ...] = ()
    apiserver: frozenset[tuple[IPAddress, int]] = field(default_factory=frozenset)
    """The API server's (address, port) pairs. By port: in a local cluster it shares
    127.0.0.1 with the agents."""

    @classmethod
    def from_settings(
        cls,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        allow_loopback: bool = False,
        service_ranges: Iterable[str] = (),
        apiserver: Iterable[tuple[str, int]] = (),
    ) -> EgressPolicy:
        return cls(
            allow=tuple(ipaddress.ip_network(n, strict=False) for n in allow),
            deny=tuple(ipaddress.ip_network(n, strict=False) for n in deny),
            allow_loopback=allow_loopback,
            service_ranges=tuple(ipaddress.ip_network(n, strict=False) for n in service_ranges),
            apiserver=frozenset((ipaddress.ip_address(a), p) for a, p in apiserver),
        )

    def refusal(self, egress: EgressClass, address: IPAddress, port: int) -> str | None:
        """Why `address:port` may not be dialled for a URL of class `egress`; None when
        it may."""
        if egress is EgressClass.DERIVED:
            return None
        seen = forms(address)
        shown = str(address) if len(seen) == 1 else f"{address} (that is {seen[-1]})"
        for form in seen:
            if (form, port) in self.apiserver:
                return f"{shown} port {port} is the Kubernetes API server"
            if form in METADATA_ADDRESSES:
                return f"{shown} is a cloud metadata service address"
            if _within(form, self.deny):
                return f"{shown} is in the egress deny list"
        if _within(seen[-1], self.allow):
            return None
        for form in seen:
            if _within(form, self.service_ranges):
                return f"{shown} is in the Kubernetes Service range"
            kind = kind_of(form)
            if kind is AddressKind.LOOPBACK:
                if not self.allow_loopback:
                    return f"{shown} is a loopback address (loopback is not enabled)"
                continue
            if (egress is EgressClass.CALLER and kind is not AddressKind.PUBLIC) or (
                egress is EgressClass.DECLARED and kind in _DECLARED_REFUSED
            ):
                article = "an" if kind.value[0] in "aeiou" else "a"
                return f"{shown} is {article} {kind.value} address"
        return None

    def check(self, egress: EgressClass, address: IPAddress, port: int, what: str) -> None:
        """Raise EgressRefusedError naming `what` (the URL, the host) unless allowed."""
        why = self.refusal(egress, address, port)
        if why is not None:
            raise EgressRefusedError(f"{what} is refused: {why}; {_RULES[egress]}")

    def check_literal(self, egress: EgressClass, url: str, what: str = "URL") -> Target:
        """What can be judged without DNS: the URL's form, and its host when that is an
        IP literal. The Target, for resolving a DNS name next."""
        target = target_of(url, what)
        if target.address is not None:
            self.check(egress, target.address, target.port, f"{what} {url!r}")
        return target


_RULES: Final = {
    EgressClass.CALLER: (
        "URLs supplied by callers may reach public addresses only, unless the operator's "
        "egress allow list (AGENT_MESH_EGRESS_ALLOW) admits the address"
    ),
    EgressClass.DECLARED: (
        "agent endpoints may not be link-local (cloud metadata), multicast, the Kubernetes "
        "Service range or the API server, nor loopback unless AGENT_MESH_EGRESS_ALLOW_LOOPBACK "
        "is set"
    ),
    EgressClass.DERIVED: "",
}


def _within(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def same_endpoint(a: str, b: str) -> bool:
    """Whether two endpoint URLs name the same origin and path (case of scheme and host,
    default port and a trailing slash aside)."""
    try:
        x, y = URL(a), URL(b)
    except (ValueError, TypeError):
        return False
    return (x.scheme, x.host, x.port, x.path.rstrip("/")) == (
        y.scheme,
        y.host,
        y.port,
        y.path.rstrip("/"),
    )


def reported_endpoint_refusal(
    reported: str, spec_endpoint: str | None, pod_ip: str | None
) -> str | None:
    """Why an endpoint an agent reported in a heartbeat may not be used (None: it may).
    Used only when it is the MeshAgent's spec.endpoint, or an http(s) URL whose host is
    the IP of the pod the agent's token was issued to (TokenReview's pod binding)."""
    if spec_endpoint is not None and same_endpoint(reported, spec_endpoint):
        return None
    try:
        target = target_of(reported, "endpoint")
    except EgressRefusedError as error:
        return error.message
    if pod_ip is None:
        return (
            f"endpoint {reported!r} is not the agent's spec.endpoint, and its token is not "
            "bound to a pod whose IP the operator knows"
        )
    try:
        own = ipaddress.ip_address(pod_ip)
    except ValueError:
        own = None
    if target.address is None or own is None or forms(target.address)[-1] != own:
        return (
            f"endpoint {reported!r} is neither the agent's spec.endpoint nor its pod's "
            f"own IP ({pod_ip})"
        )
    return None
