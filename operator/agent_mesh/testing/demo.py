"""`make demo`: a local mesh in one command.

Starts the local control plane (or uses $KUBECONFIG's cluster), installs the CRDs, runs the
operator, applies the sample manifests (config/samples/), runs the example agents
(examples/) as local processes for the sample agents (they register, beat and take the
sample task), and prints the agents and tasks; then keeps the mesh up until Ctrl-C (or
tears it down at once with --once) and cleans up after itself. The processes are run by
agent_mesh.testing; the samples and example agents are package data, so an installed
wheel runs the demo as the source tree does.

It lives in the harness, not in devcluster: it runs an operator and agents, as the tests do,
and the local cluster (devcluster: the control plane, kubectl, the kubeconfig check) sits
below both and knows neither.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent_mesh import testing
from agent_mesh.devcluster import ControlPlane, DevClusterError, ensure_binaries
from agent_mesh.devcluster.kubeconfig import check_kubeconfig, configured_kubeconfig
from agent_mesh.devcluster.kubectl import Kubectl, kubectl_path
from agent_mesh.devcluster.versions import state_root

NAMESPACE = "agent-mesh-demo"
DEMO_AGENTS = {  # sample MeshAgent -> the example program that plays it
    "worker-1": "summarizer.py",
    "worker-2": "summarizer.py",
    "critic": "critic.py",
    "monitor": "monitor.py",
}
OPERATOR_NAMESPACE = "agent-mesh-system"
AGENT_SETTINGS = {"AGENT_MESH_HEARTBEAT_SECONDS": "10", "AGENT_MESH_DRAIN_SECONDS": "2"}


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


class DemoKubectl(Kubectl):
    """kubectl as the harness's `Kube`: what the harness reads and writes, by kubectl."""

    def _object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self("get", kind, name, "-n", namespace, "-o", "json", check=False)
        return json.loads(found) if found.strip() else None

    def read_meshagent(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._object("meshagent", namespace, name)

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self._object("secret", namespace, name)
        return None if found is None else found.get("data") or {}

    def read_config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self._object("configmap", namespace, name)
        return None if found is None else found.get("data") or {}

    def write_meshagent(self, manifest: dict[str, Any]) -> None:
        """Server-side apply: the fields of `manifest` join those of a sample agent (the
        demo takes over `spec.endpoint` where the sample sets one)."""
        apply = ("apply", "--server-side", "--force-conflicts", "--field-manager=agent-mesh-demo")
        self(*apply, "-f", "-", stdin=json.dumps(manifest))


def _samples_dir(samples: Path | None) -> Path:
    if samples is None:
        return testing.sample_manifests()
    if samples.is_dir() and any(samples.glob("*.yaml")):
        return samples
    raise DevClusterError(f"--samples {samples}: no *.yaml manifests there")


def _wait(what: str, ready: Callable[[], object], timeout: float) -> None:
    testing.wait_until(what, ready, timeout, interval=0.25)


def run(*, once: bool, samples: Path | None, timeout: float, crds: Sequence[str]) -> int:
    """`crds`: the CRD manifests to install (the CLI generates them from api/)."""
    try:
        return _run(once=once, samples=samples, timeout=timeout, crds=crds)
    except testing.HarnessError as exc:  # the operator or an agent exited, or was late
        raise DevClusterError(str(exc)) from exc


def _run(*, once: bool, samples: Path | None, timeout: float, crds: Sequence[str]) -> int:
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
        kubectl = DemoKubectl(binary, kubeconfig)

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

        log_path = workdir / "operator.log"
        say(f"starting the operator (logs: {log_path})")
        operator = testing.start_operator(
            kubectl,
            kubeconfig,
            log_path,
            watch=NAMESPACE,
            operator_namespace=OPERATOR_NAMESPACE,
            timeout=timeout,
        )
        stack.callback(operator.stop)

        say(f"applying {samples_dir}")
        manifests = sorted(samples_dir.glob("*.yaml"))  # by file: the folder may be a link
        kubectl("apply", "-n", NAMESPACE, *(a for m in manifests for a in ("-f", str(m))))

        def agents_registered() -> bool:
            operator.check_running()
            items = json.loads(kubectl("get", "meshagents", "-n", NAMESPACE, "-o", "json"))
            return all(i.get("status", {}).get("healthStatus") for i in items["items"])

        _wait("the agents to register", agents_registered, timeout)
        started = _start_demo_agents(kubectl, operator, workdir, stack)

        def demo_agents_healthy() -> bool:
            operator.check_running()
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
            f"The mesh API is at {operator.mesh_url} (JWKS: /.well-known/jwks.json), its CA in\n"
            f"    {operator.ca_file} (e.g. curl --cacert {operator.ca_file} "
            f"{operator.mesh_url}/readyz).\n"
            "Press Ctrl-C to stop it."
        )
        _wait_for_signal()
        say("stopping")
    return 0


def _start_demo_agents(
    kubectl: DemoKubectl,
    operator: testing.OperatorProcess,
    workdir: Path,
    stack: contextlib.ExitStack,
) -> list[str]:
    """Run the example agents as the sample agents: each gets a loopback endpoint, the
    credential the operator makes for it, and its own log. Returns the agents started."""
    started: list[str] = []
    for name, program in DEMO_AGENTS.items():
        if kubectl.read_meshagent(NAMESPACE, name) is None:
            continue
        agent = testing.register_external_agent(kubectl, NAMESPACE, name)
        log = workdir / f"agent-{name}.log"
        process = testing.launch_agent(
            program,
            mesh_url=operator.mesh_url,
            ca_file=operator.ca_file,
            namespace=NAMESPACE,
            agent_id=name,
            credential=agent.credential,
            url=agent.url,
            log=log,
            settings=AGENT_SETTINGS,
        )
        stack.callback(process.stop)
        say(f"agent {name}: examples/{program} on {agent.url} (logs: {log})")
        started.append(name)
    return started


def _wait_for_signal() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
