"""The operator's own tailscale sidecar in the chart (tailscale.*): containerboot in
userspace beside the operator, its outbound proxy on loopback handed to the operator, its
state Secret with a Role reaching that Secret alone, and the same environment and
securityContext as the agents' sidecars the operator builds (tailscale/sidecar.py): the
chart is compared with that code, so the two cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_mesh.config import OperatorConfig
from agent_mesh.tailscale import sidecar
from agent_mesh.tailscale.sidecar import SidecarSettings
from tests.helm.conftest import (
    CHART,
    CONTROL_URL,
    TAILNET_DOMAIN,
    TAILSCALE_VALUES,
    env_of,
    only,
    render,
    run_helm,
)

ENABLED = ["--set", f"tailscale.enabled=true,tailscale.tailnetDomain={TAILNET_DOMAIN}"]
# What only an agent's sidecar has: it serves the agent on the tailnet and is probed (the
# operator's is not: its pod must stay Ready, and the mesh API reachable, without a tailnet).
AGENT_ONLY = {"TS_SERVE_CONFIG", "TS_ENABLE_HEALTH_CHECK", "TS_LOCAL_ADDR_PORT"}


def _sidecar(objects: list[dict[str, Any]]) -> dict[str, Any]:
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    found = [c for c in pod["containers"] if c["name"] == sidecar.CONTAINER_NAME]
    assert len(found) == 1, [c["name"] for c in pod["containers"]]
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("control_url", ["", "https://headscale.example.com", CONTROL_URL])
def test_the_operators_sidecar_has_the_agents_sidecar_environment_and_a_loopback_proxy(
    helm: Path, control_url: str
) -> None:
    values = [*ENABLED] + (["--set", f"tailscale.controlURL={control_url}"] if control_url else [])
    container = _sidecar(render(helm, *values))
    settings = SidecarSettings(
        image=OperatorConfig().tailscale_image,
        tailnet_domain=TAILNET_DOMAIN,
        login_server=control_url or None,
    )
    agents = sidecar.container(settings, "team", "worker", "worker")
    expected = {k: v for k, v in _env(agents).items() if k not in AGENT_ONLY} | {
        "TS_KUBE_SECRET": "agent-mesh-tailscale",
        "TS_HOSTNAME": "mesh-operator-agent-mesh-system",
        "TS_AUTHKEY": {"secretKeyRef": {"name": "agent-mesh-tailscale-auth", "key": "authkey"}},
        "TS_OUTBOUND_HTTP_PROXY_LISTEN": "127.0.0.1:1055",
    }
    assert _env(container) == expected
    assert container["env"][0] == {"name": "TS_USERSPACE", "value": "true"}
    # the pinned image the operator gives agents, and no privilege (PodSecurity restricted)
    assert container["image"] == agents["image"] == "tailscale/tailscale:v1.86.5"
    assert container["securityContext"] == agents["securityContext"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in container["securityContext"]
    assert container["resources"] == agents["resources"]
    assert "readinessProbe" not in container and "livenessProbe" not in container
    assert container["volumeMounts"] == [{"name": "tailscale-tmp", "mountPath": "/tmp"}]


def test_the_operator_is_given_the_tailnet_and_the_sidecars_proxy(
    helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(helm, *TAILSCALE_VALUES)
    env = env_of(only(objects, "Deployment"))
    proxy = _env(_sidecar(objects))["TS_OUTBOUND_HTTP_PROXY_LISTEN"]
    assert env["AGENT_MESH_TAILNET_PROXY"] == f"http://{proxy}"
    assert env["AGENT_MESH_HEADSCALE_API_KEY"] == {
        "secretKeyRef": {"name": "headscale-api", "key": "apikey"}
    }
    # what the operator makes of the rendered settings (the Secret's value stands in)
    for name, value in env.items():
        if name.startswith(("AGENT_MESH_TAILSCALE_", "AGENT_MESH_TAILNET_")):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AGENT_MESH_HEADSCALE_API_KEY", "key")
    monkeypatch.setenv("AGENT_MESH_OPERATOR_NAMESPACE", "agent-mesh-system")
    config = OperatorConfig()
    assert config.tailnet_proxy == "http://127.0.0.1:1055"
    assert config.sidecar_settings() == SidecarSettings(
        image="tailscale/tailscale:v1.86.5",
        tailnet_domain=TAILNET_DOMAIN,
        login_server=CONTROL_URL,
        auth_secret="agent-mesh-tailscale-auth",
        auth_namespace="agent-mesh-system",
    )
    assert config.control_server() is not None


def test_the_sidecars_role_reaches_its_state_secret_by_name_and_events_only(
    helm: Path,
) -> None:
    objects = render(helm, *TAILSCALE_VALUES)
    state = only(objects, "Secret")
    assert state["metadata"]["name"] == "agent-mesh-tailscale"
    assert state["type"] == "Opaque" and "data" not in state
    assert _env(_sidecar(objects))["TS_KUBE_SECRET"] == state["metadata"]["name"]
    role = only(objects, "Role", "agent-mesh-tailscale")
    assert role["metadata"]["namespace"] == "agent-mesh-system"
    assert role["rules"] == sidecar.role_rules("agent-mesh")  # the agents' sidecars' rules
    assert role["rules"][0]["resourceNames"] == ["agent-mesh-tailscale"]
    binding = only(objects, "RoleBinding", "agent-mesh-tailscale")
    assert binding["roleRef"]["name"] == "agent-mesh-tailscale"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "agent-mesh", "namespace": "agent-mesh-system"}
    ]
    own = only(objects, "Role", "agent-mesh-own")["rules"]
    assert {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["agent-mesh-tailscale-auth"],
        "verbs": ["get"],
    } in own


def test_named_secrets_and_host_name_follow_the_values(helm: Path) -> None:
    objects = render(
        helm,
        *ENABLED,
        "--set",
        "tailscale.stateSecret=op-state,tailscale.agentAuthKeySecret=agents-key",
        "--set",
        "tailscale.authKeySecret.name=op-key,tailscale.authKeySecret.key=key,"
        "tailscale.hostname=mesh-op,tailscale.proxyPort=3128",
    )
    env = _env(_sidecar(objects))
    assert env["TS_KUBE_SECRET"] == only(objects, "Secret")["metadata"]["name"] == "op-state"
    assert env["TS_AUTHKEY"] == {"secretKeyRef": {"name": "op-key", "key": "key"}}
    assert env["TS_HOSTNAME"] == "mesh-op"
    assert env["TS_OUTBOUND_HTTP_PROXY_LISTEN"] == "127.0.0.1:3128"
    assert only(objects, "Role", "agent-mesh-tailscale")["rules"][0]["resourceNames"] == [
        "op-state"
    ]
    operator = env_of(only(objects, "Deployment"))
    assert operator["AGENT_MESH_TAILSCALE_AUTH_SECRET"] == "agents-key"
    assert operator["AGENT_MESH_TAILNET_PROXY"] == "http://127.0.0.1:3128"
    assert "AGENT_MESH_TAILSCALE_LOGIN_SERVER" not in operator
    assert "AGENT_MESH_HEADSCALE_API_KEY" not in operator
    own = only(objects, "Role", "agent-mesh-own")["rules"]
    assert any(r.get("resourceNames") == ["agents-key"] for r in own)


def test_a_digest_pins_the_image_of_the_sidecar_and_of_the_agents(
    helm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = "sha256:" + "ab" * 32
    objects = render(helm, *ENABLED, "--set", f"tailscale.image.tag={digest}")
    image = f"tailscale/tailscale@{digest}"
    assert _sidecar(objects)["image"] == image
    env = env_of(only(objects, "Deployment"))
    assert env["AGENT_MESH_TAILSCALE_IMAGE"] == image
    monkeypatch.setenv("AGENT_MESH_TAILSCALE_IMAGE", image)
    assert OperatorConfig().tailscale_image == image  # the operator accepts it too


def test_without_tailscale_the_chart_has_no_sidecar_no_tailnet_and_no_auth_key_access(
    helm: Path,
) -> None:
    objects = render(helm)
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    env = env_of(only(objects, "Deployment"))
    assert not [name for name in env if "TAILSCALE" in name or "TAILNET" in name]
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert not [o for o in objects if o["metadata"]["name"].endswith("-tailscale")]
    own = only(objects, "Role", "agent-mesh-own")["rules"]
    assert not any("agent-mesh-tailscale-auth" in r.get("resourceNames", []) for r in own)


def test_a_host_name_of_the_agents_kind_is_refused_naming_the_value(helm: Path) -> None:
    """agent-mesh-<namespace>-<agentId> are the agents' names: the operator's device must
    not take one (the webhook checks agents against agents only)."""
    proc = run_helm(
        helm, "template", "agent-mesh", str(CHART), *ENABLED,
        "--set", "tailscale.hostname=agent-mesh-team-worker",
    )  # fmt: skip
    assert proc.returncode != 0
    assert 'tailscale.hostname "agent-mesh-team-worker": must not start with agent-mesh-' in (
        proc.stderr
    ), proc.stderr
