"""Dispatch over a real tailnet: an SDK echo agent (examples/echo_worker.py) reachable by
MagicDNS name only through `tailscale serve` on one tailnet node, an operator process
whose tailnet proxy is another node's outbound HTTP proxy, a MeshAgent whose spec.endpoint
is the MagicDNS URL, and a MeshTask that completes. The proof of the path: the name
resolves nowhere but in a tailscaled, and the serving node's traced connect calls reach
the agent's port. A direct agent in the same namespace keeps working (and its calls never
go through the proxy). Nothing leaves the machine (every tailnet process is traced)."""

from __future__ import annotations

import re
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent_mesh import testing
from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.devcluster.ports import free_port
from agent_mesh.devcluster.tailnet import LocalTailnet
from agent_mesh.tailscale.sidecar import serve_config
from tests.support.agents import launch
from tests.support.cluster import Cluster
from tests.support.namespaces import SESSION
from tests.support.operators import operator_with_namespace
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.tailscale, pytest.mark.timeout(900)]

PREFIX = f"amd-{SESSION}-"


def _task(cluster: Cluster, namespace: str, agent: str, payload: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MeshTask",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "taskType": "echo",
            "payload": payload,
            "requiredCapabilities": ["echo"],
            "agentSelector": {"agentRef": agent},
        },
    }
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "meshtasks", body)
    return name


def _completed(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        task = cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "meshtasks", name
        )
        status: dict[str, Any] = task.get("status") or {}
        assert status.get("phase") != "Failed", status
        return status if status.get("phase") == "Completed" else None

    found: dict[str, Any] = wait_for(f"MeshTask {name} to complete", done, timeout=90)
    return found


def _served_connects(tailnet: LocalTailnet, node_dir: Path, port: int) -> int:
    """How many times the serving tailscaled connected to the agent's loopback port."""
    trace = (tailnet.directory / f"{node_dir.name}.strace").read_text(errors="replace")
    pattern = re.compile(rf'connect\(.*sin_port=htons\({port}\).*inet_addr\("127\.0\.0\.1"\)')
    return len(pattern.findall(trace))


def test_a_meshtask_reaches_an_agent_through_the_tailnet_and_direct_still_works(
    cluster: Cluster, crds: list[dict[str, Any]], tailnet: LocalTailnet, tmp_path: Path
) -> None:
    port = free_port()
    serving = tailnet.join("echo-ts")
    fqdn = serving.fqdn
    serving.serve_config(serve_config(fqdn, serving.ips, port))
    proxy_node = tailnet.join("agent-mesh-operator", http_proxy=True)
    assert proxy_node.http_proxy is not None
    with pytest.raises(socket.gaierror):  # MagicDNS names resolve only inside a tailscaled
        socket.getaddrinfo(fqdn, port)

    ns, operator = operator_with_namespace(
        cluster,
        tmp_path / "operator.log",
        PREFIX,
        extra_env={
            "AGENT_MESH_TAILSCALE_TAILNET_DOMAIN": tailnet.domain,
            "AGENT_MESH_TAILNET_PROXY": proxy_node.http_proxy,
        },
    )
    agents = []
    try:
        endpoint = f"http://{fqdn}:{port}"
        over = testing.register_external_agent(
            cluster, ns, "echo-ts", "worker", endpoint=endpoint, capabilities=["echo"]
        )
        direct = testing.register_external_agent(
            cluster, ns, "echo-direct", "worker", capabilities=["echo"]
        )
        agents = [
            launch(
                "echo_worker.py", operator, ns, "echo-ts", f"http://127.0.0.1:{port}",
                over.credential, tmp_path,
            ),
            launch(
                "echo_worker.py", operator, ns, "echo-direct", direct.url, direct.credential,
                tmp_path,
            ),
        ]  # fmt: skip
        for agent in agents:
            agent.wait_ready(60)
        before = _served_connects(tailnet, serving.directory, port)

        done = _completed(cluster, ns, _task(cluster, ns, "echo-ts", {"over": "tailnet"}))
        assert done["result"] == {"over": "tailnet"}
        served = _served_connects(tailnet, serving.directory, port) - before
        assert served >= 1, "the serving node never forwarded to the agent"
        print(f"through the tailnet: {served} forwarded connection(s) to the agent")

        direct_port = int(direct.url.rsplit(":", 1)[1])
        done = _completed(cluster, ns, _task(cluster, ns, "echo-direct", {"over": "direct"}))
        assert done["result"] == {"over": "direct"}
        assert _served_connects(tailnet, serving.directory, direct_port) == 0
        agent = cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, ns, "meshagents", "echo-ts"
        )
        allowed = {c["type"]: c for c in agent["status"]["conditions"]}["EndpointAllowed"]
        assert allowed["status"] == "True", allowed  # not refused for not resolving
    finally:
        for agent in agents:
            agent.stop()
        operator.stop()
        client.CoreV1Api(cluster.api).delete_namespace(ns, propagation_policy="Background")
    assert tailnet.beyond_this_machine() == {p: [] for p in tailnet.destinations()}
