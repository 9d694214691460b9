"""`make demo`: a local mesh in one command.

Starts the local control plane (or uses $KUBECONFIG's cluster), installs the CRDs, runs the
operator, applies config/samples/, runs the example agents from examples/ as local
processes for the sample agents (they register, beat and take the sample task), and
prints the agents and tasks; then keeps the mesh up until Ctrl-C (or tears it down at
once with --once) and cleans up after itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from agent_mesh.devcluster import ControlPlane, DevClusterError, ensure_binaries
from agent_mesh.devcluster.kubeconfig import check_kubeconfig, configured_kubeconfig
from agent_mesh.devcluster.kubectl import Kubectl, kubectl_path
from agent_mesh.devcluster.ports import free_port
from agent_mesh.devcluster.processes import spawn, terminate
from agent_mesh.devcluster.versions import state_root
from agent_mesh.pki import CA_BUNDLE_CONFIGMAP

NAMESPACE = "agent-mesh-demo"
DEMO_AGENTS = {  # sample MeshAgent -> the example program that plays it
    "worker-1": "summarizer.py",
    "worker-2": "summarizer.py",
    "critic": "critic.py",
    "monitor": "monitor.py",
}
OPERATOR_NAMESPACE = "agent-mesh-system"
_REPO = Path(__file__).resolve().parents[3]


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _samples_dir(samples: Path | None) -> Path:
    for candidate in [samples] if samples else [Path("config/samples"), _REPO / "config/samples"]:
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    raise DevClusterError(f"--samples {samples or 'config/samples'}: no *.yaml manifests there")


def _wait(what: str, ready: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise DevClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def run(*, once: bool, samples: Path | None, timeout: float, crds: Sequence[str]) -> int:
    """`crds`: the CRD manifests to install (the CLI generates them from api/)."""
    samples_dir = _samples_dir(samples)
    workdir = state_root() / "demo"
    with contextlib.ExitStack() as stack:
        existing = configured_kubeconfig()
        if existing is not None:
            kubeconfig = check_kubeconfig(existing, "KUBECONFIG")
            say(f"using the cluster in KUBECONFIG ({kubeconfig})")
            binary = kubectl_path()
            if binary is None:
                binary = str(ensure_binaries().kubectl)
        else:
            binaries = ensure_binaries()
            shutil.rmtree(workdir, ignore_errors=True)
            plane = ControlPlane(binaries, workdir / "plane")
            say(
                f"starting Kubernetes {binaries.kubernetes_version} + etcd "
                f"{binaries.etcd_version} on 127.0.0.1"
            )
            stack.enter_context(plane)
            say(f"control plane ready in {plane.startup_seconds:.1f} s at {plane.server}")
            kubeconfig, binary = plane.kubeconfig, str(binaries.kubectl)
        workdir.mkdir(parents=True, exist_ok=True)
        kubectl = Kubectl(binary, kubeconfig)

        say("installing the CRDs")
        kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            stdin="---\n".join(crds),
        )
        kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/meshagents.agentmesh.io",
            "crd/meshtasks.agentmesh.io",
            "crd/aclpolicies.agentmesh.io",
        )
        kubectl("create", "namespace", NAMESPACE, check=False)
        kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
        if existing is not None:
            stack.callback(kubectl, "delete", "namespace", NAMESPACE, "--wait=false", check=False)

        liveness = free_port()
        mesh_port = free_port()
        log_path = workdir / "operator.log"
        say(f"starting the operator (logs: {log_path})")
        operator = spawn(
            [
                sys.executable,
                "-m",
                "agent_mesh",
                "operator",
                "--namespace",
                NAMESPACE,
                "--liveness-port",
                str(liveness),
                "--webhook-port",
                str(free_port()),
                "--mesh-port",
                str(mesh_port),
                "--operator-namespace",
                OPERATOR_NAMESPACE,
            ],
            log_path,
            detached=False,
            # the sample agents listen on 127.0.0.1, which a cluster's operator refuses
            env={**kubectl.env, "AGENT_MESH_EGRESS_ALLOW_LOOPBACK": "true"},
        )
        stack.callback(terminate, operator.pid, child=operator)

        def operator_live() -> bool:
            if operator.poll() is not None:
                tail = "\n".join(log_path.read_text().splitlines()[-20:])
                raise DevClusterError(
                    f"the operator exited with code {operator.returncode}:\n{tail}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=1) as resp,
            ):
                return bool(resp.status == 200)
            return False

        _wait("the operator's liveness endpoint", operator_live, timeout)
        mesh_url = f"https://127.0.0.1:{mesh_port}"
        ca_file = workdir / "mesh-ca.crt"

        def mesh_ready() -> bool:
            operator_live()
            return _fetch_ca(kubectl, ca_file) and _answers(f"{mesh_url}/readyz", ca_file)

        _wait("the operator's mesh API (https, its CA from the cluster)", mesh_ready, timeout)
        say(f"applying {samples_dir}")
        kubectl("apply", "-n", NAMESPACE, "-f", str(samples_dir))

        def agents_registered() -> bool:
            operator_live()
            items = json.loads(kubectl("get", "meshagents", "-n", NAMESPACE, "-o", "json"))
            return all(i.get("status", {}).get("healthStatus") for i in items["items"])

        _wait("the agents to register", agents_registered, timeout)
        started = _start_demo_agents(kubectl, mesh_url, ca_file, workdir, stack)

        def demo_agents_healthy() -> bool:
            operator_live()
            items = json.loads(kubectl("get", "meshagents", "-n", NAMESPACE, "-o", "json"))
            health = {
                i["metadata"]["name"]: i.get("status", {}).get("healthStatus")
                for i in items["items"]
            }
            return all(health.get(name) == "healthy" for name in started)

        _wait("the demo agents to become healthy", demo_agents_healthy, timeout)

        def tasks_finished() -> bool:
            items = json.loads(kubectl("get", "meshtasks", "-n", NAMESPACE, "-o", "json"))
            return all(
                i.get("status", {}).get("phase") in ("Completed", "Failed", "TimedOut")
                for i in items["items"]
            )

        if started:
            _wait("the sample tasks to finish", tasks_finished, timeout)
        print(kubectl("get", "meshagents", "-n", NAMESPACE, "-o", "wide"), flush=True)
        print(kubectl("get", "meshtasks", "-n", NAMESPACE), flush=True)
        print(kubectl("get", "aclpolicies", "-n", NAMESPACE), flush=True)
        if once:
            say("--once: tearing the mesh down")
            return 0
        say(
            f"the mesh is up. In another shell:\n    export KUBECONFIG={kubeconfig}\n"
            f"    {binary} get meshagents -n {NAMESPACE} -o wide\n"
            f"The mesh API is at {mesh_url} (JWKS: /.well-known/jwks.json), its CA in\n"
            f"    {ca_file} (e.g. curl --cacert {ca_file} {mesh_url}/readyz).\n"
            "Press Ctrl-C to stop it."
        )
        _wait_for_signal()
        say("stopping")
    return 0


def _fetch_ca(kubectl: Kubectl, ca_file: Path) -> bool:
    """The CA bundle the operator publishes in its namespace, into `ca_file`: what any
    client outside the cluster does (docs/sdk.md)."""
    path = "jsonpath={.data.ca\\.crt}"
    found = kubectl(
        "get", "configmap", CA_BUNDLE_CONFIGMAP, "-n", OPERATOR_NAMESPACE, "-o", path, check=False
    )
    if "BEGIN CERTIFICATE" not in found:
        return False
    ca_file.write_text(found)
    return True


def _answers(url: str, ca_file: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(url, timeout=1, context=context) as resp,  # noqa: S310
    ):
        return bool(resp.status == 200)
    return False


def _start_demo_agents(
    kubectl: Kubectl, mesh_url: str, ca_file: Path, workdir: Path, stack: contextlib.ExitStack
) -> list[str]:
    """Run examples/ programs as the sample agents: each gets a loopback endpoint, the
    credential the operator makes for it, and its own log. Returns the agents started."""
    examples = _REPO / "examples"
    if not examples.is_dir():
        say("no examples/ next to the package: the sample agents stay pending")
        return []
    started: list[str] = []
    for name, program in DEMO_AGENTS.items():
        if not kubectl("get", "meshagent", name, "-n", NAMESPACE, check=False).strip():
            continue
        url = f"http://127.0.0.1:{free_port()}"
        patch = json.dumps({"spec": {"endpoint": url}})
        kubectl("patch", "meshagent", name, "-n", NAMESPACE, "--type", "merge", "-p", patch)
        credential = _credential(kubectl, name)
        env = {
            **os.environ,
            "AGENT_MESH_URL": mesh_url,
            "AGENT_MESH_CA_FILE": str(ca_file),
            "AGENT_MESH_NAMESPACE": NAMESPACE,
            "AGENT_MESH_AGENT_ID": name,
            "AGENT_MESH_CREDENTIAL": credential,
            "AGENT_MESH_HOST": "127.0.0.1",
            "AGENT_MESH_PORT": url.rsplit(":", 1)[1],
            "AGENT_MESH_HEARTBEAT_SECONDS": "10",
            "AGENT_MESH_DRAIN_SECONDS": "2",
        }
        log = workdir / f"agent-{name}.log"
        proc = spawn([sys.executable, str(examples / program)], log, detached=False, env=env)
        stack.callback(terminate, proc.pid, child=proc)
        say(f"agent {name}: examples/{program} on {url} (logs: {log})")
        started.append(name)
    return started


def _credential(kubectl: Kubectl, name: str) -> str:
    """The credential the operator wrote for an agent with an endpoint."""
    path = "jsonpath={.status.credential.secretName}"
    secret = ""
    deadline = time.monotonic() + 30
    while not secret:
        secret = kubectl("get", "meshagent", name, "-n", NAMESPACE, "-o", path).strip()
        if not secret:
            if time.monotonic() > deadline:
                raise DevClusterError(f"the operator made no credential for agent {name}")
            time.sleep(0.25)
    data = kubectl("get", "secret", secret, "-n", NAMESPACE, "-o", "jsonpath={.data.credential}")
    return base64.b64decode(data).decode()


def _wait_for_signal() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
