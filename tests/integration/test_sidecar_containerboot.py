"""The sidecar the operator builds, run for real: Tailscale's containerboot with the
container's environment, as the per-agent ServiceAccount, against the real apiserver and
the local tailnet, traced (nothing leaves the machine). The Role (its state Secret by
name, no `create`; Events) is enough: the device joins, its state Secret gets device_id,
device_fqdn and device_ips, and another node reaches the agent through the serve
configuration by MagicDNS name and, once the IPs are in it, by tailnet IP. No pod:
containerboot runs as a process with the ServiceAccount mounted where a pod has it (a
mount namespace of its own)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, utils

from agent_mesh.devcluster.ports import free_port
from agent_mesh.devcluster.tailnet import LocalTailnet, TailnetNode
from agent_mesh.tailscale import sidecar
from agent_mesh.tailscale.sidecar import SidecarSettings
from agent_mesh.workloads.objects import build
from tests.support.cluster import Cluster
from tests.support.stand_ins import answering
from tests.support.tailnet import resolved_env, service_account_dir
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.tailscale, pytest.mark.timeout(900)]  # a cold build takes minutes


@pytest.fixture
def agent_port() -> Iterator[int]:
    """A stand-in agent: the server a tailnet node serves."""
    with answering(lambda _host: "hello from the agent container") as port:
        yield port


def _get(via: TailnetNode, url: str) -> int:
    assert via.http_proxy is not None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": via.http_proxy}))
    try:
        with opener.open(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_sidecar_joins_fills_its_state_secret_and_serves_the_agent_with_only_its_role(
    cluster: Cluster, namespace: str, tailnet: LocalTailnet, agent_port: int, tmp_path: Path
) -> None:
    settings = SidecarSettings(
        image="localhost/tailscale:v1.86.5", tailnet_domain=tailnet.domain, login_server=tailnet.url
    )
    meshagent = {
        "metadata": {"name": "summ", "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": {
            "agentType": "worker",
            "network": "tailscale",
            "port": agent_port,
            "workload": {"spec": {"containers": [{"name": "agent", "image": "a:1"}]}},
        },
    }
    objects = build(meshagent, default_network="direct", tailscale=settings)
    for child in objects.all()[:-2]:  # the SA, state Secret, serve ConfigMap and RBAC
        utils.create_from_dict(cluster.api, child, namespace=namespace)
    assert objects.serve_config is not None
    serve_file = tmp_path / "serve.json"
    serve_file.write_text(objects.serve_config["data"][sidecar.SERVE_CONFIG_FILE])

    container = objects.statefulset["spec"]["template"]["spec"]["containers"][1]
    env = resolved_env(container, tailnet.auth_key, "summ-0")
    server = cluster.api.configuration.host.removeprefix("https://")
    host, _, port = server.rpartition(":")
    env.update(
        KUBERNETES_SERVICE_HOST=host,
        KUBERNETES_SERVICE_PORT_HTTPS=port,
        TS_SERVE_CONFIG=str(serve_file),
        TS_LOCAL_ADDR_PORT=f"127.0.0.1:{free_port()}",
    )
    account = service_account_dir(cluster, namespace, "summ", tmp_path / "serviceaccount")
    started = time.monotonic()
    tailnet.containerboot("summ", env, account, timeout=30)
    core = client.CoreV1Api(cluster.api)

    def device() -> dict[str, str] | None:
        data = core.read_namespaced_secret("summ-tailscale", namespace).data or {}
        keys = ("device_id", "device_fqdn", "device_ips")
        if not all(k in data for k in keys):
            return None
        return {k: base64.b64decode(data[k]).decode() for k in keys}

    state = wait_for("the device in the state Secret", device, timeout=60)
    joined = time.monotonic() - started
    fqdn = f"agent-mesh-{namespace}-summ.{tailnet.domain}"
    assert state["device_fqdn"] == f"{fqdn}."
    ips = json.loads(state["device_ips"])
    assert any(ip.startswith("100.") for ip in ips), ips
    print(f"containerboot: device in its state Secret {joined:.1f} s after start")

    client_node = tailnet.join("agent-mesh-sidecar-client", http_proxy=True)
    by_name = f"http://{fqdn}:{agent_port}/"
    wait_for("the agent by MagicDNS name", lambda: _get(client_node, by_name) == 200, timeout=30)
    ipv4 = next(ip for ip in ips if "." in ip)
    by_ip = f"http://{ipv4}:{agent_port}/"
    assert _get(client_node, by_ip) == 404  # no IP-keyed entry before the IPs are known

    # what the operator writes once status.tailscale.ips is known; containerboot watches it
    serve_file.write_text(json.dumps(sidecar.serve_config(fqdn, ips, agent_port)))
    wait_for("the agent by tailnet IP", lambda: _get(client_node, by_ip) == 200, timeout=30)
    assert tailnet.beyond_this_machine() == {p: [] for p in tailnet.destinations()}
