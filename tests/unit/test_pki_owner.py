"""The operator's certificate owner: the names it certifies, when it renews, which CA it
uses (the stored one, created once), and what it accepts from a cert-manager Secret."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509

from agent_mesh.domain.clock import FakeClock
from agent_mesh.pki.authority import (
    CertificateAuthority,
    CertificateError,
    ServingNames,
    check_serving_pair,
    serving_names,
)
from agent_mesh.pki.certs import KeyPair, issue, make_ca
from agent_mesh.pki.owner import CertificateOwner, IssuedMaterial, missing_names

DAY = 86400.0
LIFETIME = dt.timedelta(days=90)
NAMES = serving_names(
    ["127.0.0.1"], service="agent-mesh", namespace="agent-mesh-system", extra=["10.0.0.7"]
)


class MemoryCaStore:
    def __init__(self, stored: KeyPair | None = None) -> None:
        self.stored = stored
        self.loads = 0

    async def load_or_create(self, generate: Callable[[], KeyPair]) -> KeyPair:
        self.loads += 1
        if self.stored is None:
            self.stored = generate()
        return self.stored


class MemoryIssuedSecret:
    name = "agent-mesh-system/mesh-tls"

    def __init__(self, material: IssuedMaterial) -> None:
        self.material = material

    async def read(self) -> IssuedMaterial:
        return self.material


def _own(clock: FakeClock, store: MemoryCaStore | None = None) -> CertificateOwner:
    return CertificateOwner(
        NAMES, clock=clock.now, lifetime=LIFETIME, ca_store=store or MemoryCaStore()
    )


def _cert(pair: KeyPair | None) -> x509.Certificate:
    assert pair is not None
    return x509.load_pem_x509_certificate(pair.cert_pem)


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def test_serving_names_cover_loopback_the_service_and_the_extra_names() -> None:
    assert (
        ServingNames(
            dns=(
                "localhost",
                "agent-mesh",
                "agent-mesh.agent-mesh-system",
                "agent-mesh.agent-mesh-system.svc",
                "agent-mesh.agent-mesh-system.svc.cluster.local",
            ),
            ips=("127.0.0.1", "::1", "10.0.0.7"),
        )
        == NAMES
    )


def test_listening_on_every_interface_certifies_loopback_but_not_the_wildcard_address() -> None:
    names = serving_names(["0.0.0.0"], service="mesh", namespace="ns", cluster_domain="corp")
    assert "0.0.0.0" not in names.ips
    assert {"127.0.0.1", "::1"} <= set(names.ips)
    assert "mesh.ns.svc.corp" in names.dns


async def test_serving_certificate_chains_to_the_ca_and_names_every_configured_name() -> None:
    store = MemoryCaStore()
    owner = _own(FakeClock(), store)
    assert await owner.check()
    cert = _cert(owner.serving.pair)
    assert store.stored is not None and owner.bundle == store.stored.cert_pem
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(owner.bundle))
    dns, ips = _sans(cert)
    assert dns == list(NAMES.dns) and ips == list(NAMES.ips)


async def test_serving_certificate_is_renewed_at_two_thirds_of_its_lifetime() -> None:
    clock = FakeClock()
    owner = _own(clock)
    changes: list[int] = []

    async def listener() -> None:
        changes.append(_cert(owner.serving.pair).serial_number)

    owner.listeners.append(listener)
    await owner.check()
    first = _cert(owner.serving.pair)
    bundle = owner.bundle

    clock.advance(59 * DAY)  # 2/3 of 90 days (plus the 5 min backdating) is not yet reached
    assert not await owner.check()
    assert _cert(owner.serving.pair).serial_number == first.serial_number

    clock.advance(1 * DAY)
    assert await owner.check()
    renewed = _cert(owner.serving.pair)
    assert renewed.serial_number != first.serial_number
    assert renewed.not_valid_after_utc == clock.now() + LIFETIME
    assert owner.bundle == bundle  # same CA: clients keep trusting it
    assert changes == [first.serial_number, renewed.serial_number]


async def test_the_stored_ca_is_used_and_loaded_once() -> None:
    ca, _ = make_ca("stored-ca")
    store = MemoryCaStore(ca)
    clock = FakeClock()
    owner = _own(clock, store)
    await owner.check()
    clock.advance(61 * DAY)
    await owner.check()
    assert owner.bundle == ca.cert_pem and store.loads == 1
    assert _cert(owner.serving.pair).issuer == x509.load_pem_x509_certificate(ca.cert_pem).subject


async def test_serving_certificate_never_outlives_the_ca() -> None:
    clock = FakeClock()
    ca, _ = make_ca("short-ca", now=clock.now(), lifetime=dt.timedelta(days=10))
    owner = _own(clock, MemoryCaStore(ca))
    await owner.check()
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    assert _cert(owner.serving.pair).not_valid_after_utc == ca_cert.not_valid_after_utc


def test_a_ca_key_that_does_not_belong_to_the_ca_is_refused() -> None:
    ca, _ = make_ca("one")
    other, _ = make_ca("two")
    with pytest.raises(CertificateError, match="does not belong"):
        CertificateAuthority(KeyPair(ca.cert_pem, other.key_pem))
    leaf_issuer, leaf_key = make_ca("issuer")
    leaf = issue(leaf_issuer, leaf_key, "leaf", server=True)
    with pytest.raises(CertificateError, match="not a CA"):
        CertificateAuthority(leaf)
    with pytest.raises(CertificateError, match=r"ca\.crt is not a PEM certificate"):
        CertificateAuthority(KeyPair(b"junk", ca.key_pem))


def _cert_manager_material(dns: tuple[str, ...]) -> IssuedMaterial:
    ca, ca_key = make_ca("cert-manager-ca")
    serving = issue(
        ca, ca_key, "agent-mesh", dns_names=dns, ip_addresses=("127.0.0.1",), server=True
    )
    return IssuedMaterial(serving, ca.cert_pem)


async def test_a_cert_manager_secret_is_served_as_is_and_reloaded_when_it_changes() -> None:
    secret = MemoryIssuedSecret(_cert_manager_material(NAMES.dns))
    owner = CertificateOwner(NAMES, clock=FakeClock().now, lifetime=LIFETIME, issued=secret)
    assert await owner.check()
    assert owner.serving.pair == secret.material.serving
    assert owner.bundle == secret.material.bundle
    assert not await owner.check()  # unchanged: nothing reloaded

    secret.material = _cert_manager_material(NAMES.dns)  # cert-manager renewed (new CA too)
    assert await owner.check()
    assert owner.serving.pair == secret.material.serving
    assert owner.bundle == secret.material.bundle


async def test_a_cert_manager_secret_whose_key_does_not_match_is_refused_naming_it() -> None:
    good = _cert_manager_material(NAMES.dns)
    stranger = _cert_manager_material(NAMES.dns)
    secret = MemoryIssuedSecret(
        IssuedMaterial(KeyPair(good.serving.cert_pem, stranger.serving.key_pem), good.bundle)
    )
    owner = CertificateOwner(NAMES, clock=FakeClock().now, lifetime=LIFETIME, issued=secret)
    with pytest.raises(CertificateError, match=r"agent-mesh-system/mesh-tls tls\.key does not"):
        await owner.check()
    assert owner.serving.pair is None


def test_names_a_cert_manager_certificate_lacks_are_listed() -> None:
    material = _cert_manager_material(("*.agent-mesh-system.svc", "agent-mesh"))
    assert missing_names(material.serving.cert_pem, NAMES) == [
        "localhost",
        "agent-mesh.agent-mesh-system",
        "agent-mesh.agent-mesh-system.svc.cluster.local",
        "::1",
        "10.0.0.7",
    ]
    validity = check_serving_pair(material.serving, "Secret x")
    assert validity.not_after > validity.not_before
