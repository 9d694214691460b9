"""`make demo`: a local mesh in one command.

Starts the local control plane (or uses $KUBECONFIG's cluster), installs the CRDs, runs the
operator, applies config/samples/ and prints `kubectl get meshagents -o wide`; then keeps
the mesh up until Ctrl-C (or tears it down at once with --once) and cleans up after itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from agent_mesh.api.crdgen import crd_files
from agent_mesh.devcluster import ControlPlane, DevClusterError, ensure_binaries
from agent_mesh.devcluster.processes import spawn, terminate
from agent_mesh.devcluster.versions import state_root
from agent_mesh.kubeconfig import check_kubeconfig, configured_kubeconfig
from agent_mesh.ports import free_port

NAMESPACE = "agent-mesh-demo"
OPERATOR_NAMESPACE = "agent-mesh-system"
_REPO = Path(__file__).resolve().parents[2]


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


class Kubectl:
    """kubectl bound to one kubeconfig; failures raise with kubectl's own message."""

    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [self.binary, *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise DevClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout


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


def run(*, once: bool, samples: Path | None, timeout: float) -> int:
    samples_dir = _samples_dir(samples)
    workdir = state_root() / "demo"
    with contextlib.ExitStack() as stack:
        existing = configured_kubeconfig()
        if existing is not None:
            kubeconfig = check_kubeconfig(existing, "KUBECONFIG")
            say(f"using the cluster in KUBECONFIG ({kubeconfig})")
            from agent_mesh.cli import kubectl_path

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
            stdin="---\n".join(crd_files().values()),
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
            env=kubectl.env,
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
        say(f"applying {samples_dir}")
        kubectl("apply", "-n", NAMESPACE, "-f", str(samples_dir))

        def agents_registered() -> bool:
            operator_live()
            items = json.loads(kubectl("get", "meshagents", "-n", NAMESPACE, "-o", "json"))
            return all(i.get("status", {}).get("healthStatus") for i in items["items"])

        _wait("the agents to register", agents_registered, timeout)
        print(kubectl("get", "meshagents", "-n", NAMESPACE, "-o", "wide"), flush=True)
        print(kubectl("get", "meshtasks,aclpolicies", "-n", NAMESPACE), flush=True)
        if once:
            say("--once: tearing the mesh down")
            return 0
        say(
            f"the mesh is up. In another shell:\n    export KUBECONFIG={kubeconfig}\n"
            f"    {binary} get meshagents -n {NAMESPACE} -o wide\n"
            f"The mesh API is at http://127.0.0.1:{mesh_port} (JWKS: /.well-known/jwks.json).\n"
            "Press Ctrl-C to stop it."
        )
        _wait_for_signal()
        say("stopping")
    return 0


def _wait_for_signal() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
