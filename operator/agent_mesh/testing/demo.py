"""`make demo`: a local mesh in one command, in one of two modes.

Chart mode, where a node can run (the local node: root and the Debian packages, as `agent-mesh
dev up` needs; or $KUBECONFIG's cluster given --image): the operator installed by
`helm upgrade --install` of charts/agent-mesh, the example agents as pods the operator runs
(demo_chart), the sample task. Process mode otherwise, or with --processes: the local
control plane (or $KUBECONFIG's cluster), the CRDs, the operator and the example agents
(examples/) as local processes for the sample agents (they register, beat and take the
sample task). Either prints the agents and tasks, then keeps the mesh up until Ctrl-C (or
tears it down at once with --once) and cleans up after itself; it says why it chose the
mode it runs. The samples and example agents are package data, so an installed wheel runs
the process mode as the source tree does (the chart mode needs the source tree's chart).

It lives in the harness, not in devcluster: it runs an operator and agents, as the tests do,
and the local cluster (devcluster: the control plane, kubectl, the kubeconfig check) sits
below both and knows neither.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import signal
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent_mesh import testing
from agent_mesh.devcluster import ControlPlane, DevClusterError, ensure_binaries
from agent_mesh.devcluster.kubeconfig import check_kubeconfig, configured_kubeconfig
from agent_mesh.devcluster.kubectl import Kubectl, kubectl_path
from agent_mesh.devcluster.versions import state_root
from agent_mesh.testing import demo_chart

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


def run(
    *,
    once: bool,
    samples: Path | None,
    timeout: float,
    crds: Sequence[str],
    processes: bool = False,
    image: str | None = None,
) -> int:
    """`crds`: the CRD manifests to install (the CLI generates them from api/).
    `processes`: the process mode even where the chart mode could run; `image`: the
    project's image a KUBECONFIG cluster can pull (the chart mode there)."""
    samples_dir = _samples_dir(samples)
    try:
        reason = None if processes else _chart_mode_refusal(image)
        if processes:
            say("--processes: the operator and the agents run as processes of this machine")
        elif reason is None:
            return _run_chart(once=once, samples_dir=samples_dir, timeout=timeout, image=image)
        else:
            say(f"process mode (the operator and agents as processes here): {reason}")
        return _run(once=once, samples_dir=samples_dir, timeout=timeout, crds=crds)
    except testing.HarnessError as exc:  # the operator or an agent exited, or was late
        raise DevClusterError(str(exc)) from exc


def _chart_mode_refusal(image: str | None) -> str | None:
    """Why the chart mode cannot run here, or None."""
    if demo_chart.chart_dir() is None:
        return "no charts/agent-mesh here (the chart mode runs from a source checkout)"
    if configured_kubeconfig() is not None:
        if image is None:
            return (
                "the cluster in KUBECONFIG has no way to get the project's image (set --image "
                "[env AGENT_MESH_DEMO_IMAGE] to one it can pull for the chart mode)"
            )
        return None
    from agent_mesh.devcluster import node as devnode

    reason = devnode.unsupported_reason()
    if reason is not None:
        return f"this machine cannot run the local node: {reason}"
    record = devnode.Record.load(devnode.node_dir())
    live = [] if record is None else record.live_components()
    if live and record is not None and not record.orphaned():  # an orphan is reclaimed
        return (
            f"the machine's one node is in use ({', '.join(live)}; `agent-mesh dev down` "
            "stops a node `agent-mesh dev up` started)"
        )
    return None


def _run(*, once: bool, samples_dir: Path, timeout: float, crds: Sequence[str]) -> int:
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
        webhook_refusal = None if existing is None else _webhook_unreachable(kubectl)
        if webhook_refusal is not None:
            say(f"the operator runs without its admission webhook: {webhook_refusal}")

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
            webhooks=webhook_refusal is None,
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


