"""The caBundle the operator writes into a webhook configuration it does not own, and the
settings that choose who owns it."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from agent_mesh.config import OperatorConfig
from agent_mesh.kube.webhook_ca import with_ca_bundle

pytestmark = pytest.mark.unit

BUNDLE = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _webhook(name: str, **client_config: str) -> dict[str, object]:
    return {
        "name": name,
        "clientConfig": {
            "service": {"name": "agent-mesh-webhook", "namespace": "x"},
            **client_config,
        },
        "rules": [{"apiGroups": ["agentmesh.io"]}],
    }


def test_every_webhook_gets_the_bundle_and_keeps_the_rest_of_its_configuration() -> None:
    webhooks = with_ca_bundle([_webhook("a"), _webhook("b", caBundle="b2xk")], BUNDLE)
    assert webhooks is not None
    encoded = base64.b64encode(BUNDLE).decode()
    assert [w["clientConfig"]["caBundle"] for w in webhooks] == [encoded, encoded]
    assert webhooks[0]["clientConfig"]["service"] == {
        "name": "agent-mesh-webhook",
        "namespace": "x",
    }
    assert webhooks[0]["rules"] == [{"apiGroups": ["agentmesh.io"]}]


def test_nothing_is_written_when_every_webhook_holds_the_bundle_already() -> None:
    encoded = base64.b64encode(BUNDLE).decode()
    assert with_ca_bundle([_webhook("a", caBundle=encoded)], BUNDLE) is None


def test_the_operator_registers_its_own_webhook_unless_told_otherwise() -> None:
    assert OperatorConfig().webhook_registration == "self"


def test_in_cluster_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # what charts/agent-mesh/templates/deployment.yaml sets
    monkeypatch.setenv("AGENT_MESH_WEBHOOK_REGISTRATION", "ca-bundle")
    monkeypatch.setenv("AGENT_MESH_OPERATOR_NAMESPACE", "mesh-system")
    monkeypatch.setenv("AGENT_MESH_MESH_HOST", "0.0.0.0")
    monkeypatch.setenv("AGENT_MESH_WEBHOOK_HOST", "0.0.0.0")
    monkeypatch.setenv("AGENT_MESH_LIVENESS_HOST", "0.0.0.0")
    monkeypatch.setenv("AGENT_MESH_NAMESPACES", '["team-a","team-b"]')
    monkeypatch.setenv("AGENT_MESH_TLS_EXTRA_SANS", "agent-mesh-webhook.mesh-system.svc")
    config = OperatorConfig()
    assert config.webhook_registration == "ca-bundle"
    assert config.operator_namespace == "mesh-system"
    assert (config.mesh_host, config.webhook_host, config.liveness_host) == ("0.0.0.0",) * 3
    assert config.namespaces == ["team-a", "team-b"]
    assert config.tls_extra_sans == ["agent-mesh-webhook.mesh-system.svc"]


def test_an_unknown_registration_mode_is_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_MESH_WEBHOOK_REGISTRATION", "helm")
    with pytest.raises(ValidationError, match="webhook_registration") as refused:
        OperatorConfig()
    assert "ca-bundle" in str(refused.value)
