"""Agent processes for tests: the programs in examples/, run as real processes serving
HTTP on 127.0.0.1, each registered as an external MeshAgent with its own credential."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent_mesh.devcluster.ports import free_port
from agent_mesh.devcluster.processes import spawn, terminate
from tests.conftest import Cluster, OperatorProcess, wait_for
from tests.meshhelpers import external_agent

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROGRAMS = Path(__file__).resolve().parent / "programs"
"""Agent programs written for tests (e.g. recorder.py, which shows what it was sent)."""


@dataclass
class AgentProcess:
    agent_id: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye, as when a node dies."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            terminate(self.process.pid, child=self.process)


def register(
    cluster: Cluster, namespace: str, agent_id: str, agent_type: str, capabilities: list[str]
) -> tuple[str, str]:
    """A MeshAgent reached at a fresh loopback port; (its URL, its credential)."""
    url = f"http://127.0.0.1:{free_port()}"
    credential = external_agent(
        cluster, namespace, agent_id, agent_type, capabilities=capabilities, endpoint=url
    )
    return url, credential


def launch(
    example: str | Path,
    operator: OperatorProcess,
    namespace: str,
    agent_id: str,
    url: str,
    credential: str,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    python: Sequence[str] = (sys.executable,),
) -> AgentProcess:
    """Start examples/`example` (or the program at path `example`) as agent `agent_id`
    (not waiting for it), run by `python` (the interpreter and its options; default: the
    tests' own)."""
    env = {
        **os.environ,
        "AGENT_MESH_URL": operator.mesh_url,
        "AGENT_MESH_NAMESPACE": namespace,
        "AGENT_MESH_AGENT_ID": agent_id,
        "AGENT_MESH_CREDENTIAL": credential,
        "AGENT_MESH_HOST": "127.0.0.1",
        "AGENT_MESH_PORT": url.rsplit(":", 1)[1],
        "AGENT_MESH_HEARTBEAT_SECONDS": "5",
        "AGENT_MESH_POLICY_SYNC_SECONDS": "1",
        "AGENT_MESH_DRAIN_SECONDS": "1",
        "AGENT_MESH_LOG_FORMAT": "text",
        **({"AGENT_MESH_CA_FILE": str(operator.ca_file)} if operator.ca_file else {}),
        **(extra_env or {}),
    }
    log = log_dir / f"{agent_id}.log"
    program = example if isinstance(example, Path) else EXAMPLES / example
    proc = spawn([*python, str(program)], log, detached=False, env=env)
    return AgentProcess(agent_id, proc, url, log)


def wait_ready(agent: AgentProcess, timeout: float = 60) -> None:
    def serving() -> bool:
        if agent.process.poll() is not None:
            pytest.fail(
                f"agent {agent.agent_id} exited with {agent.process.returncode}:\n"
                f"{agent.logs()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{agent.url}/readyz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(f"agent {agent.agent_id} to serve", serving, timeout=timeout)
