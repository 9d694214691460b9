"""Pod to pod on the local node, through the tailnet and directly, in one run (the
`--pods` mode of tailnet_bench.py).

Two pods of the project's image, each with the tailscale sidecar the operator builds
(agent_mesh.workloads.objects.build, applied as the operator would apply it, without an
operator: the bench plays it): an HTTP echo server, served on the tailnet by its
sidecar's serve configuration; and a caller whose sidecar also runs tailscaled's outbound
HTTP proxy on 127.0.0.1. headscale listens on the node's bridge address. The caller sends
the same POST to the server by MagicDNS name through its proxy (caller's tailscaled in
userspace, WireGuard over the bridge, the server's tailscaled serve, loopback to the
server) and to the server's pod IP, alternating, each over one kept-alive connection and
with a new connection per request; it prints its latencies, which the bench reads from
its log. Needs root and the machine's node (run it under the node lock); nothing leaves
the machine (pods have no route off it; tailscaled as in the tests).
"""

from __future__ import annotations

import base64
import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config, utils

from agent_mesh.devcluster import ensure_binaries
from agent_mesh.devcluster import node as devnode
from agent_mesh.devcluster.binaries import ensure_tailnet_binaries
from agent_mesh.devcluster.images import ImageCache
from agent_mesh.devcluster.network import HOST_ADDRESS
from agent_mesh.devcluster.tailnet import LocalTailnet
from agent_mesh.tailscale import sidecar
from agent_mesh.tailscale.sidecar import SidecarSettings
from agent_mesh.workloads.objects import build

NAMESPACE = "bench-tailnet"
PORT = 8080
PROXY_PORT = 1055
ROWS = ("tailnet, kept alive", "direct, kept alive", "tailnet, new conn", "direct, new conn")

SERVER = """
import http.server

class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Echo).serve_forever()
"""

CALLER = """
import http.client, json, os, threading, time

fqdn, ip, port = os.environ["AGENT_FQDN"], os.environ["AGENT_IP"], int(os.environ["PORT"])
proxy = int(os.environ["PROXY_PORT"])
count, rounds, warmup = (int(os.environ[k]) for k in ("COUNT", "ROUNDS", "WARMUP"))
body = json.dumps({"payload": "x" * 200}).encode()
targets = {
    "tailnet": ("127.0.0.1", proxy, f"http://{fqdn}:{port}/echo"),  # through the proxy
    "direct": (ip, port, "/echo"),
}

def run(name, keep, n):
    host, at, path = targets[name]
    kept = http.client.HTTPConnection(host, at, timeout=10) if keep else None
    out = []
    for _ in range(n):
        conn = kept or http.client.HTTPConnection(host, at, timeout=10)
        started = time.perf_counter()
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        got = response.read()
        out.append(time.perf_counter() - started)
        if response.status != 200 or got != body:
            raise RuntimeError(f"{name}: {response.status} {got[:80]!r}")
        if kept is None:
            conn.close()
    if kept is not None:
        kept.close()
    return out

deadline = time.monotonic() + 180
while True:  # the server by name through the tailnet, and by pod IP
    try:
        run("tailnet", False, 1)
        run("direct", False, 1)
        break
    except Exception as error:
        if time.monotonic() > deadline:
            print("RESULT " + json.dumps({"error": repr(error)}), flush=True)
            threading.Event().wait()
        time.sleep(0.5)
rows = {}
for keep in (True, False):
    for name in targets:
        run(name, keep, warmup)
for _ in range(rounds):  # alternate, so drift hits both alike
    for keep in (True, False):
        for name in targets:
            label = f"{name}, {'kept alive' if keep else 'new conn'}"
            rows.setdefault(label, []).extend(run(name, keep, count))
print("RESULT " + json.dumps(rows), flush=True)
threading.Event().wait()
"""


def _meshagent(name: str, command: str, env: dict[str, str], image: str) -> dict[str, Any]:
    """A MeshAgent with the workload (its first container runs `python3 -c command`)."""
    return {
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": ""},
        "spec": {
            "agentType": "bench",
            "network": "tailscale",
            "port": PORT,
            "workload": {
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "main",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", command],
                            "env": [{"name": k, "value": v} for k, v in env.items()],
                        }
                    ],
                }
            },
        },
    }


def _apply(api: client.ApiClient, objects: list[dict[str, Any]]) -> None:
    """Create the children as the operator would, without their owner (no MeshAgent
    exists: the garbage collector would remove children of a missing owner)."""
    for child in objects:
        body = copy.deepcopy(child)
        body["metadata"].pop("ownerReferences", None)
        utils.create_from_dict(api, body, namespace=NAMESPACE)  # type: ignore[no-untyped-call]


