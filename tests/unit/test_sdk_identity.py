"""TokenSource configuration errors name what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_mesh.domain.errors import ValidationError
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


def test_from_env_without_credential_uses_the_projected_token_path() -> None:
    source = TokenSource.from_env({"AGENT_MESH_URL": "http://x", "AGENT_MESH_SA_TOKEN_PATH": "/t"})
    assert source._sa_path == Path("/t")
