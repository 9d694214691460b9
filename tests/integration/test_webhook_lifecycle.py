"""The webhooks the operator registers (failurePolicy Fail), against the real apiserver:
the validating one refuses a MeshTask UPDATE that breaks a rule; an operator stopped
cleanly leaves nothing that blocks MeshTask writes or labelled pods (the injection
webhook, registered only with Tailscale settings, goes too); after a hard kill writes are
refused until an operator starts again and takes its registration over."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import OperatorProcess, manifest
from tests.support.cluster import Cluster
from tests.support.namespaces import family
from tests.support.operators import own_operator
from tests.support.tasks import task_refusal
from tests.support.waiting import wait_for
from tests.support.webhooks import own_webhook_configuration


def _task(name: str, payload: Any) -> dict[str, Any]:
    return manifest(
        "MeshTask",
        name,
        {"taskType": "summarize", "requiredCapabilities": ["x"], "payload": payload},
    )


def _refusal(cluster: Cluster, namespace: str) -> str | None:
    """Why a MeshTask create is refused, or None when it goes through."""
    return task_refusal(
        cluster, namespace, "t", taskType="summarize", requiredCapabilities=["x"], payload={}
    )


def _configuration(cluster: Cluster, name: str) -> Any:
    admission = client.AdmissionregistrationV1Api(cluster.api)
    try:
        return admission.read_validating_webhook_configuration(name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _operator_with_webhook(
    cluster: Cluster,
    log: Path,
    configuration: str,
    *,
    killed: bool = False,
    tailnet: bool = False,
) -> contextlib.AbstractContextManager[OperatorProcess]:
    """An operator of its own for the block, registering its webhooks under
    `configuration` (not the session operator's), the injection one only with `tailnet`
    settings; stopped after it (`killed`: SIGKILLed)."""
    env = {"AGENT_MESH_WEBHOOK_CONFIGURATION": configuration}
    if tailnet:
        env["AGENT_MESH_TAILSCALE_TAILNET_DOMAIN"] = "tailnet.test"
    return own_operator(cluster, log, family("amw"), webhooks=True, extra_env=env, killed=killed)


def _injection(cluster: Cluster, name: str) -> Any:
    admission = client.AdmissionregistrationV1Api(cluster.api)
    try:
        return admission.read_mutating_webhook_configuration(name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _registered_at(cluster: Cluster, configuration: str) -> str | None:
    found = _configuration(cluster, configuration)
    if found is None or not found.webhooks:
        return None
    return str(found.webhooks[0].client_config.url)


@pytest.fixture
def configuration(cluster: Cluster) -> Any:
    with own_webhook_configuration(cluster, "amw") as name:
        yield name


def test_a_meshtask_update_that_grows_the_payload_is_refused(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    name = "grows"
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshtasks", _task(name, {"text": "small"})
    )
    with pytest.raises(client.ApiException) as refused:
        cluster.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "meshtasks",
            name,
            {"spec": {"payload": {"text": "x" * (300 * 1024)}}},
        )
    message = json.loads(refused.value.body or "{}")["message"]
    assert refused.value.status == 422
    # The CRD refuses every spec change first (CEL, before admission webhooks run); the
    # webhook's own UPDATE check stays for a cluster whose CRD predates that rule.
    assert "spec is immutable" in message
    stored: Any = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshtasks", name
    )
    assert stored["spec"]["payload"] == {"text": "small"}


def test_an_operator_stopped_cleanly_leaves_no_webhook_that_blocks_meshtask_writes(
    cluster: Cluster,
    crds: object,
    namespace: str,
    configuration: str,
    tmp_path: Path,
) -> None:
    log = tmp_path / "operator.log"
    with _operator_with_webhook(cluster, log, configuration, tailnet=True) as own:
        wait_for("the webhook registration", lambda: _registered_at(cluster, configuration))
        wait_for("the injection webhook", lambda: _injection(cluster, configuration))
        assert _refusal(cluster, namespace) is None
    assert own.process.returncode != -signal.SIGKILL, "the operator did not stop on SIGTERM"

    assert _configuration(cluster, configuration) is None
    assert _injection(cluster, configuration) is None  # the injection webhook's too
    assert _refusal(cluster, namespace) is None


def test_after_a_hard_kill_meshtask_writes_are_refused_until_an_operator_starts_again(
    cluster: Cluster,
    crds: object,
    namespace: str,
    configuration: str,
    tmp_path: Path,
) -> None:
    with _operator_with_webhook(cluster, tmp_path / "killed.log", configuration, killed=True):
        stale = wait_for("the webhook registration", lambda: _registered_at(cluster, configuration))
        assert _refusal(cluster, namespace) is None
        # without Tailscale settings nothing could be injected: no labelled pod waits on it
        assert _injection(cluster, configuration) is None

    # SIGKILL runs no cleanup: the registration stays and failurePolicy Fail holds
    refusal = _refusal(cluster, namespace)
    assert refusal is not None and "failed calling webhook" in refusal, refusal
    assert configuration in refusal

    # the recovery: start an operator (same configuration name); it takes the
    # registration over at its own address
    with _operator_with_webhook(cluster, tmp_path / "again.log", configuration):
        wait_for(
            "the registration to move to the new operator",
            lambda: _registered_at(cluster, configuration) not in (None, stale),
        )
        wait_for("a MeshTask write to go through", lambda: _refusal(cluster, namespace) is None)
    assert _refusal(cluster, namespace) is None