def _with_proxy(statefulset: dict[str, Any]) -> None:
    """The caller's sidecar also runs tailscaled's outbound HTTP proxy on loopback."""
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    own = next(c for c in containers if c["name"] == sidecar.CONTAINER_NAME)
    own["env"].append({"name": "TS_OUTBOUND_HTTP_PROXY_LISTEN", "value": f"127.0.0.1:{PROXY_PORT}"})


def _wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise RuntimeError(f"{what}: not after {timeout:.0f} s")


def _ready(core: client.CoreV1Api, pod: str) -> str | None:
    """The pod's IP once every container of it is ready."""
    try:
        got = core.read_namespaced_pod(pod, NAMESPACE)
    except client.ApiException:
        return None
    status = got.status
    statuses = (status.container_statuses if status is not None else None) or []
    if status is not None and statuses and all(s.ready for s in statuses):
        return str(status.pod_ip)
    return None


def _result(core: client.CoreV1Api, pod: str) -> dict[str, list[float]] | None:
    try:
        log = core.read_namespaced_pod_log(pod, NAMESPACE, container="main")
    except client.ApiException:
        return None
    for line in (log or "").splitlines():  # None while the container has written nothing
        if line.startswith("RESULT "):
            found: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            if "error" in found:
                raise RuntimeError(f"the caller pod failed: {found['error']}")
            return found
    return None


def measure_pods(
    count: int, rounds: int, warmup: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Bring up the node and the tailnet, run the two pods, return their latencies (in
    seconds, by row) and how long the pieces took."""
    if devnode.unsupported_reason():
        raise RuntimeError(f"no node on this machine: {devnode.unsupported_reason()}")
    tailnet_binaries = ensure_tailnet_binaries()  # cached first: the node imports its image
    with ImageCache() as cache:
        image = cache.tailscale(tailnet_binaries)
    workdir = Path(tempfile.mkdtemp(prefix="tailnet-pods-bench-"))
    timings: dict[str, float] = {}
    started = time.monotonic()
    node = devnode.prepare(ensure_binaries(), workdir / "plane")
    node.start()
    try:
        node.add_image(image)
        timings["node_up_s"] = round(time.monotonic() - started, 1)
        project = node.images[0].name
        api = config.new_client_from_config(str(node.kubeconfig))  # type: ignore[no-untyped-call]
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        _wait("the namespace's default ServiceAccount", lambda: _has_default_sa(core), 60)
        with LocalTailnet(tailnet_binaries, workdir / "tailnet", address=HOST_ADDRESS) as tailnet:
            settings = SidecarSettings(
                image=image.name, tailnet_domain=tailnet.domain, login_server=tailnet.url
            )
            key = base64.b64encode(tailnet.auth_key.encode()).decode()
            agent = build(
                _meshagent("bench-agent", SERVER.replace("PORT", str(PORT)), {}, project),
                default_network="direct",
                tailscale=settings,
                auth_key=key,
            )
            t = time.monotonic()
            _apply(api, agent.all())
            agent_ip = _wait("the server pod ready", lambda: _ready(core, "bench-agent-0"), 180)
            timings["server_pod_ready_s"] = round(time.monotonic() - t, 1)
            say(f"  server pod {agent_ip} on the tailnet in {timings['server_pod_ready_s']} s")
            env = {
                "AGENT_FQDN": sidecar.device_fqdn(settings, NAMESPACE, "bench-agent"),
                "AGENT_IP": agent_ip,
                "PORT": str(PORT),
                "PROXY_PORT": str(PROXY_PORT),
                "COUNT": str(count),
                "ROUNDS": str(rounds),
                "WARMUP": str(warmup),
            }
            caller = build(
                _meshagent("bench-caller", CALLER, env, project),
                default_network="direct",
                tailscale=settings,
                auth_key=key,
            )
            _with_proxy(caller.statefulset)
            t = time.monotonic()
            _apply(api, caller.all())
            latencies = _wait("the caller's figures", lambda: _result(core, "bench-caller-0"), 900)
            timings["caller_run_s"] = round(time.monotonic() - t, 1)
        api.close()
    finally:
        node.stop()
    return {"latencies": latencies, "timings": timings, "image": image.name}


def _has_default_sa(core: client.CoreV1Api) -> bool:
    try:
        core.read_namespaced_service_account("default", NAMESPACE)
    except client.ApiException:
        return False
    return True
