"""Pods really run on the local cluster's node: the project's image, logs, exec, the
apiserver and Services by name, the `restricted` profile, garbage collection."""

from __future__ import annotations

import json
import uuid

import pytest
from kubernetes import client

from tests.node.conftest import (
    NodeCluster,
    exec_python,
    logs_of,
    pod_phase,
    python_pod,
    wait_pod,
)
from tests.support.waiting import wait_for

NODE = "agent-mesh-node"


def _deployment(name: str, image: str, replicas: int, command: list[str]) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": command,
                        }
                    ],
                },
            },
        },
    }


def _running_pods(cluster: NodeCluster, namespace: str, app: str) -> list[str]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p.metadata.name for p in pods if p.status.phase == "Running"]


def test_node_is_ready_and_a_deployment_of_the_projects_image_runs(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    nodes = json.loads(node_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == [NODE]
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert nodes[0]["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")

    # The image's own entrypoint is the operator; the agent-mesh CLI is installed in it.
    command = ["sh", "-c", "agent-mesh --help | head -1; echo serving; exec sleep 3600"]
    client.AppsV1Api(node_cluster.api).create_namespaced_deployment(
        node_namespace, _deployment("mesh", node_cluster.image, 2, command)
    )
    pods = wait_for(
        "both replicas of the project's image to run",
        lambda: (lambda p: p if len(p) == 2 else None)(
            _running_pods(node_cluster, node_namespace, "mesh")
        ),
        timeout=90,
        interval=0.25,
    )
    wait_for("the pod's log", lambda: "serving" in logs_of(node_cluster, node_namespace, pods[0]))
    assert "usage: agent-mesh" in logs_of(node_cluster, node_namespace, pods[0])
    executed = exec_python(
        node_cluster,
        node_namespace,
        pods[1],
        "import agent_mesh, os; print(agent_mesh.__name__, os.getuid())",
    )
    assert executed.returncode == 0, executed.stderr
    assert executed.stdout.split() == ["agent_mesh", "65532"]  # the Dockerfile's USER


def test_pod_reaches_the_apiserver_by_name_and_rbac_applies_to_its_projected_token(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    core = node_cluster.core
    core.create_namespaced_service_account(node_namespace, {"metadata": {"name": "reader"}})
    rbac = client.RbacAuthorizationV1Api(node_cluster.api)
    rbac.create_namespaced_role(
        node_namespace,
        {
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        node_namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "configmap-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader"}],
        },
    )
    core.create_namespaced_config_map(
        node_namespace, {"metadata": {"name": "marker"}, "data": {"k": "v"}}
    )
    script = f"""
import json, ssl, urllib.request, urllib.error
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(sa + "/token").read()
tls = ssl.create_default_context(cafile=sa + "/ca.crt")
def get(path):
    request = urllib.request.Request(
        "https://kubernetes.default.svc" + path, headers={{"Authorization": "Bearer " + token}})
    try:
        with urllib.request.urlopen(request, context=tls, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, None
status, body = get("/api/v1/namespaces/{node_namespace}/configmaps")
print(json.dumps({{
    "configmaps": [status, sorted(i["metadata"]["name"] for i in body["items"])],
    "pods": get("/api/v1/namespaces/{node_namespace}/pods")[0],
}}))
"""
    python_pod(node_cluster, node_namespace, "lister", script, service_account="reader")
    wait_pod(node_cluster, node_namespace, "lister", "Succeeded")
    result = json.loads(logs_of(node_cluster, node_namespace, "lister"))
    assert result["configmaps"] == [200, ["kube-root-ca.crt", "marker"]]
    assert result["pods"] == 403  # the Role grants configmaps only


def test_cluster_ip_service_answers_by_dns_name_from_another_pod(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    server = "import http.server as h; h.HTTPServer(('', 8080), h.SimpleHTTPRequestHandler)" + (
        ".serve_forever()"
    )
    python_pod(node_cluster, node_namespace, "web", server, labels={"app": "web"}, restart="Always")
    node_cluster.core.create_namespaced_service(
        node_namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    wait_pod(node_cluster, node_namespace, "web")
    client_script = f"""
import socket, time, urllib.request
name = "web.{node_namespace}.svc.cluster.local"
for attempt in range(60):
    try:
        with urllib.request.urlopen("http://web", timeout=3) as answer:
            print(socket.gethostbyname(name), answer.status)
            break
    except OSError as error:
        last = error
        time.sleep(0.5)
else:
    raise SystemExit(f"no answer from http://web: {{last}}")
"""
    python_pod(node_cluster, node_namespace, "client", client_script)
    wait_pod(node_cluster, node_namespace, "client", "Succeeded")
    address, status = logs_of(node_cluster, node_namespace, "client").split()
    service = node_cluster.core.read_namespaced_service("web", node_namespace)
    assert (address, status) == (service.spec.cluster_ip, "200")


def test_pod_with_the_restricted_security_context_runs(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    node_cluster.core.patch_namespace(
        node_namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    script = (
        "import os; fields = dict(l.split(':', 1) for l in open('/proc/self/status')); "
        "print(os.getuid(), fields['Seccomp'].strip(), fields['NoNewPrivs'].strip(), "
        "fields['CapEff'].strip())"
    )
    python_pod(
        node_cluster,
        node_namespace,
        "restricted",
        script,
        securityContext={
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        containers=[
            {
                "name": "main",
                "image": node_cluster.image,
                "imagePullPolicy": "Never",
                "command": ["python3", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    )
    wait_pod(node_cluster, node_namespace, "restricted", "Succeeded")
    uid, seccomp, no_new_privs, capabilities = logs_of(
        node_cluster, node_namespace, "restricted"
    ).split()
    assert (uid, seccomp, no_new_privs) == ("65532", "2", "1")  # 2: seccomp filter mode
    assert int(capabilities, 16) == 0


def test_restricted_namespace_refuses_a_privileged_pod(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    node_cluster.core.patch_namespace(
        node_namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    with pytest.raises(client.ApiException) as refused:
        python_pod(node_cluster, node_namespace, "root", "print(1)")
    assert refused.value.status == 403
    assert "violates PodSecurity" in str(refused.value.body)


def test_deleted_namespace_is_garbage_collected_with_its_workloads(
    node_cluster: NodeCluster,
) -> None:
    name = f"node-gc-{uuid.uuid4().hex[:6]}"
    node_cluster.core.create_namespace({"metadata": {"name": name}})
    client.AppsV1Api(node_cluster.api).create_namespaced_deployment(
        name, _deployment("idle", node_cluster.image, 1, ["sleep", "3600"])
    )
    wait_for(
        "the deployment's pod to run",
        lambda: _running_pods(node_cluster, name, "idle"),
        timeout=90,
        interval=0.25,
    )
    node_cluster.core.delete_namespace(name)

    def gone() -> bool:
        try:
            node_cluster.core.read_namespace(name)
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_for(f"namespace {name} to be gone (not Terminating)", gone, timeout=90, interval=0.5)
    assert pod_phase(node_cluster, name, "anything") == "Absent"
