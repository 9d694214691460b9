"""The operator's runtime CA and the serving certificates it signs.

Pure: PEM in, PEM out, time passed in. Where the CA is kept (a Secret) and when it issues
(CertificateOwner) are decided elsewhere.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from agent_mesh.pki import certs
from agent_mesh.pki.certs import KeyPair

CA_COMMON_NAME: Final = "agent-mesh-ca"
CA_LIFETIME: Final = dt.timedelta(days=10 * 365)
"""Long on purpose: every agent trusts it. Rotating it is a documented manual step."""
SERVING_COMMON_NAME: Final = "agent-mesh"


class CertificateError(ValueError):
    """PEM material that is not what it must be; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ServingNames:
    """The names a serving certificate is valid for (its subjectAltName)."""

    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.dns or self.ips)


def serving_names(
    listen_hosts: Iterable[str],
    *,
    service: str,
    namespace: str,
    cluster_domain: str = "cluster.local",
    extra: Iterable[str] = (),
) -> ServingNames:
    """Every name a client may use: the listen addresses (loopback and the wildcard address
    mean `localhost`, 127.0.0.1 and ::1 too), the Service's DNS names in all their forms,
    and the extra names or addresses the configuration lists."""
    dns: list[str] = []
    ips: list[str] = []

    def add(value: str) -> None:
        value = value.strip().lower()
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            if value and value not in dns:
                dns.append(value)
            return
        if address.is_unspecified or address.is_loopback:
            if "localhost" not in dns:
                dns.append("localhost")
            for ip in ("127.0.0.1", "::1"):
                if ip not in ips:
                    ips.append(ip)
        if not address.is_unspecified and str(address) not in ips:
            ips.append(str(address))

    for host in listen_hosts:
        if host.strip().lower() == "localhost":
            add("127.0.0.1")
        else:
            add(host)
    for name in (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{cluster_domain}",
    ):
        add(name)
    for value in extra:
        add(value)
    return ServingNames(tuple(dns), tuple(ips))


@dataclass(frozen=True, slots=True)
class Validity:
    """When a certificate starts and stops being valid, and when to replace it."""

    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def of(cls, cert_pem: bytes) -> Validity:
        cert = _certificate(cert_pem, "certificate")
        return cls(cert.not_valid_before_utc, cert.not_valid_after_utc)

    def renew_at(self, fraction: float) -> dt.datetime:
        """The instant `fraction` of the lifetime has passed (2/3: as cert-manager does)."""
        return self.not_before + (self.not_after - self.not_before) * fraction

    def due(self, now: dt.datetime, fraction: float) -> bool:
        return now >= self.renew_at(fraction)


class CertificateAuthority:
    """A CA certificate and its key: signs serving certificates for the operator."""

    def __init__(self, pair: KeyPair) -> None:
        cert = _certificate(pair.cert_pem, "ca.crt")
        constraints = _extension(cert, x509.BasicConstraints)
        if constraints is None or not constraints.ca:
            raise CertificateError("ca.crt is not a CA certificate (basicConstraints CA:FALSE)")
        key = _private_key(pair.key_pem, "ca.key")
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError("ca.key must be an EC private key (P-256)")
        if key.public_key() != cert.public_key():
            raise CertificateError("ca.key does not belong to ca.crt")
        self.pair = pair
        self._key = key
        self.validity = Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)

    @classmethod
    def generate(
        cls, now: dt.datetime, lifetime: dt.timedelta = CA_LIFETIME
    ) -> CertificateAuthority:
        pair, _ = certs.make_ca(CA_COMMON_NAME, now=now, lifetime=lifetime)
        return cls(pair)

    @property
    def bundle(self) -> bytes:
        """What clients trust: the CA certificate, PEM."""
        return self.pair.cert_pem

    def issue_serving(
        self, names: ServingNames, now: dt.datetime, lifetime: dt.timedelta
    ) -> KeyPair:
        """A server certificate for `names`, valid from `now` for `lifetime` (or until the
        CA expires, whichever comes first)."""
        if not names:
            raise CertificateError("a serving certificate needs at least one name")
        return certs.issue(
            self.pair,
            self._key,
            SERVING_COMMON_NAME,
            dns_names=names.dns,
            ip_addresses=names.ips,
            server=True,
            now=now,
            lifetime=lifetime,
        )


def check_serving_pair(pair: KeyPair, source: str) -> Validity:
    """A certificate and key that belong together (e.g. from cert-manager's tls.crt and
    tls.key); raises CertificateError naming `source` otherwise."""
    cert = _certificate(pair.cert_pem, f"{source} tls.crt")
    key = _private_key(pair.key_pem, f"{source} tls.key")
    if key.public_key() != cert.public_key():
        raise CertificateError(f"{source} tls.key does not belong to tls.crt")
    return Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)


def _certificate(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise CertificateError(f"{what} is not a PEM certificate: {error}") from error


def _private_key(pem: bytes, what: str) -> PrivateKeyTypes:
    try:
        return load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise CertificateError(f"{what} is not an unencrypted PEM private key: {error}") from error


def _extension(
    cert: x509.Certificate, kind: type[x509.BasicConstraints]
) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
