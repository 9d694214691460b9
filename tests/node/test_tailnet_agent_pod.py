"""A managed tailscale agent as a real pod on the local node: a MeshAgent with
`spec.workload` (the example echo worker from the project's image) and `network:
tailscale` gets Tailscale's containerboot as its sidecar (the node's tailscale image), whose
device joins the local tailnet — headscale listening on the node's bridge address, where
pods reach it. The operator, a process on the host, dials the agent's MagicDNS name
through a host tailnet node's outbound HTTP proxy. A MeshTask goes through the tailnet
(the proof: the name resolves nowhere but in a tailscaled, the proxy node accepted the
operator's connection and sent WireGuard to the agent's pod). The sidecar killed →
TailnetConnected False with its reason, then True again, and the next task goes through
the tailnet again. A direct agent in the same namespace keeps working. Every host-side
tailnet process is traced: none sent or connected to anything off the machine (the pods
have no route off it, docs/devcluster.md)."""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.devcluster.binaries import ensure_tailnet_binaries
from agent_mesh.devcluster.images import ImageCache
from agent_mesh.devcluster.network import HOST_ADDRESS
from agent_mesh.devcluster.tailnet import LocalTailnet, TailnetNode
from agent_mesh.testing import OperatorProcess, manifest
from agent_mesh.testing.demo_chart import AGENT_PORT, agent_workload
from tests.node.conftest import NodeCluster, NodeHolder, echo_agent_pod
from tests.support.cluster import install_crds
from tests.support.namespaces import ensure_namespace
from tests.support.operators import start_operator
from tests.support.tailnet import local_tailnet
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.node, pytest.mark.tailscale, pytest.mark.timeout(900)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OPERATOR_NAMESPACE = "agent-mesh-tailnet"
TAILNET_AGENT = "echo-ts"
DIRECT_AGENT = "echo-direct"


@dataclass
class Setup:
    tailnet: LocalTailnet
    proxy: TailnetNode
    operator: OperatorProcess
    namespace: str
    image: str
    """The sidecar's image on the node."""


