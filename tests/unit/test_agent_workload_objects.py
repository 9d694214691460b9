"""A managed agent's children, built from its MeshAgent, field by field: the StatefulSet
and headless Service, the per-agent ServiceAccount, and for network tailscale the
sidecar, its state Secret, serve ConfigMap, Role and RoleBinding."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError as PydanticError

from agent_mesh.config import OperatorConfig
from agent_mesh.domain.errors import ValidationError
from agent_mesh.tailscale.sidecar import SidecarSettings, image_error, serve_config
from agent_mesh.workloads.objects import build, restricted_defaults

SETTINGS = SidecarSettings(
    image="tailscale/tailscale:v1.86.5",
    tailnet_domain="tailnet.test",
    login_server="http://10.244.0.1:8080",
)
POD: dict[str, Any] = {
    "containers": [
        {
            "name": "agent",
            "image": "agent:1.0",
            "resources": {"limits": {"memory": "128Mi"}},
            "securityContext": {"runAsUser": 1000},
        }
    ],
    "securityContext": {"fsGroup": 2000},
    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "nodeSelector": {"kind": "agents"},
    "imagePullSecrets": [{"name": "pull"}],
}


def _meshagent(network: str | None = "tailscale", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "agentmesh.io/v1alpha1",
        "kind": "MeshAgent",
        "metadata": {"name": "summarizer", "namespace": "research", "uid": "uid-1"},
        "spec": {
            "agentType": "worker",
            "agentId": "sum-1",
            "port": 8081,
            "workload": {
                "metadata": {"labels": {"team": "nlp"}, "annotations": {"note": "x"}},
                "spec": copy.deepcopy(POD),
            },
            **spec,
        },
    }
    if network:
        body["spec"]["network"] = network
    return body


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


OWNER = {
    "apiVersion": "agentmesh.io/v1alpha1",
    "kind": "MeshAgent",
    "name": "summarizer",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": False,
}
SELECTOR = {"agentmesh.io/agent": "summarizer", "app.kubernetes.io/managed-by": "agent-mesh"}


def test_every_child_is_owned_by_the_meshagent_in_its_namespace() -> None:
    objects = build(_meshagent(), default_network="direct", tailscale=SETTINGS, auth_key="a2V5")
    kinds = [o["kind"] for o in objects.all()]
    assert kinds == [
        "ServiceAccount", "Secret", "Secret", "ConfigMap", "Role", "RoleBinding", "Service",
        "StatefulSet",
    ]  # fmt: skip
    for child in objects.all():
        assert child["metadata"]["namespace"] == "research"
        assert child["metadata"]["ownerReferences"] == [OWNER]
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "agent-mesh"


def test_statefulset_runs_one_replica_of_the_users_pod_with_its_settings_passed_through() -> None:
    sts = build(_meshagent(), default_network="direct", tailscale=SETTINGS).statefulset
    assert (sts["apiVersion"], sts["metadata"]["name"]) == ("apps/v1", "summarizer")
    spec = sts["spec"]
    assert (spec["replicas"], spec["serviceName"]) == (1, "summarizer")
    assert spec["selector"] == {"matchLabels": SELECTOR}
    template = spec["template"]
    assert template["metadata"]["labels"]["team"] == "nlp"
    assert template["metadata"]["labels"]["agentmesh.io/agent"] == "summarizer"
    assert template["metadata"]["annotations"] == {"note": "x"}
    pod = template["spec"]
    for key in ("tolerations", "affinity", "nodeSelector", "imagePullSecrets"):
        assert pod[key] == POD[key], key
    agent = pod["containers"][0]
    assert agent["name"] == "agent" and agent["image"] == "agent:1.0"
    assert agent["resources"] == {"limits": {"memory": "128Mi"}}
    assert agent["securityContext"] == {
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"] == {
        "fsGroup": 2000,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["serviceAccountName"] == "summarizer"


def test_user_labels_cannot_override_the_operators_own() -> None:
    body = _meshagent()
    body["spec"]["workload"]["metadata"]["labels"]["agentmesh.io/agent"] = "someone-else"
    sts = build(body, default_network="direct", tailscale=SETTINGS).statefulset
    assert sts["spec"]["template"]["metadata"]["labels"]["agentmesh.io/agent"] == "summarizer"


def test_restricted_defaults_keep_what_the_user_set() -> None:
    pod = restricted_defaults(
        {
            "securityContext": {"runAsNonRoot": False},
            "initContainers": [{"name": "i", "securityContext": {"capabilities": {"add": ["X"]}}}],
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": True}}],
        }
    )
    assert pod["securityContext"]["runAsNonRoot"] is False
    assert pod["initContainers"][0]["securityContext"]["capabilities"] == {"add": ["X"]}
    assert pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is True


def test_restricted_defaults_do_not_make_a_privileged_container_invalid() -> None:
    # privileged with allowPrivilegeEscalation false is refused by validation; left as is,
    # PodSecurity names the real problem (privileged)
    pod = restricted_defaults(
        {"containers": [{"name": "c", "securityContext": {"privileged": True}}]}
    )
    assert "allowPrivilegeEscalation" not in pod["containers"][0]["securityContext"]


def test_headless_service_exposes_the_agent_port() -> None:
    svc = build(_meshagent(), default_network="direct", tailscale=SETTINGS).service
    assert svc["metadata"]["name"] == "summarizer"
    assert svc["spec"] == {
        "clusterIP": "None",
        "selector": SELECTOR,
        "ports": [{"name": "mesh", "port": 8081, "targetPort": 8081, "protocol": "TCP"}],
    }


def test_direct_agent_gets_no_sidecar_and_no_tailscale_objects() -> None:
    objects = build(_meshagent(network=None), default_network="direct", tailscale=None)
    assert [c["name"] for c in objects.statefulset["spec"]["template"]["spec"]["containers"]] == [
        "agent"
    ]
    assert (objects.state_secret, objects.serve_config, objects.role, objects.role_binding) == (
        None, None, None, None
    )  # fmt: skip


def test_default_network_tailscale_adds_the_sidecar() -> None:
    objects = build(_meshagent(network=None), default_network="tailscale", tailscale=SETTINGS)
    containers = objects.statefulset["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["agent", "tailscale"]


def test_workload_service_account_is_used_and_no_per_agent_one_is_made() -> None:
    body = _meshagent()
    body["spec"]["workload"]["spec"]["serviceAccountName"] = "agents"
    objects = build(body, default_network="direct", tailscale=SETTINGS)
    assert objects.service_account is None
    assert objects.statefulset["spec"]["template"]["spec"]["serviceAccountName"] == "agents"
    assert objects.role_binding is not None
    assert objects.role_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "agents", "namespace": "research"}
    ]


def test_sidecar_is_userspace_tailscale_with_its_own_secret_hostname_and_serve_config() -> None:
    pod = build(_meshagent(), default_network="direct", tailscale=SETTINGS).statefulset["spec"][
        "template"
    ]["spec"]
    sidecar = pod["containers"][1]
    assert sidecar["image"] == "tailscale/tailscale:v1.86.5"
    env = _env(sidecar)
    assert env["TS_USERSPACE"] == "true"
    assert env["TS_KUBE_SECRET"] == "summarizer-tailscale"
    assert env["TS_HOSTNAME"] == "agent-mesh-research-sum-1"
    assert env["TS_AUTHKEY"] == {
        "secretKeyRef": {"name": "summarizer-tailscale-auth", "key": "authkey"}
    }
    assert env["TS_SERVE_CONFIG"] == "/etc/agent-mesh/tailscale/serve.json"
    assert env["TS_EXTRA_ARGS"] == "--login-server=http://10.244.0.1:8080"
    assert env["TS_TAILSCALED_EXTRA_ARGS"] == "--no-logs-no-support"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 9002}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {"tailscale-tmp", "tailscale-serve", "tailscale-kube-api"}
    assert volumes["tailscale-tmp"] == {"name": "tailscale-tmp", "emptyDir": {}}
    assert volumes["tailscale-serve"] == {
        "name": "tailscale-serve",
        "configMap": {"name": "summarizer-tailscale-serve"},
    }


def test_sidecar_mounts_the_service_account_itself_when_the_workload_turns_automount_off() -> None:
    """containerboot reads its token, CA and namespace where a pod's ServiceAccount is
    mounted; an agent pod with automountServiceAccountToken false (the demo's agents)
    left it with none, so it never read nor wrote its state Secret."""
    agent = _meshagent()
    agent["spec"]["workload"]["spec"]["automountServiceAccountToken"] = False
    pod = build(agent, default_network="direct", tailscale=SETTINGS).statefulset["spec"][
        "template"
    ]["spec"]
    assert pod["automountServiceAccountToken"] is False  # the agent's containers get none
    sidecar = pod["containers"][1]
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    mount = mounts["/var/run/secrets/kubernetes.io/serviceaccount"]
    assert mount == {
        "name": "tailscale-kube-api",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": True,
    }
    agent_mounts = pod["containers"][0].get("volumeMounts", [])
    assert all(m["name"] != "tailscale-kube-api" for m in agent_mounts)
    sources = {v["name"]: v for v in pod["volumes"]}["tailscale-kube-api"]["projected"]["sources"]
    assert sources == [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {
            "downwardAPI": {
                "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
            }
        },
    ]


def test_sidecar_keeps_everything_local_with_a_login_server_of_ones_own() -> None:
    env = _env(_sidecar(SETTINGS))
    assert env["TS_NO_LOGS_NO_SUPPORT"] == "true"
    assert (env["TS_DISABLE_PORTMAPPER"], env["TS_DISABLE_UPNP"]) == ("1", "true")
    assert env["TS_PANIC_IF_HIT_MAIN_CONTROL"] == "1"
    assert env["TS_DEBUG_USE_DERP_HTTP"] == "1"  # http:// login server


def test_sidecar_for_tailscales_own_control_server_neither_panics_nor_forces_plain_derp() -> None:
    env = _env(_sidecar(SidecarSettings(image="t/t:v1", tailnet_domain="tail1.ts.net")))
    assert "TS_EXTRA_ARGS" not in env
    assert "TS_PANIC_IF_HIT_MAIN_CONTROL" not in env
    assert "TS_DEBUG_USE_DERP_HTTP" not in env
    https = SidecarSettings(image="t/t:v1", tailnet_domain="t.test", login_server="https://hs")
    assert "TS_DEBUG_USE_DERP_HTTP" not in _env(_sidecar(https))


def _sidecar(settings: SidecarSettings) -> dict[str, Any]:
    sts = build(_meshagent(), default_network="direct", tailscale=settings).statefulset
    container: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][1]
    return container


def test_role_allows_only_its_state_secret_by_name_and_events() -> None:
    objects = build(_meshagent(), default_network="direct", tailscale=SETTINGS)
    assert objects.role is not None and objects.role_binding is not None
    assert objects.role["metadata"]["name"] == "summarizer-tailscale"
    assert objects.role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["summarizer-tailscale"],
            "verbs": ["get", "update", "patch"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "create", "patch"]},
    ]
    assert objects.role_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "summarizer-tailscale",
    }
    assert objects.role_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "summarizer", "namespace": "research"}
    ]
    assert objects.state_secret is not None
    assert objects.state_secret["metadata"]["name"] == "summarizer-tailscale"
    assert "data" not in objects.state_secret  # the sidecar's to fill


def test_serve_config_forwards_the_agent_port_by_name_and_by_each_tailnet_ip() -> None:
    body = _meshagent()
    body["status"] = {"tailscale": {"ips": ["100.64.0.7", "fd7a:115c:a1e0::7"]}}
    objects = build(body, default_network="direct", tailscale=SETTINGS)
    assert objects.serve_config is not None
    served = json.loads(objects.serve_config["data"]["serve.json"])
    handler = {"Handlers": {"/": {"Proxy": "http://127.0.0.1:8081"}}}
    assert served == {
        "TCP": {"8081": {"HTTP": True}},
        "Web": {
            "agent-mesh-research-sum-1.tailnet.test:8081": handler,
            "100.64.0.7.tailnet.test:8081": handler,
            "[fd7a:115c:a1e0::7.tailnet.test]:8081": handler,
        },
    }


def test_serve_config_before_the_device_has_ips_serves_by_name_only() -> None:
    served = serve_config("agent-mesh-ns-a.tailnet.test.", [], 8080)
    assert list(served["Web"]) == ["agent-mesh-ns-a.tailnet.test:8080"]


def test_tailscale_agent_without_operator_tailscale_settings_runs_without_the_sidecar() -> None:
    objects = build(_meshagent(), default_network="direct", tailscale=None)
    containers = objects.statefulset["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["agent"]
    assert (objects.state_secret, objects.serve_config, objects.role, objects.role_binding) == (
        None, None, None, None
    )  # fmt: skip


def test_meshagent_without_workload_has_no_children() -> None:
    body = _meshagent()
    del body["spec"]["workload"]
    with pytest.raises(ValidationError) as raised:
        build(body, default_network="direct", tailscale=SETTINGS)
    assert raised.value.field == "spec.workload"


@pytest.mark.parametrize(
    ("where", "item", "field"),
    [
        ("containers", {"name": "tailscale", "image": "x:1"}, "spec.workload.spec.containers"),
        ("volumes", {"name": "tailscale-tmp", "emptyDir": {}}, "spec.workload.spec.volumes"),
    ],
)
def test_workload_using_a_sidecar_name_is_refused_naming_the_field(
    where: str, item: dict[str, Any], field: str
) -> None:
    body = _meshagent()
    body["spec"]["workload"]["spec"].setdefault(where, []).append(item)
    with pytest.raises(ValidationError) as raised:
        build(body, default_network="direct", tailscale=SETTINGS)
    assert raised.value.field == field
    assert item["name"] in raised.value.message


@pytest.mark.parametrize("image", ["tailscale/tailscale", "tailscale/tailscale:latest"])
def test_sidecar_image_must_be_pinned(image: str) -> None:
    assert image_error(image) is not None
    with pytest.raises(ValueError, match="pin a version"):
        SidecarSettings(image=image, tailnet_domain="t.test")
    with pytest.raises(PydanticError, match="pin a version"):
        OperatorConfig(tailscale_image=image)


def test_pinned_images_are_accepted() -> None:
    for image in ("registry.local:5000/ts:v1.86.5", "ts@sha256:" + "a" * 64, "ts:1.86.5"):
        assert image_error(image) is None, image


def test_operator_config_gives_sidecar_settings_only_with_a_tailnet_domain() -> None:
    assert OperatorConfig().sidecar_settings() is None
    settings = OperatorConfig(
        tailscale_tailnet_domain="tailnet.test", tailscale_login_server="http://127.0.0.1:8080"
    ).sidecar_settings()
    assert settings is not None
    assert (settings.tailnet_domain, settings.login_server) == (
        "tailnet.test",
        "http://127.0.0.1:8080",
    )
    assert settings.image == "tailscale/tailscale:v1.86.5"


def test_auth_key_is_copied_into_the_agents_own_secret_never_referenced_across_namespaces() -> None:
    objects = build(_meshagent(), default_network="direct", tailscale=SETTINGS, auth_key="a2V5")
    assert objects.auth_secret is not None
    meta = objects.auth_secret["metadata"]
    assert (meta["name"], meta["namespace"]) == ("summarizer-tailscale-auth", "research")
    assert objects.auth_secret["data"] == {"authkey": "a2V5"}
    assert meta["ownerReferences"] == [OWNER]
    without = build(_meshagent(), default_network="direct", tailscale=SETTINGS)
    assert without.auth_secret is None
    direct = build(_meshagent("direct"), default_network="direct", tailscale=SETTINGS, auth_key="a")
    assert direct.auth_secret is None
