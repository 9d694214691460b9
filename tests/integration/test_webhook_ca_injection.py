"""webhook_registration=ca-bundle, as the Helm chart and config/default run the operator:
the installation owns the Validating- and MutatingWebhookConfiguration (rules, names,
where to call), the operator writes only their caBundle, against the real apiserver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.devcluster.ports import free_port
from tests.support.cluster import Cluster
from tests.support.namespaces import SESSION
from tests.support.operators import start_operator
from tests.support.tasks import OVERSIZED_PAYLOAD, task_refusal
from tests.support.waiting import wait_for
from tests.support.webhooks import own_webhook_configuration


def _webhooks(port: int, configuration: str) -> list[dict[str, Any]]:
    """The chart's webhooks (charts/agent-mesh/templates/webhook.yaml), at a URL on
    loopback instead of the chart's Service: no pod network here."""
    return [
        {
            "name": f"validate-{kind}.{configuration}",
            "clientConfig": {"url": f"https://127.0.0.1:{port}/validate-{kind}"},
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "resources": [f"{kind}s"],
                    "operations": ["CREATE", "UPDATE"],
                }
            ],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }
        for kind in ("meshtask", "meshagent")
    ]


@pytest.fixture
def configuration(cluster: Cluster) -> Iterator[str]:
    with own_webhook_configuration(cluster, "amc") as name:
        yield name


def test_the_operator_fills_the_ca_bundle_of_a_configuration_it_does_not_own(
    cluster: Cluster, crds: object, configuration: str, tmp_path: Path
) -> None:
    port = free_port()
    admission = client.AdmissionregistrationV1Api(cluster.api)
    admission.create_validating_webhook_configuration(
        {
            "metadata": {"name": configuration, "labels": {"owner": "the-installation"}},
            "webhooks": _webhooks(port, configuration),
        }
    )
    injection = {  # the chart's, at a URL on loopback
        "name": f"inject-tailscale.{configuration}",
        "clientConfig": {"url": f"https://127.0.0.1:{port}/inject-tailscale"},
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "operations": ["CREATE"],
            }
        ],
        "objectSelector": {"matchLabels": {"ca-injection-test": configuration}},
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
    }
    admission.create_mutating_webhook_configuration(
        {"metadata": {"name": configuration}, "webhooks": [injection]}
    )
    watched = f"amc-{SESSION}-{uuid.uuid4().hex[:4]}"
    operator = start_operator(
        cluster,
        tmp_path / "operator.log",
        "--webhook-port",
        str(port),
        watch=f"{watched}*",
        operator_namespace=f"amc-{SESSION}-system",
        extra_env={
            "AGENT_MESH_WEBHOOK_CONFIGURATION": configuration,
            "AGENT_MESH_WEBHOOK_REGISTRATION": "ca-bundle",
        },
    )
    try:
        found = admission.read_validating_webhook_configuration(configuration)
        assert all(w.client_config.ca_bundle for w in found.webhooks)
        mutating = admission.read_mutating_webhook_configuration(configuration)
        bundle = found.webhooks[0].client_config.ca_bundle
        assert mutating.webhooks[0].client_config.ca_bundle == bundle
        assert mutating.webhooks[0].client_config.url.endswith("/inject-tailscale")
        # what the installation wrote is left as it was: names, URLs, labels
        assert [w.name for w in found.webhooks] == [
            w["name"] for w in _webhooks(port, configuration)
        ]
        assert found.webhooks[0].client_config.url == f"https://127.0.0.1:{port}/validate-meshtask"
        assert found.metadata.labels == {"owner": "the-installation"}
        core = client.CoreV1Api(cluster.api)
        core.create_namespace({"metadata": {"name": watched}})
        try:
            refusal = wait_for(
                "the apiserver to call the webhook with the injected CA",
                lambda: task_refusal(
                    cluster, watched, "big", taskType="t", payload=OVERSIZED_PAYLOAD
                ),
            )
            assert refusal.startswith("422") and "spec.payload" in refusal, refusal
        finally:
            core.delete_namespace(watched)
    finally:
        operator.stop()
    # the operator leaves configurations it does not own in place when it stops
    assert admission.read_validating_webhook_configuration(configuration).webhooks
    assert admission.read_mutating_webhook_configuration(configuration).webhooks


def test_an_operator_refuses_to_start_when_the_configuration_to_fill_is_missing(
    cluster: Cluster, crds: object, configuration: str, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="does not exist"):
        start_operator(
            cluster,
            tmp_path / "operator.log",
            operator_namespace=f"amc-{SESSION}-system",
            extra_env={
                "AGENT_MESH_WEBHOOK_CONFIGURATION": configuration,
                "AGENT_MESH_WEBHOOK_REGISTRATION": "ca-bundle",
            },
        )
