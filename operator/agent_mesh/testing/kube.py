"""What the harness reads and writes in the cluster, through whichever client its caller
has: the tests' Kubernetes client, the demo's kubectl, the benches' REST client (each
implements `Kube`). External agents: a MeshAgent with `spec.endpoint`, and the credential
the operator writes for it into a Secret; the CA bundle an operator publishes."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol

from agent_mesh.api.common import API_VERSION
from agent_mesh.devcluster.ports import free_port
from agent_mesh.pki import CA_BUNDLE_CONFIGMAP, CA_BUNDLE_KEY
from agent_mesh.testing.waiting import wait_until


class Kube(Protocol):
    """The calls the harness makes. A read returns None for an object that is not there
    (or cannot be read yet): the harness polls until it is."""

    def read_meshagent(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The MeshAgent as JSON."""
        ...

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's `data` (values base64-encoded, as the API serves them)."""
        ...

    def read_config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's `data`."""
        ...

    def write_meshagent(self, manifest: dict[str, Any]) -> None:
        """Create the MeshAgent `manifest` describes (a client may merge it into one that
        exists, as `kubectl apply` does); an error the API answers is raised."""
        ...


@dataclass(frozen=True)
class ExternalAgent:
    """A MeshAgent the operator reaches at `url`, and the credential it exchanges for
    tokens (what `launch_agent` needs)."""

    namespace: str
    name: str
    url: str
    credential: str


def manifest(
    kind: str, name: str, spec: dict[str, Any], namespace: str | None = None
) -> dict[str, Any]:
    """An object of agent-mesh's API (MeshAgent, MeshTask, ACLPolicy, ...) named `name`
    (in `namespace`, when given); `spec` in the API's own (camelCase) field names."""
    metadata = {"name": name, **({"namespace": namespace} if namespace is not None else {})}
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def meshagent_manifest(
    namespace: str, name: str, agent_type: str | None = None, **spec: Any
) -> dict[str, Any]:
    """A MeshAgent; `spec` in the API's own (camelCase) field names. Without `agent_type`
    it only carries `spec` (to merge into an agent that exists)."""
    body = {**({"agentType": agent_type} if agent_type is not None else {}), **spec}
    return manifest("MeshAgent", name, body, namespace)


def register_external_agent(
    kube: Kube,
    namespace: str,
    name: str,
    agent_type: str | None = None,
    *,
    endpoint: str | None = None,
    timeout: float = 30.0,
    **spec: Any,
) -> ExternalAgent:
    """MeshAgent `name` reached at `endpoint` (default: a free port on 127.0.0.1), once
    the operator has made its credential."""
    url = endpoint or f"http://127.0.0.1:{free_port()}"
    kube.write_meshagent(meshagent_manifest(namespace, name, agent_type, endpoint=url, **spec))
    return ExternalAgent(namespace, name, url, credential_of(kube, namespace, name, timeout))


def credential_of(kube: Kube, namespace: str, name: str, timeout: float = 30.0) -> str:
    """The credential the operator wrote for agent `name` (its Secret named in
    `status.credential`), waiting up to `timeout` seconds for it."""

    def secret_name() -> str | None:
        agent = kube.read_meshagent(namespace, name) or {}
        return ((agent.get("status") or {}).get("credential") or {}).get("secretName")

    secret = wait_until(f"status.credential of {name}", secret_name, timeout)
    data = wait_until(
        f"Secret {secret} of {name}", lambda: kube.read_secret_data(namespace, secret), timeout
    )
    return base64.b64decode(data["credential"]).decode()


def mesh_ca_bundle(kube: Kube, namespace: str) -> str | None:
    """The CA bundle an operator published in `namespace` (ConfigMap agent-mesh-ca.crt);
    None before it has."""
    data = kube.read_config_map_data(namespace, CA_BUNDLE_CONFIGMAP) or {}
    return data.get(CA_BUNDLE_KEY) or None