def _webhook_unreachable(kubectl: DemoKubectl) -> str | None:
    """Why the apiserver in KUBECONFIG cannot call a webhook on this machine's loopback
    (the process mode's), or None: only a bare control plane on a loopback address (as
    `agent-mesh dev up --no-node` runs) is known to share this machine's loopback; a
    cluster with nodes (kind, k3d) runs its apiserver in a container or elsewhere."""
    server = kubectl("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
    host = urllib.parse.urlsplit(server.strip()).hostname or ""
    if host != "localhost" and not _is_loopback(host):
        return f"the apiserver ({server.strip()}) is not on this machine's loopback"
    if kubectl("get", "nodes", "-o", "name").strip():
        return (
            "the cluster has nodes, so its apiserver likely runs in a container (kind, "
            "k3d), which cannot reach this machine's loopback; the CRDs' schema "
            "validation still applies"
        )
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _run_chart(*, once: bool, samples_dir: Path, timeout: float, image: str | None) -> int:
    """The chart mode: `helm upgrade --install` of charts/agent-mesh, the example agents as
    pods the operator runs (MeshAgents with spec.workload), the sample task; on the way out
    (--once, Ctrl-C, SIGTERM or an error) the namespaces' objects, the release and the
    namespaces go, and the node this started stops."""
    from agent_mesh.devcluster import node as devnode
    from agent_mesh.devcluster.binaries import ensure_helm

    chart = demo_chart.chart_dir()
    assert chart is not None  # _chart_mode_refusal said so
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # cleans up as Ctrl-C does
    with contextlib.ExitStack() as stack:
        existing = configured_kubeconfig()
        if existing is not None and image is not None:
            kubeconfig = check_kubeconfig(existing, "KUBECONFIG")
            say(f"chart mode on the cluster in KUBECONFIG ({kubeconfig}), image {image}")
            binary = kubectl_path() or str(ensure_binaries().kubectl)
            pull_policy = "IfNotPresent"
        else:
            with demo_chart.step(say, "chart mode: checking the binaries and the node's images"):
                binaries = ensure_binaries()
                node = devnode.prepare(binaries, state_root() / "demo" / "plane", detached=True)
            with demo_chart.step(say, "chart mode: starting the control plane and the local node"):
                node.start()
            stack.callback(_stop_node, node)
            kubeconfig, binary = node.kubeconfig, str(binaries.kubectl)
            image, pull_policy = node.images[0].name, "Never"
            say(f"the node runs the project's image {image} from its containerd")
        kubectl = DemoKubectl(binary, kubeconfig)
        helm = ensure_helm(say=say)

        for namespace in (OPERATOR_NAMESPACE, NAMESPACE):  # before the operator: served at once
            kubectl("create", "namespace", namespace, check=False)
        stack.callback(_delete_namespaces, kubectl)
        values = demo_chart.helm_values(image, NAMESPACE, pull_policy)
        stack.callback(_uninstall, helm, kubeconfig, kubectl)  # also after a Ctrl-C mid-install
        with demo_chart.step(say, f"helm upgrade --install {RELEASE_NAME} {chart}"):
            demo_chart.helm(
                helm, kubeconfig, "upgrade", "--install", RELEASE_NAME, str(chart),
                "-n", OPERATOR_NAMESPACE, *values,
            )  # fmt: skip
        with demo_chart.step(say, "waiting for the operator's pod to be ready"):
            kubectl(
                "rollout", "status", f"deployment/{RELEASE_NAME}", "-n", OPERATOR_NAMESPACE,
                f"--timeout={int(timeout)}s",
            )  # fmt: skip

        objects, tasks = demo_chart.chart_manifests(
            samples_dir, DEMO_AGENTS, image, pull_policy, OPERATOR_NAMESPACE
        )
        with demo_chart.step(say, f"applying {samples_dir} (the example agents as workloads)"):
            demo_chart.wait(
                "the webhook to admit the samples",
                lambda: _applied(kubectl, objects),
                timeout,
            )
        played = [
            o["metadata"]["name"] for o in objects if o.get("spec", {}).get("workload") is not None
        ]
        with demo_chart.step(say, f"waiting for the agents' pods ({', '.join(played)})"):
            demo_chart.wait(
                "the agents' pods to run and the agents to become healthy",
                lambda: _pods_healthy(kubectl, played),
                timeout,
            )
        with demo_chart.step(say, "applying the sample task and waiting for it"):
            for task in tasks:  # a task's spec is immutable: a second run replaces it
                name = task["metadata"]["name"]
                kubectl("delete", "meshtask", name, "-n", NAMESPACE, "--ignore-not-found")
            demo_chart.apply(kubectl, NAMESPACE, tasks)
            demo_chart.wait("the sample tasks to finish", lambda: _tasks_finished(kubectl), timeout)
        print(kubectl("get", "meshagents,meshtasks", "-n", NAMESPACE), flush=True)
        print(kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide"), flush=True)
        if once:
            say("--once: tearing the mesh down")
            return 0
        say(
            f"the mesh is up. In another shell:\n    export KUBECONFIG={kubeconfig}\n"
            f"    {binary} get meshagents,meshtasks,pods -n {NAMESPACE}\n"
            "Press Ctrl-C to stop it (the release, the namespaces and the node go)."
        )
        _wait_for_signal()
        say("stopping")
    return 0


RELEASE_NAME = demo_chart.RELEASE


def _applied(kubectl: DemoKubectl, objects: list[dict[str, Any]]) -> bool:
    """Applied, or False while the webhook's Service has no ready endpoint yet."""
    try:
        demo_chart.apply(kubectl, NAMESPACE, objects)
    except DevClusterError as refused:
        if "webhook" in str(refused):
            return False
        raise
    return True


def _pods_healthy(kubectl: DemoKubectl, agents: list[str]) -> bool:
    pods = demo_chart.agent_pods(kubectl, NAMESPACE)
    failed = [name for name, phase in pods.items() if phase in ("Failed", "Succeeded")]
    if failed:
        logs = kubectl("logs", "-n", NAMESPACE, failed[0], "--tail=30", check=False)
        raise DevClusterError(f"agent pod {failed[0]} ended:\n{logs}")
    items = json.loads(kubectl("get", "meshagents", "-n", NAMESPACE, "-o", "json"))["items"]
    health = {i["metadata"]["name"]: i.get("status", {}).get("healthStatus") for i in items}
    return all(health.get(name) == "healthy" for name in agents)


def _tasks_finished(kubectl: DemoKubectl) -> bool:
    items = json.loads(kubectl("get", "meshtasks", "-n", NAMESPACE, "-o", "json"))["items"]
    return all(
        i.get("status", {}).get("phase") in ("Completed", "Failed", "TimedOut") for i in items
    )


def _uninstall(helm: Path, kubeconfig: Path, kubectl: DemoKubectl) -> None:
    """The mesh's objects first, while the operator runs to let go of them, then the
    release (helm keeps the CRDs)."""
    with demo_chart.step(say, "deleting the demo's MeshTasks and MeshAgents, helm uninstall"):
        _delete_and_uninstall(helm, kubeconfig, kubectl)


def _delete_and_uninstall(helm: Path, kubeconfig: Path, kubectl: DemoKubectl) -> None:
    kubectl(
        "delete", "meshtasks,meshagents,aclpolicies", "--all", "-n", NAMESPACE,
        "--timeout=60s", check=False,
    )  # fmt: skip
    demo_chart.helm(
        helm, kubeconfig, "uninstall", RELEASE_NAME, "-n", OPERATOR_NAMESPACE, "--wait",
        check=False,
    )  # fmt: skip


def _delete_namespaces(kubectl: DemoKubectl) -> None:
    with demo_chart.step(say, f"deleting the namespaces {NAMESPACE} and {OPERATOR_NAMESPACE}"):
        kubectl(
            "delete", "namespace", NAMESPACE, OPERATOR_NAMESPACE, "--ignore-not-found",
            "--timeout=90s", check=False,
        )  # fmt: skip


def _stop_node(node: Any) -> None:
    with demo_chart.step(say, "stopping the node and the control plane"):
        node.stop()
