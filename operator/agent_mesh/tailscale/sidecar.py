"""The tailscale sidecar of an agent's pod: Tailscale's containerboot in userspace mode.

containerboot runs tailscaled and `tailscale up`, keeps the device's state in a Secret of
the agent's own (TS_KUBE_SECRET, which the operator creates, so the sidecar never needs
`create` on Secrets), and applies a serve configuration that forwards the agent's port
from the tailnet to the agent container on 127.0.0.1. Userspace networking needs no
NET_ADMIN and no privilege, so the pod passes PodSecurity `restricted`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from agent_mesh.tailscale.names import fqdn, hostname

CONTAINER_NAME: Final = "tailscale"
AUTH_KEY_FIELD: Final = "authkey"
"""Key of the auth key in the source Secret and in each agent's copy of it."""
HEALTH_PORT: Final = 9002
SERVE_CONFIG_DIR: Final = "/etc/agent-mesh/tailscale"
SERVE_CONFIG_FILE: Final = "serve.json"
SERVE_VOLUME: Final = "tailscale-serve"
TMP_VOLUME: Final = "tailscale-tmp"
KUBE_API_VOLUME: Final = "tailscale-kube-api"
SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where containerboot and tailscaled's kube state store read the pod's ServiceAccount
(token, ca.crt, namespace): a path they hard-code."""
TOKEN_SECONDS: Final = 3607  # what the kubelet's own automounted token asks for
SCRATCH_DIR: Final = "/tmp"  # noqa: S108  (the container's own emptyDir)
SIDECAR_UID: Final = 65532
DEFAULT_RESOURCES: Final[Mapping[str, Mapping[str, str]]] = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"memory": "256Mi"},
}

_TAG: Final = re.compile(r":([\w][\w.-]{0,127})$")


def image_error(image: str) -> str | None:
    """Why `image` is not a pinned reference (a tag other than latest, or a digest)."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    tag = _TAG.search(last)
    if tag is None:
        return f"{image!r} names no tag: pin a version (for example tailscale/tailscale:v1.86.5)"
    if tag.group(1) == "latest":
        return (
            f"{image!r} is tagged latest: pin a version (for example tailscale/tailscale:v1.86.5)"
        )
    return None


@dataclass(frozen=True)
class SidecarSettings:
    """The operator's Tailscale configuration, as the builders need it."""

    image: str
    tailnet_domain: str
    """MagicDNS suffix of the tailnet (headscale's base_domain, or <tailnet>.ts.net)."""
    login_server: str | None = None
    """Control server URL (a headscale); None: Tailscale's own."""
    auth_secret: str = "agent-mesh-tailscale-auth"  # noqa: S105  (a Secret's name)
    """The source Secret of the auth key, in `auth_namespace`: copied to each agent."""
    auth_namespace: str = "agent-mesh-system"
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: DEFAULT_RESOURCES)

    def __post_init__(self) -> None:
        problem = image_error(self.image)
        if problem is not None:
            raise ValueError(f"tailscale image: {problem}")


def state_secret_name(agent_name: str) -> str:
    """The Secret holding the device's state (TS_KUBE_SECRET): `<MeshAgent name>-tailscale`."""
    return f"{agent_name}-tailscale"


def auth_secret_name(agent_name: str) -> str:
    """The agent's own copy of the auth key (`TS_AUTHKEY`), in its namespace: a pod can
    only reference Secrets of its own namespace, and the source stays in the operator's."""
    return f"{agent_name}-tailscale-auth"


def serve_config_name(agent_name: str) -> str:
    """The ConfigMap holding the serve configuration the sidecar applies."""
    return f"{agent_name}-tailscale-serve"


def serve_config(device_fqdn: str, ips: Iterable[str], port: int) -> dict[str, Any]:
    """Serve `port` on the tailnet, forwarded to 127.0.0.1:`port`, for requests by MagicDNS
    name and by tailnet IP. Serve's plain-HTTP handler looks a request up by
    `<Host>.<tailnet domain>:<port>` (the domain appended when the Host lacks it), so a
    request by IP gets 404 unless the configuration has an entry keyed that way."""
    domain = device_fqdn.rstrip(".").split(".", 1)[1]
    handler = {"Handlers": {"/": {"Proxy": f"http://127.0.0.1:{port}"}}}
    hosts = [device_fqdn.rstrip("."), *(f"{ip}.{domain}" for ip in sorted(set(ips)))]
    web = {f"[{h}]:{port}" if ":" in h else f"{h}:{port}": handler for h in hosts}
    return {"TCP": {str(port): {"HTTP": True}}, "Web": web}


