"""The one certificate owner of the product: keeps the operator's serving certificate
(mesh API and webhooks share it) valid, renewed before it expires, and tells listeners
when the CA bundle clients must trust changes.

Two sources, chosen by configuration:
- the operator's own CA, kept in a Secret (loaded, or created on first start by exactly
  one operator): the owner issues the serving certificate and renews it at 2/3 of its
  lifetime;
- a Secret that cert-manager (or anyone) keeps up to date with tls.crt, tls.key and
  ca.crt: the owner only reads it, and serves what it finds there.
Storage is injected (Protocols), so this module does no Kubernetes I/O of its own.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography import x509

from agent_mesh.pki.authority import (
    CertificateAuthority,
    ServingNames,
    Validity,
    check_serving_pair,
)
from agent_mesh.pki.certs import KeyPair
from agent_mesh.pki.serving import ServingContext

logger = logging.getLogger("agent_mesh.tls")
RENEW_FRACTION: Final = 2 / 3
"""Renew once this fraction of a certificate's lifetime has passed (as cert-manager does)."""


class CaStore(Protocol):
    """Where the operator's own CA lives (a Secret in its namespace)."""

    async def load_or_create(self, generate: Callable[[], KeyPair]) -> KeyPair:
        """The stored CA; when there is none, `generate()`'s, stored unless another
        operator stored one first (then that one, so every replica shares one CA)."""
        ...


@dataclass(frozen=True, slots=True)
class IssuedMaterial:
    """A serving certificate issued elsewhere, and the bundle that verifies it."""

    serving: KeyPair
    bundle: bytes


class IssuedSecret(Protocol):
    """A Secret with tls.crt, tls.key and ca.crt that someone else keeps renewed."""

    name: str

    async def read(self) -> IssuedMaterial: ...


Listener = Callable[[], Awaitable[None]]


class CertificateOwner:
    """Issues (or reads), loads and renews the operator's serving certificate."""

    def __init__(
        self,
        names: ServingNames,
        *,
        clock: Callable[[], dt.datetime],
        lifetime: dt.timedelta,
        ca_store: CaStore | None = None,
        issued: IssuedSecret | None = None,
        renew_fraction: float = RENEW_FRACTION,
    ) -> None:
        if (ca_store is None) == (issued is None):
            raise ValueError("a CertificateOwner needs exactly one of ca_store and issued")
        self.names = names
        self.serving = ServingContext()
        self.bundle: bytes | None = None
        self.listeners: list[Listener] = []
        """Called after the served certificate or the bundle changed."""
        self._clock = clock
        self._lifetime = lifetime
        self._fraction = renew_fraction
        self._ca_store = ca_store
        self._issued = issued
        self._ca: CertificateAuthority | None = None

    async def check(self) -> bool:
        """Make sure a valid certificate is served; True (and listeners called) when the
        served certificate or the bundle changed."""
        if self._issued is not None:
            changed, bundle = await self._read_issued(self._issued)
        else:
            changed, bundle = await self._issue_own()
        if bundle != self.bundle:
            self.bundle = bundle
            changed = True
        if changed:
            for listener in self.listeners:
                await listener()
        return changed

    async def _issue_own(self) -> tuple[bool, bytes]:
        now = self._clock()
        if self._ca is None:
            assert self._ca_store is not None
            pair = await self._ca_store.load_or_create(
                lambda: CertificateAuthority.generate(now).pair
            )
            self._ca = CertificateAuthority(pair)
            if self._ca.validity.due(now, self._fraction):
                logger.warning(
                    "the mesh CA expires at %s: rotate it (docs/security.md, TLS)",
                    self._ca.validity.not_after.isoformat(),
                )
        current = self.serving.validity
        if current is not None and not current.due(now, self._fraction):
            return False, self._ca.bundle
        self.serving.load(self._ca.issue_serving(self.names, now, self._lifetime))
        assert self.serving.validity is not None
        logger.info(
            "serving certificate %s until %s",
            "renewed" if current is not None else "issued",
            self.serving.validity.not_after.isoformat(),
        )
        return True, self._ca.bundle

    async def _read_issued(self, issued: IssuedSecret) -> tuple[bool, bytes]:
        material = await issued.read()
        if material.serving == self.serving.pair:
            return False, material.bundle
        validity = check_serving_pair(material.serving, f"Secret {issued.name}")
        if validity.not_after <= self._clock():
            logger.warning("the certificate in Secret %s has expired", issued.name)
        missing = missing_names(material.serving.cert_pem, self.names)
        if missing:
            logger.warning(
                "the certificate in Secret %s does not name %s: clients using those names "
                "will refuse it (add them to the Certificate's dnsNames/ipAddresses)",
                issued.name,
                ", ".join(missing),
            )
        self.serving.load(material.serving)
        logger.info("serving the certificate of Secret %s", issued.name)
        return True, material.bundle

    @property
    def validity(self) -> Validity | None:
        return self.serving.validity


def missing_names(cert_pem: bytes, names: ServingNames) -> list[str]:
    """The names in `names` the certificate's subjectAltName does not cover."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [*names.dns, *names.ips]
    dns = [d.lower() for d in san.get_values_for_type(x509.DNSName)]
    ips = set(san.get_values_for_type(x509.IPAddress))

    def covered(name: str) -> bool:
        if name in dns:
            return True
        rest = name.partition(".")[2]
        return bool(rest) and f"*.{rest}" in dns

    missing = [n for n in names.dns if not covered(n)]
    missing += [ip for ip in names.ips if ipaddress.ip_address(ip) not in ips]
    return missing