@pytest.fixture(scope="module")
def setup(
    node_holder: NodeHolder, node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    """The node's tailscale image, the tailnet on the node's bridge address, a host node
    with the operator's proxy, the operator, and the agents' namespace (made before the
    operator starts: kopf can miss a namespace created during its first listing)."""
    install_crds(node_cluster)
    binaries = ensure_tailnet_binaries()
    with ImageCache() as cache:
        image = cache.tailscale(binaries)
    node_holder.node.add_image(image)  # a no-op when the node started with it
    namespace = f"node-ts-{uuid.uuid4().hex[:6]}"
    node_cluster.core.create_namespace({"metadata": {"name": namespace}})
    directory = tmp_path_factory.mktemp("pod-tailnet")
    with local_tailnet(directory, address=HOST_ADDRESS) as tailnet:
        proxy = tailnet.join("agent-mesh-operator", http_proxy=True)
        assert proxy.http_proxy is not None
        ensure_namespace(node_cluster, OPERATOR_NAMESPACE)
        _auth_key(node_cluster, tailnet.auth_key)
        operator = start_operator(
            node_cluster,
            tmp_path_factory.mktemp("tailnet-operator") / "operator.log",
            watch="node-ts-*",
            operator_namespace=OPERATOR_NAMESPACE,
            mesh_host=HOST_ADDRESS,
            extra_env={
                "AGENT_MESH_TLS_EXTRA_SANS": HOST_ADDRESS,
                "AGENT_MESH_TAILSCALE_TAILNET_DOMAIN": tailnet.domain,
                "AGENT_MESH_TAILSCALE_LOGIN_SERVER": tailnet.url,
                "AGENT_MESH_TAILSCALE_IMAGE": image.name,
                "AGENT_MESH_TAILNET_PROXY": proxy.http_proxy,
            },
        )
        try:
            yield Setup(tailnet, proxy, operator, namespace, image.name)
        finally:
            operator.stop()
            node_cluster.core.delete_namespace(namespace, propagation_policy="Background")


def _auth_key(cluster: NodeCluster, key: str) -> None:
    """The auth key's source Secret in the operator's namespace (created or replaced)."""
    body = {"metadata": {"name": "agent-mesh-tailscale-auth"}, "stringData": {"authkey": key}}
    try:
        cluster.core.create_namespaced_secret(OPERATOR_NAMESPACE, body)
    except client.ApiException as error:
        if error.status != 409:
            raise
        cluster.core.replace_namespaced_secret(
            "agent-mesh-tailscale-auth", OPERATOR_NAMESPACE, body
        )


def _meshagent(cluster: NodeCluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", name
    )
    return found


def _condition(agent: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (agent.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def _task(cluster: NodeCluster, namespace: str, agent: str, payload: Any) -> dict[str, Any]:
    """A MeshTask for `agent`, waited on until it ends; its status."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    spec = {
        "taskType": "echo",
        "payload": payload,
        "requiredCapabilities": ["echo"],
        "agentSelector": {"agentRef": agent},
    }
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshtasks", manifest("MeshTask", name, spec)
    )

    def ended() -> dict[str, Any] | None:
        task = cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "meshtasks", name
        )
        status: dict[str, Any] = task.get("status") or {}
        return status if status.get("phase") in ("Completed", "Failed", "TimedOut") else None

    done: dict[str, Any] = wait_for(f"MeshTask {name} to end", ended, timeout=90, interval=0.5)
    return done


def _pod_ip(cluster: NodeCluster, namespace: str, pod: str) -> str:
    return str(cluster.core.read_namespaced_pod(pod, namespace).status.pod_ip)


def _sidecar_container_id(cluster: NodeCluster, namespace: str, pod: str) -> str:
    statuses = cluster.core.read_namespaced_pod(pod, namespace).status.container_statuses or []
    own = next(s for s in statuses if s.name == "tailscale")
    return str(own.container_id).split("://", 1)[1]


@contextlib.contextmanager
def _diagnosed(cluster: NodeCluster, setup: Setup, pod: str) -> Iterator[None]:
    """On failure: the operator's log, the agent pod's containers' logs, headscale's log."""
    try:
        yield
    except pytest.fail.Exception as failed:
        parts = [str(failed), "--- operator:", setup.operator.logs()[-3000:]]
        for container in ("agent", "tailscale"):
            got = cluster.kubectl(
                "logs", "-n", setup.namespace, pod, "-c", container, "--tail=40", check=False
            )
            parts += [f"--- pod {pod}, container {container}:", got.stdout + got.stderr]
        parts += ["--- headscale:", setup.tailnet.log.read_text(errors="replace")[-2000:]]
        pytest.fail("\n".join(parts))


def test_managed_agent_pod_joins_the_tailnet_and_its_tasks_go_through_it(
    node_holder: NodeHolder, node_cluster: NodeCluster, setup: Setup
) -> None:
    ns, tailnet, cluster = setup.namespace, setup.tailnet, node_cluster
    pod = f"{TAILNET_AGENT}-0"
    workload = agent_workload("echo_worker.py", cluster.image, "Never", OPERATOR_NAMESPACE)
    agent_env = workload["spec"]["containers"][0]["env"]
    for item in agent_env:  # the operator runs on the host, at the node's bridge address
        if item["name"] == "AGENT_MESH_URL":
            item["value"] = setup.operator.mesh_url
    spec = {
        "agentType": "worker",
        "capabilities": ["echo"],
        "network": "tailscale",
        "port": AGENT_PORT,
        "workload": workload,
    }
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "meshagents", manifest("MeshAgent", TAILNET_AGENT, spec)
    )
    hostname = f"agent-mesh-{ns}-{TAILNET_AGENT}"
    fqdn = f"{hostname}.{tailnet.domain}"
    endpoint = f"http://{fqdn}:{AGENT_PORT}"

    def headscale_lists_it() -> bool:
        nodes = json.loads(tailnet.headscale("nodes", "list", "--output", "json"))
        return any(hostname in (n.get("given_name"), n.get("name")) for n in nodes)

    def connected() -> dict[str, Any] | None:
        agent = _meshagent(cluster, ns, TAILNET_AGENT)
        held = _condition(agent, "TailnetConnected")
        status = agent.get("status") or {}
        ok = held is not None and held["status"] == "True" and status.get("endpoint") == endpoint
        return status if ok and status.get("healthStatus") == "healthy" else None

    with _diagnosed(cluster, setup, pod):
        wait_for("headscale to list the agent's device", headscale_lists_it, timeout=120)
        status = wait_for(
            "the agent connected to the tailnet and healthy", connected, timeout=120, interval=0.5
        )
    device = status["tailscale"]
    assert (device["hostname"], device["dnsName"]) == (hostname, fqdn), device
    assert any(ip.startswith("100.") for ip in device["ips"]), device
    print(f"device {fqdn} {device['ips']} (id {device['deviceId']})")

    wide = cluster.kubectl("get", "meshagents", "-n", ns, "-o", "wide").stdout
    row = next(line for line in wide.splitlines() if line.startswith(TAILNET_AGENT))
    assert endpoint in row.split() and fqdn in row.split(), wide

    # the path: only a tailscaled resolves the name; the proxy node takes the operator's
    # connection and sends to the agent's pod (WireGuard), whose sidecar serves the agent
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(fqdn, AGENT_PORT)
    pod_ip = _pod_ip(cluster, ns, pod)
    accepted = tailnet.accepted(setup.proxy)
    with _diagnosed(cluster, setup, pod):
        done = _task(cluster, ns, TAILNET_AGENT, {"over": "tailnet"})
    assert (done["phase"], done.get("result"), done.get("agentId")) == (
        "Completed",
        {"over": "tailnet"},
        TAILNET_AGENT,
    ), done
    through_proxy = tailnet.accepted(setup.proxy) - accepted
    assert through_proxy >= 1, "the operator's call never reached the tailnet proxy"
    assert pod_ip in tailnet.destinations()[setup.proxy.directory.name], (
        "the proxy node never sent to the agent's pod"
    )
    print(f"through the tailnet: {through_proxy} proxied connection(s), WireGuard to {pod_ip}")

    # the sidecar killed (its containerboot and tailscaled, not the pod): not connected,
    # with the reason; the kubelet restarts it, and it comes back with its identity
    container = _sidecar_container_id(cluster, ns, pod)
    killed = node_holder.node.ctr("tasks", "kill", "--signal", "SIGKILL", container)
    assert killed.returncode == 0, killed.stderr

    def disconnected() -> dict[str, Any] | None:
        held = _condition(_meshagent(cluster, ns, TAILNET_AGENT), "TailnetConnected")
        return held if held is not None and held["status"] == "False" else None

    with _diagnosed(cluster, setup, pod):
        down = wait_for("TailnetConnected False", disconnected, timeout=60, interval=0.25)
    assert down["reason"] in ("SidecarNotRunning", "SidecarNotReady"), down
    assert "tailscale sidecar" in down["message"], down
    print(f"sidecar killed: TailnetConnected False, {down['reason']}: {down['message']}")
    with _diagnosed(cluster, setup, pod):
        back = wait_for("TailnetConnected True again", connected, timeout=120, interval=0.5)
    assert back["tailscale"]["dnsName"] == fqdn  # the same device, from its state Secret
    restarts = {
        s.name: s.restart_count
        for s in cluster.core.read_namespaced_pod(pod, ns).status.container_statuses
    }
    assert restarts["tailscale"] >= 1 and restarts["agent"] == 0, restarts
    # the operator keeps its connection to the proxy alive, so no new one is accepted;
    # the endpoint it dials is the MagicDNS name again (`connected` above)
    with _diagnosed(cluster, setup, pod):
        again = _task(cluster, ns, TAILNET_AGENT, {"over": "tailnet", "after": "restart"})
    assert (again["phase"], again.get("result")) == (
        "Completed",
        {"over": "tailnet", "after": "restart"},
    ), again
    for attempt in again.get("attempts") or []:  # a failed one says why, never nothing
        assert not str(attempt.get("error", "")).endswith(":"), again
    print(
        f"after the restart: completed at attempt {again.get('attempt')}: {again.get('attempts')}"
    )

    assert tailnet.beyond_this_machine() == {p: [] for p in tailnet.destinations()}


def test_a_direct_agent_in_the_same_namespace_keeps_working(
    node_cluster: NodeCluster, setup: Setup
) -> None:
    ns, cluster = setup.namespace, node_cluster
    cluster.core.create_namespaced_service_account(ns, {"metadata": {"name": "echo"}})
    cluster.core.create_namespaced_config_map(
        ns,
        {
            "metadata": {"name": "echo-worker"},
            "data": {"echo_worker.py": (EXAMPLES / "echo_worker.py").read_text()},
        },
    )
    spec = {
        "agentType": "worker",
        "capabilities": ["echo"],
        "network": "direct",
        "serviceAccountName": "echo",
    }
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "meshagents", manifest("MeshAgent", DIRECT_AGENT, spec)
    )
    cluster.core.create_namespaced_pod(
        ns, echo_agent_pod(cluster.image, DIRECT_AGENT, setup.operator.mesh_url)
    )
    pod = f"{DIRECT_AGENT}-0"

    def healthy() -> dict[str, Any] | None:
        status = _meshagent(cluster, ns, DIRECT_AGENT).get("status") or {}
        return status if status.get("healthStatus") == "healthy" else None

    with _diagnosed(cluster, setup, pod):
        status = wait_for("the direct agent healthy", healthy, timeout=120, interval=0.5)
    assert status.get("endpoint") == f"http://{_pod_ip(cluster, ns, pod)}:9001", status
    agent = _meshagent(cluster, ns, DIRECT_AGENT)
    assert _condition(agent, "TailnetConnected") is None, agent  # never on the tailnet
    accepted = setup.tailnet.accepted(setup.proxy)
    with _diagnosed(cluster, setup, pod):
        done = _task(cluster, ns, DIRECT_AGENT, {"over": "direct"})
    assert (done["phase"], done.get("result")) == ("Completed", {"over": "direct"}), done
    assert setup.tailnet.accepted(setup.proxy) == accepted, "a direct call went through the proxy"
    assert setup.tailnet.beyond_this_machine() == {p: [] for p in setup.tailnet.destinations()}