def role_rules(agent_name: str) -> list[dict[str, Any]]:
    """What the sidecar may do: read and write its own state Secret (by name: the operator
    creates it, so no `create`, which resourceNames cannot restrict), and write Events
    about its pod (containerboot checks get, create and patch before it sends any)."""
    return [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [state_secret_name(agent_name)],
            "verbs": ["get", "update", "patch"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "create", "patch"]},
    ]


def environment(
    settings: SidecarSettings, namespace: str, agent_id: str, agent_name: str
) -> list[dict[str, Any]]:
    """containerboot's environment. Every tailscaled runs without log upload, port mapping
    or UPnP; with a login server of one's own, a contact with Tailscale's control servers
    panics instead, and an http:// server gets DERP over plain HTTP too."""
    env: list[dict[str, Any]] = [
        {"name": "TS_USERSPACE", "value": "true"},
        {"name": "TS_KUBE_SECRET", "value": state_secret_name(agent_name)},
        {"name": "TS_HOSTNAME", "value": hostname(namespace, agent_id)},
        {
            "name": "TS_AUTHKEY",
            "valueFrom": {
                "secretKeyRef": {"name": auth_secret_name(agent_name), "key": AUTH_KEY_FIELD}
            },
        },
        {"name": "TS_AUTH_ONCE", "value": "true"},
        {"name": "TS_SERVE_CONFIG", "value": f"{SERVE_CONFIG_DIR}/{SERVE_CONFIG_FILE}"},
        {"name": "TS_SOCKET", "value": f"{SCRATCH_DIR}/tailscaled.sock"},
        {"name": "TS_ENABLE_HEALTH_CHECK", "value": "true"},
        {"name": "TS_LOCAL_ADDR_PORT", "value": f"0.0.0.0:{HEALTH_PORT}"},
        {"name": "TS_KUBERNETES_READ_API_SERVER_ADDRESS_FROM_ENV", "value": "true"},
        {"name": "TS_TAILSCALED_EXTRA_ARGS", "value": "--no-logs-no-support"},
        {"name": "TS_NO_LOGS_NO_SUPPORT", "value": "true"},
        # its log configuration: else /var/lib/tailscale, on a read-only root
        {"name": "TS_LOGS_DIR", "value": SCRATCH_DIR},
        {"name": "TS_DISABLE_PORTMAPPER", "value": "1"},
        {"name": "TS_DISABLE_UPNP", "value": "true"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
    ]
    if settings.login_server:
        env.append({"name": "TS_EXTRA_ARGS", "value": f"--login-server={settings.login_server}"})
        env.append({"name": "TS_PANIC_IF_HIT_MAIN_CONTROL", "value": "1"})
        if settings.login_server.startswith("http://"):
            env.append({"name": "TS_DEBUG_USE_DERP_HTTP", "value": "1"})
    return env


def container(
    settings: SidecarSettings, namespace: str, agent_id: str, agent_name: str
) -> dict[str, Any]:
    """The sidecar container: non-root, no privilege, no capability, read-only root."""
    return {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "env": environment(settings, namespace, agent_id, agent_name),
        "resources": {k: dict(v) for k, v in settings.resources.items()},
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": HEALTH_PORT},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SIDECAR_UID,
            "runAsGroup": SIDECAR_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": SCRATCH_DIR},
            {"name": SERVE_VOLUME, "mountPath": SERVE_CONFIG_DIR, "readOnly": True},
            {"name": KUBE_API_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True},
        ],
    }


def volumes(agent_name: str) -> list[dict[str, Any]]:
    """The sidecar's volumes: a scratch /tmp (its socket), the serve configuration, and
    the pod ServiceAccount's credentials for the sidecar alone. A workload with
    `automountServiceAccountToken: false` (an agent that needs no apiserver access, as
    the demo's do) would otherwise leave containerboot without a token to read and write
    its state Secret; with automount on, the kubelet leaves a container that already
    mounts that path alone, so the agent's own containers are unchanged either way."""
    return [
        {"name": TMP_VOLUME, "emptyDir": {}},
        {"name": SERVE_VOLUME, "configMap": {"name": serve_config_name(agent_name)}},
        {
            "name": KUBE_API_VOLUME,
            "projected": {
                "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ]
            },
        },
    ]


def device_fqdn(settings: SidecarSettings, namespace: str, agent_id: str) -> str:
    """The agent's MagicDNS name in the configured tailnet."""
    return fqdn(namespace, agent_id, settings.tailnet_domain)
