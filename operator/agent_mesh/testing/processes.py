"""An operator process and agent processes on 127.0.0.1, as the tests, the benches and the
demo run them: started with a death signal (they die with the process that started
them), their output in a log file, stopped by pid."""

from __future__ import annotations

import functools
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent_mesh.devcluster.ports import free_port
from agent_mesh.devcluster.processes import spawn, terminate
from agent_mesh.testing.kube import Kube, mesh_ca_bundle
from agent_mesh.testing.programs import example_program
from agent_mesh.testing.waiting import HarnessError, answers, wait_until

LOOPBACK = "127.0.0.1"
OPERATOR_COMMAND = (sys.executable, "-m", "agent_mesh")


def _exited(what: str, process: subprocess.Popen[bytes], log: Path) -> HarnessError:
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    return HarnessError(f"{what} exited with {process.returncode}:\n{tail}")


@dataclass
class OperatorProcess:
    """A running operator: where its endpoints listen, its log, and the CA bundle that
    verifies its mesh API."""

    process: subprocess.Popen[bytes]
    log: Path
    liveness_port: int
    mesh_port: int
    operator_namespace: str
    ca_file: Path | None = None
    """The CA bundle the operator published (read from its ConfigMap, as any client gets
    it); None when the mesh API serves plain http (--no-mesh-tls)."""
    mesh_host: str = LOOPBACK
    stop_grace: float = 10.0

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def mesh_url(self) -> str:
        scheme = "https" if self.ca_file is not None else "http"
        return f"{scheme}://{self.mesh_host}:{self.mesh_port}"

    @functools.cached_property
    def tls(self) -> ssl.SSLContext:
        """Verifies the mesh API (httpx `verify=`, urllib `context=`); without TLS it is
        simply never used."""
        if self.ca_file is None:
            return ssl.create_default_context()
        return ssl.create_default_context(cafile=str(self.ca_file))

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def check_running(self) -> None:
        """HarnessError, with the log's tail, when the operator has exited."""
        if self.process.poll() is not None:
            raise _exited("the operator", self.process, self.log)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs; what the operator keeps must be in the cluster."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after `stop_grace` seconds (nothing when it has exited)."""
        if self.process.poll() is None:
            terminate(self.process.pid, grace=self.stop_grace, child=self.process)


def start_operator(
    kube: Kube,
    kubeconfig: Path | str,
    log: Path,
    *extra_args: str,
    watch: str,
    operator_namespace: str,
    mesh_port: int | None = None,
    mesh_host: str = LOOPBACK,
    mesh_tls: bool = True,
    webhooks: bool = True,
    extra_env: Mapping[str, str] | None = None,
    command: Sequence[str] = OPERATOR_COMMAND,
    timeout: float = 60.0,
    stop_grace: float = 10.0,
) -> OperatorProcess:
    """`agent-mesh operator` (run as `command`) watching the namespaces `watch` matches,
    its keys and CA in `operator_namespace` (which must exist), its output in `log`.
    Returns once its liveness endpoint answers and its mesh API is ready, verified with
    the CA bundle it publishes (saved beside `log`); HarnessError (the process stopped)
    when it exits first or `timeout` passes. Loopback egress is on: the agents of tests,
    benches and the demo listen on 127.0.0.1, which an operator refuses by default."""
    liveness, mesh = free_port(), mesh_port or free_port()
    argv = [
        *command,
        "operator",
        "--namespace",
        watch,
        "--liveness-port",
        str(liveness),
        *(["--webhook-port", str(free_port())] if webhooks else ["--no-webhooks"]),
        "--mesh-port",
        str(mesh),
        "--mesh-host",
        mesh_host,
        "--operator-namespace",
        operator_namespace,
        *extra_args,
        *([] if mesh_tls else ["--no-mesh-tls"]),
    ]
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "AGENT_MESH_EGRESS_ALLOW_LOOPBACK": "true",
        # its scratch files (the webhook certificates) beside its log: an operator killed
        # with SIGKILL cannot remove them, and they should not pile up in the system's /tmp
        "TMPDIR": str(log.parent),
        **(extra_env or {}),
    }
    ca_file = log.with_name(f"{log.stem}-ca.crt") if mesh_tls else None
    process = spawn(argv, log, detached=False, env=env)
    operator = OperatorProcess(
        process, log, liveness, mesh, operator_namespace, ca_file, mesh_host, stop_grace
    )

    def live() -> bool:
        operator.check_running()
        return answers(f"http://{LOOPBACK}:{liveness}/healthz")

    def mesh_ready() -> bool:
        operator.check_running()
        if ca_file is None:
            return answers(f"{operator.mesh_url}/readyz")
        bundle = mesh_ca_bundle(kube, operator_namespace)  # re-read: it may be stale
        if bundle is None:
            return False
        ca_file.write_text(bundle)
        context = ssl.create_default_context(cafile=str(ca_file))
        return answers(f"{operator.mesh_url}/readyz", context)

    try:
        wait_until("the operator's liveness endpoint", live, timeout)
        wait_until("the operator's mesh API to be ready", mesh_ready, timeout)
    except BaseException:
        operator.stop()
        raise
    return operator


@dataclass
class AgentProcess:
    """An agent program serving `url`, its output in `log`."""

    agent_id: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def exited(self) -> bool:
        return self.process.poll() is not None

    def check_running(self) -> None:
        """HarnessError, with the log's tail, when the agent has exited."""
        if self.exited():
            raise _exited(f"agent {self.agent_id}", self.process, self.log)

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye, as when a node dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (the agent drains), then SIGKILL after `grace` seconds."""
        if self.process.poll() is None:
            terminate(self.process.pid, grace=grace, child=self.process)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until GET {url}/readyz answers 200: its token exchanged, keys and policies
        loaded. HarnessError (with the log's tail) when it exits first."""

        def ready() -> bool:
            self.check_running()
            return answers(f"{self.url}/readyz")

        wait_until(f"agent {self.agent_id} to serve", ready, timeout)


def launch_agent(
    program: str | Path,
    *,
    mesh_url: str,
    namespace: str,
    agent_id: str,
    credential: str,
    url: str,
    log: Path,
    ca_file: Path | str | None = None,
    settings: Mapping[str, str] | None = None,
    python: Sequence[str] = (sys.executable,),
) -> AgentProcess:
    """Start `program` (the name of an example agent, or the path of any SDK program) as
    agent `agent_id` of `namespace`, serving `url` (on 127.0.0.1), reaching the mesh API at
    `mesh_url` (verified with `ca_file`) with `credential`; not waiting for it (see
    AgentProcess.wait_ready). `settings`: more AGENT_MESH_* variables (docs/sdk.md);
    `python`: the interpreter and its options."""
    path = example_program(program) if isinstance(program, str) else program
    env = {
        **os.environ,
        "AGENT_MESH_URL": mesh_url,
        "AGENT_MESH_NAMESPACE": namespace,
        "AGENT_MESH_AGENT_ID": agent_id,
        "AGENT_MESH_CREDENTIAL": credential,
        "AGENT_MESH_HOST": LOOPBACK,
        "AGENT_MESH_PORT": url.rsplit(":", 1)[1],
        **({"AGENT_MESH_CA_FILE": str(ca_file)} if ca_file else {}),
        **(settings or {}),
    }
    process = spawn([*python, str(path)], log, detached=False, env=env)
    return AgentProcess(agent_id, process, url, log)
