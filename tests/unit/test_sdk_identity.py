"""TokenSource configuration: errors name what is missing, and how the mesh API is
trusted (https with the CA file; plain http only to loopback unless allowed)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from agent_mesh.domain.errors import ValidationError
from agent_mesh.pki.certs import make_ca
from agent_mesh.sdk.identity import TokenSource


def test_needs_a_credential_or_a_service_account_token() -> None:
    with pytest.raises(ValidationError) as caught:
        TokenSource("http://127.0.0.1:1")
    assert caught.value.field == "credential"


def test_credential_needs_namespace_and_agent_id() -> None:
    with pytest.raises(ValidationError) as caught:
        TokenSource("http://127.0.0.1:1", credential="c")
    assert caught.value.field == "agentId"


def test_from_env_needs_the_mesh_url() -> None:
    with pytest.raises(ValidationError) as caught:
        TokenSource.from_env({})
    assert caught.value.field == "AGENT_MESH_URL"


def test_from_env_reads_a_credential_file(tmp_path: Path) -> None:
    (tmp_path / "cred").write_text("s3cret\n")
    source = TokenSource.from_env(
        {
            "AGENT_MESH_URL": "http://127.0.0.1:1/",
            "AGENT_MESH_CREDENTIAL_FILE": str(tmp_path / "cred"),
            "AGENT_MESH_NAMESPACE": "ns",
            "AGENT_MESH_AGENT_ID": "a",
        }
    )
    assert source.mesh_url == "http://127.0.0.1:1"
    assert (source.namespace, source.agent_id) == ("ns", "a")


def test_a_rotated_credential_file_is_read_again_and_a_vanished_one_keeps_the_last(
    tmp_path: Path,
) -> None:
    """The operator rotates a credential into the agent's Secret (spec.credentialRotation);
    the kubelet updates the mounted file, and the next exchange uses the new value."""
    path = tmp_path / "cred"
    path.write_text("old\n")
    source = TokenSource.from_env(
        {
            "AGENT_MESH_URL": "http://127.0.0.1:1/",
            "AGENT_MESH_CREDENTIAL_FILE": str(path),
            "AGENT_MESH_NAMESPACE": "ns",
            "AGENT_MESH_AGENT_ID": "a",
        }
    )
    path.write_text("new\n")
    assert source._current_credential("old") == "new"
    path.unlink()
    assert source._current_credential("new") == "new"


def test_from_env_without_credential_uses_the_projected_token_path() -> None:
    source = TokenSource.from_env({"AGENT_MESH_URL": "https://x", "AGENT_MESH_SA_TOKEN_PATH": "/t"})
    assert source._sa_path == Path("/t")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any resolution or connection attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the SDK tried the network: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8090",
        "http://agent-mesh.agent-mesh-system:8090",
        "http://localhost.example.com:8090",
        "http://127.0.0.1.nip.io:8090",
        "http://[fd00::1]:8090",
    ],
)
@pytest.mark.usefixtures("no_network")
def test_plain_http_to_a_non_loopback_mesh_url_is_refused_before_connecting(url: str) -> None:
    env = {"AGENT_MESH_URL": url, "AGENT_MESH_SA_TOKEN_PATH": "/t"}
    with pytest.raises(ValidationError) as caught:
        TokenSource.from_env(env)
    assert caught.value.code == "InsecureMeshUrl"
    assert caught.value.field == "AGENT_MESH_ALLOW_INSECURE_MESH"
    assert "AGENT_MESH_ALLOW_INSECURE_MESH=true" in caught.value.message
    assert "AGENT_MESH_CA_FILE" in caught.value.message


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8090", "http://127.8.9.10:1", "http://localhost:8090", "http://[::1]:8090"],
)
def test_plain_http_to_loopback_stays_allowed(url: str) -> None:
    source = TokenSource(url, service_account_token_path=Path("/t"))
    assert source.ssl is True


def test_plain_http_to_another_host_is_accepted_when_explicitly_allowed() -> None:
    env = {
        "AGENT_MESH_URL": "http://agent-mesh.agent-mesh-system:8090",
        "AGENT_MESH_ALLOW_INSECURE_MESH": "true",
        "AGENT_MESH_SA_TOKEN_PATH": "/t",
    }
    assert TokenSource.from_env(env).mesh_url == "http://agent-mesh.agent-mesh-system:8090"


def test_a_mesh_url_that_is_not_http_or_https_names_the_setting() -> None:
    for url in ("agent-mesh:8090", "ftp://agent-mesh:8090", "https://"):
        with pytest.raises(ValidationError) as caught:
            TokenSource(url, service_account_token_path=Path("/t"))
        assert (caught.value.field, caught.value.code) == ("AGENT_MESH_URL", "InvalidMeshUrl")


def test_https_mesh_url_is_verified_with_the_ca_file_only(tmp_path: Path) -> None:
    ca, _ = make_ca("some-mesh-ca")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    source = TokenSource.from_env(
        {
            "AGENT_MESH_URL": "https://agent-mesh.agent-mesh-system:8090",
            "AGENT_MESH_CA_FILE": str(tmp_path / "ca.crt"),
            "AGENT_MESH_SA_TOKEN_PATH": "/t",
        }
    )
    assert isinstance(source.ssl, ssl.SSLContext)
    assert source.ssl.verify_mode == ssl.CERT_REQUIRED and source.ssl.check_hostname
    trusted = source.ssl.get_ca_certs()
    assert [dict(c["subject"][0])["commonName"] for c in trusted] == ["some-mesh-ca"]


def test_https_without_a_ca_file_uses_the_system_trust_store() -> None:
    assert TokenSource("https://mesh.example.com", service_account_token_path=Path("/t")).ssl


def test_an_unreadable_ca_file_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "garbage.crt").write_text("not a certificate")
    for path in (tmp_path / "missing.crt", tmp_path / "garbage.crt"):
        with pytest.raises(ValidationError) as caught:
            TokenSource("https://mesh", service_account_token_path=Path("/t"), ca_file=path)
        assert (caught.value.field, caught.value.code) == ("AGENT_MESH_CA_FILE", "InvalidCaFile")
        assert str(path) in caught.value.message
