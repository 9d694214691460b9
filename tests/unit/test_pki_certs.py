"""Certificates the apiserver and the webhook server present, and the admin identity."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent_mesh.pki import certs


def test_leaf_is_signed_by_the_ca_and_names_its_addresses() -> None:
    ca, ca_key = certs.make_ca()
    leaf = certs.issue(
        ca,
        ca_key,
        "kube-apiserver",
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        server=True,
    )
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    cert.verify_directly_issued_by(ca_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_admin_client_certificate_carries_the_group_rbac_maps_to_cluster_admin() -> None:
    ca, ca_key = certs.make_ca()
    admin = certs.issue(ca, ca_key, "agent-mesh-admin", organization="system:masters", client=True)
    subject = x509.load_pem_x509_certificate(admin.cert_pem).subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"


def test_ca_cannot_sign_intermediates() -> None:
    ca, _ = certs.make_ca()
    constraints = (
        x509.load_pem_x509_certificate(ca.cert_pem)
        .extensions.get_extension_for_class(x509.BasicConstraints)
        .value
    )
    assert constraints.ca and constraints.path_length == 0


def test_private_keys_are_written_owner_only(tmp_path: Path) -> None:
    key, public = certs.service_account_keys()
    path = tmp_path / "sa.key"
    certs.write_private(path, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert isinstance(load_pem_public_key(public), ec.EllipticCurvePublicKey)
