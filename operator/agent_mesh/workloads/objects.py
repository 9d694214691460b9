"""The children of a managed agent, built from its MeshAgent: a one-replica StatefulSet,
a headless Service, the ServiceAccount its pod runs as (when the workload names none) and,
for `network: tailscale`, the sidecar's state Secret, its copy of the auth key, serve
ConfigMap, Role and RoleBinding. A tailscale agent without a workload, whose pods are your
own (the webhook injects the sidecar into them), gets the sidecar's objects alone
(`injected_tailnet_objects`). Every child is owned by the MeshAgent (garbage-collected with it).

The pod is the user's PodSpec as written (securityContext, resources, tolerations,
affinity, nodeSelector, imagePullSecrets and the rest pass through), with defaults that
make it pass PodSecurity `restricted` where the user left a field unset, plus the sidecar.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from agent_mesh.api import API_VERSION
from agent_mesh.api.meshagent import MeshAgentSpec, Network
from agent_mesh.domain.agents import AGENT_LABEL
from agent_mesh.domain.errors import ValidationError
from agent_mesh.domain.wire import validate
from agent_mesh.tailscale import sidecar
from agent_mesh.tailscale.sidecar import SidecarSettings

MANAGED_BY: Final = {"app.kubernetes.io/managed-by": "agent-mesh"}
STATEFULSET_NAME_MAX_LENGTH: Final = 52
"""A StatefulSet's pods carry `controller-revision-hash=<name>-<10-char hash>`, a label
value (at most 63): longer names make pods that can never be created."""
_DNS_1035_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def workload_name_error(name: str) -> str | None:
    """Why a MeshAgent with spec.workload cannot have this metadata.name, or None: its
    headless Service (the agent's endpoint) is named after it, and a Service name is a
    DNS-1035 label; its StatefulSet's name must leave room for the revision label."""
    if len(name) > STATEFULSET_NAME_MAX_LENGTH or not _DNS_1035_LABEL.match(name):
        return (
            f"metadata.name {name!r}: a MeshAgent with spec.workload names its StatefulSet "
            f"and Service, so its name must be at most {STATEFULSET_NAME_MAX_LENGTH} "
            "characters of lower-case letters, digits and '-', starting with a letter and "
            "ending with a letter or digit"
        )
    return None


@dataclass(frozen=True)
class AgentObjects:
    """A managed agent's children, each a complete object for the apiserver."""

    statefulset: dict[str, Any]
    service: dict[str, Any]
    service_account: dict[str, Any] | None
    """Only when the pod runs as the operator's per-agent ServiceAccount."""
    state_secret: dict[str, Any] | None
    """Created empty, then the sidecar's: never overwritten once it exists."""
    auth_secret: dict[str, Any] | None
    """The agent's copy of the auth key (only when the key was given to the builder)."""
    serve_config: dict[str, Any] | None
    role: dict[str, Any] | None
    role_binding: dict[str, Any] | None

    def all(self) -> list[dict[str, Any]]:
        """The children, in creation order (the ServiceAccount and RBAC before the pod)."""
        ordered = (
            self.service_account,
            self.state_secret,
            self.auth_secret,
            self.serve_config,
            self.role,
            self.role_binding,
            self.service,
            self.statefulset,
        )
        return [o for o in ordered if o is not None]


def pod_service_account(name: str, spec: MeshAgentSpec) -> str:
    """The ServiceAccount the agent's pod runs as: the workload's, else
    spec.serviceAccountName, else the per-agent one named after the MeshAgent."""
    assert spec.workload is not None
    named = spec.workload.spec.get("serviceAccountName")
    return str(named or spec.service_account_name or name)


def build(
    meshagent: Mapping[str, Any],
    *,
    default_network: str,
    tailscale: SidecarSettings | None,
    auth_key: str | None = None,
) -> AgentObjects:
    """The children of a MeshAgent with spec.workload (the sidecar and its objects for
    `network: tailscale` when the operator has Tailscale settings; `auth_key`, base64 as
    in the source Secret's data, for the agent's copy). ValidationError (naming the field)
    when there is no workload, or it already uses a name the sidecar needs."""
    meta = meshagent.get("metadata") or {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    spec = validate(MeshAgentSpec, meshagent.get("spec") or {}, "spec")
    if spec.workload is None:
        raise ValidationError("spec.workload is not set: no workload to run", field="spec.workload")
    agent_id = spec.agent_id or name
    network = spec.network.value if spec.network else default_network
    owned = _Owner(meshagent, name, namespace)
    account = pod_service_account(name, spec)
    pod = restricted_defaults(copy.deepcopy(spec.workload.spec))
    pod["serviceAccountName"] = account
    # without the operator's Tailscale settings the agent runs without the sidecar,
    # reached through its Service; its TailnetConnected condition says why
    settings = tailscale if network == Network.TAILSCALE.value else None
    if settings is not None:
        _add_sidecar(pod, settings, namespace, agent_id, name)
    labels = _labels(name)
    user_meta = spec.workload.metadata
    template_meta: dict[str, Any] = {
        "labels": {**(user_meta.labels if user_meta else {}), **labels}
    }
    if user_meta and user_meta.annotations:
        template_meta["annotations"] = dict(user_meta.annotations)
    statefulset = owned.object(
        "apps/v1",
        "StatefulSet",
        name,
        {
            "spec": {
                "replicas": 1,
                "serviceName": name,
                "selector": {"matchLabels": selector(name)},
                "template": {"metadata": template_meta, "spec": pod},
            }
        },
    )
    service = owned.object(
        "v1",
        "Service",
        name,
        {
            "spec": {
                "clusterIP": "None",
                "selector": selector(name),
                "ports": [
                    {"name": "mesh", "port": spec.port, "targetPort": spec.port, "protocol": "TCP"}
                ],
            }
        },
    )
    service_account = None if account != name else owned.object("v1", "ServiceAccount", name, {})
    if settings is None:
        return AgentObjects(statefulset, service, service_account, None, None, None, None, None)
    tailnet = _tailnet_objects(owned, meshagent, spec, settings, account, auth_key)
    return AgentObjects(
        statefulset,
        service,
        service_account,
        state_secret=tailnet.state_secret,
        auth_secret=tailnet.auth_secret,
        serve_config=tailnet.serve_config,
        role=tailnet.role,
        role_binding=tailnet.role_binding,
    )


@dataclass(frozen=True)
class TailnetObjects:
    """What the tailscale sidecar needs beside its container: the state Secret (created
    once), the agent's copy of the auth key, the serve ConfigMap, the Role and RoleBinding."""

    state_secret: dict[str, Any]
    auth_secret: dict[str, Any] | None
    serve_config: dict[str, Any]
    role: dict[str, Any]
    role_binding: dict[str, Any]

    def all(self) -> list[dict[str, Any]]:
        ordered = (
            self.state_secret,
            self.auth_secret,
            self.serve_config,
            self.role,
            self.role_binding,
        )
        return [o for o in ordered if o is not None]


def injected_tailnet_objects(
    meshagent: Mapping[str, Any],
    *,
    default_network: str,
    tailscale: SidecarSettings | None,
    auth_key: str | None = None,
) -> TailnetObjects | None:
    """The sidecar's objects for a tailscale MeshAgent without spec.workload, whose pods
    are the user's (the mutating webhook injects the sidecar into them): the RoleBinding's
    one subject is spec.serviceAccountName. None when the agent is not on the tailnet, the
    operator has no Tailscale settings, or the agent names no ServiceAccount (its labelled
    pods are then refused by the webhook: no account could write the state Secret)."""
    meta = meshagent.get("metadata") or {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    spec = validate(MeshAgentSpec, meshagent.get("spec") or {}, "spec")
    network = spec.network.value if spec.network else default_network
    if (
        spec.workload is not None
        or tailscale is None
        or network != Network.TAILSCALE.value
        or not spec.service_account_name
    ):
        return None
    owned = _Owner(meshagent, name, namespace)
    return _tailnet_objects(owned, meshagent, spec, tailscale, spec.service_account_name, auth_key)


def _tailnet_objects(
    owned: _Owner,
    meshagent: Mapping[str, Any],
    spec: MeshAgentSpec,
    settings: SidecarSettings,
    account: str,
    auth_key: str | None,
) -> TailnetObjects:
    name, namespace = owned.name, owned.namespace
    agent_id = spec.agent_id or name
    rbac_name = sidecar.state_secret_name(name)
    ips = ((meshagent.get("status") or {}).get("tailscale") or {}).get("ips") or []
    device = sidecar.device_fqdn(settings, namespace, agent_id)
    serve = sidecar.serve_config(device, ips, spec.port)
    return TailnetObjects(
        state_secret=owned.object(
            "v1", "Secret", sidecar.state_secret_name(name), {"type": "Opaque"}
        ),
        auth_secret=None
        if auth_key is None
        else owned.object(
            "v1",
            "Secret",
            sidecar.auth_secret_name(name),
            {"type": "Opaque", "data": {sidecar.AUTH_KEY_FIELD: auth_key}},
        ),
        serve_config=owned.object(
            "v1",
            "ConfigMap",
            sidecar.serve_config_name(name),
            {"data": {sidecar.SERVE_CONFIG_FILE: json.dumps(serve, indent=2, sort_keys=True)}},
        ),
        role=owned.object(
            "rbac.authorization.k8s.io/v1", "Role", rbac_name, {"rules": sidecar.role_rules(name)}
        ),
        role_binding=owned.object(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            rbac_name,
            {
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": rbac_name,
                },
            },
        ),
    )


def selector(name: str) -> dict[str, str]:
    """The pod selector of the agent's StatefulSet and Service (immutable once created)."""
    return {AGENT_LABEL: name, **MANAGED_BY}


def _labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "agent-mesh-agent",
        "app.kubernetes.io/instance": name,
        **selector(name),
    }


def restricted_defaults(pod: dict[str, Any]) -> dict[str, Any]:
    """Fill what PodSecurity `restricted` requires where the user left it unset: non-root,
    the runtime's seccomp profile, no privilege escalation, every capability dropped. A
    value the user set is kept, even one `restricted` refuses (the apiserver then says so)."""
    security = pod.setdefault("securityContext", {})
    security.setdefault("runAsNonRoot", True)
    security.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    for key in ("initContainers", "containers"):
        for container in pod.get(key) or []:
            own = container.setdefault("securityContext", {})
            if not own.get("privileged"):  # privileged with no escalation is invalid
                own.setdefault("allowPrivilegeEscalation", False)
            own.setdefault("capabilities", {"drop": ["ALL"]})
    return pod


def _add_sidecar(
    pod: dict[str, Any], settings: SidecarSettings, namespace: str, agent_id: str, name: str
) -> None:
    containers = pod.setdefault("containers", [])
    if any(c.get("name") == sidecar.CONTAINER_NAME for c in containers):
        raise ValidationError(
            f"spec.workload.spec.containers: a container is named {sidecar.CONTAINER_NAME}, "
            "the name of the sidecar the operator adds for network tailscale; rename it",
            field="spec.workload.spec.containers",
        )
    taken = {v.get("name") for v in pod.get("volumes") or []}
    for volume in sidecar.volumes(name):
        if volume["name"] in taken:
            raise ValidationError(
                f"spec.workload.spec.volumes: a volume is named {volume['name']}, a name the "
                "tailscale sidecar uses; rename it",
                field="spec.workload.spec.volumes",
            )
    containers.append(sidecar.container(settings, namespace, agent_id, name))
    pod.setdefault("volumes", []).extend(sidecar.volumes(name))


class _Owner:
    """Stamps children with the MeshAgent as their controlling owner."""

    def __init__(self, meshagent: Mapping[str, Any], name: str, namespace: str) -> None:
        self.name, self.namespace = name, namespace
        self.reference = {
            "apiVersion": API_VERSION,
            "kind": "MeshAgent",
            "name": name,
            "uid": str((meshagent.get("metadata") or {}).get("uid") or ""),
            "controller": True,
            # True would need update on meshagents/finalizers where the apiserver enforces
            # owner-reference permissions; deletion is collected either way
            "blockOwnerDeletion": False,
        }

    def object(
        self, api_version: str, kind: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": _labels(self.name),
                "ownerReferences": [dict(self.reference)],
            },
            **body,
        }
