"""The chart's tailscale sidecar run for real: the rendered container (Tailscale's
containerboot, with the chart's environment) as the operator's ServiceAccount holding only
the chart's Role, against the real apiserver and the local tailnet, traced (nothing leaves
the machine). Its device joins with the state Secret the chart creates (no `create`
needed), and a name on the tailnet answers through its outbound HTTP proxy on loopback,
the one the chart hands the operator as AGENT_MESH_TAILNET_PROXY. No pod: containerboot
runs as a process with the ServiceAccount mounted where a pod has it."""

from __future__ import annotations

import base64
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client, utils

from agent_mesh.devcluster.ports import free_port
from agent_mesh.devcluster.tailnet import LocalTailnet
from agent_mesh.tailscale import sidecar
from tests.helm.conftest import env_of, only, render
from tests.support.cluster import Cluster
from tests.support.stand_ins import answering
from tests.support.tailnet import resolved_env, service_account_dir
from tests.support.tailnet import tailnet as tailnet
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.tailscale, pytest.mark.timeout(900)]  # a cold build takes minutes


def test_the_charts_sidecar_joins_with_only_its_role_and_proxies_tailnet_names(
    cluster: Cluster, helm: Path, namespace: str, tailnet: LocalTailnet, tmp_path: Path
) -> None:
    proxy_port = free_port()
    objects = render(
        helm,
        "--set",
        f"tailscale.enabled=true,tailscale.tailnetDomain={tailnet.domain}",
        "--set",
        f"tailscale.controlURL={tailnet.url},tailscale.proxyPort={proxy_port}",
        namespace=namespace,
    )
    for kind in ("ServiceAccount", "Secret"):
        utils.create_from_dict(cluster.api, only(objects, kind), namespace=namespace)
    for kind in ("Role", "RoleBinding"):
        utils.create_from_dict(cluster.api, only(objects, kind, "agent-mesh-tailscale"))
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == sidecar.CONTAINER_NAME)
    env = resolved_env(container, tailnet.auth_key, "agent-mesh-5d7f9-x2x7q")
    server = cluster.api.configuration.host.removeprefix("https://")
    host, _, port = server.rpartition(":")
    env.update(KUBERNETES_SERVICE_HOST=host, KUBERNETES_SERVICE_PORT_HTTPS=port)
    account = service_account_dir(cluster, namespace, "agent-mesh", tmp_path / "serviceaccount")
    tailnet.containerboot("operator", env, account, timeout=30)

    core = client.CoreV1Api(cluster.api)
    state = wait_for(
        "the operator's device in the chart's state Secret",
        lambda: (core.read_namespaced_secret("agent-mesh-tailscale", namespace).data or {}).get(
            "device_fqdn"
        ),
        timeout=60,
    )
    assert base64.b64decode(state).decode() == f"mesh-operator-{namespace}.{tailnet.domain}."

    with answering(lambda _host: "hello over the tailnet") as agent_port:
        target = tailnet.join("agent-mesh-chart-target")
        target.serve_config(sidecar.serve_config(target.fqdn, [], agent_port))
        proxy = env_of(only(objects, "Deployment"))["AGENT_MESH_TAILNET_PROXY"]
        assert proxy == f"http://127.0.0.1:{proxy_port}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))

        def through_the_proxy() -> str | None:
            try:
                with opener.open(f"http://{target.fqdn}:{agent_port}/", timeout=10) as answer:
                    return str(answer.read().decode())
            except OSError:
                return None

        body = wait_for("a tailnet name through the sidecar's proxy", through_the_proxy, 60)
    assert body == "hello over the tailnet"
    assert tailnet.beyond_this_machine() == {p: [] for p in tailnet.destinations()}
