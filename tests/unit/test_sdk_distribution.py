"""The SDK as its own install: what an agent imports needs nothing of the operator extra
and carries none of the operator's metrics; an Agent serves its own series; the CLI says
what to install when the operator extra is missing; the documented import paths exist."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agent_mesh.cli import OPERATOR_EXTRA
from agent_mesh.sdk import Agent, TaskContext
from agent_mesh.sdk.metrics import AgentMetrics

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_MODULES = ("kopf", "kubernetes", "kubernetes_asyncio", "pydantic_settings", "yaml")

WITHOUT_OPERATOR_EXTRA = f"""
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(OPERATOR_MODULES) | {"httpx"}!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""


def python_without_operator_extra(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter where the operator extra cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_OPERATOR_EXTRA + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_agents_import_the_sdk_transport_and_strategy_interface_without_the_operator_extra() -> (
    None
):
    result = python_without_operator_extra(
        "import agent_mesh.sdk, agent_mesh.transport.batching, agent_mesh.domain.routing\n"
        "import json\n"
        "from prometheus_client import CollectorRegistry, REGISTRY\n"
        "print(json.dumps([m.name for m in REGISTRY.collect() if 'agentmesh' in m.name]))\n"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [], (
        "importing the SDK registered series in prometheus_client's global registry"
    )


def test_the_cli_without_the_operator_extra_names_the_install_command_not_a_traceback() -> None:
    result = python_without_operator_extra(
        "from agent_mesh.cli import main\nsys.exit(main(['crds']))\n"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert "pip install 'agent-mesh[operator]'" in result.stderr
    for distribution in OPERATOR_EXTRA:
        assert distribution in result.stderr


def test_the_cli_still_answers_version_without_the_operator_extra() -> None:
    result = python_without_operator_extra("from agent_mesh.cli import main\nmain(['--version'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("agent-mesh ")


def test_the_cli_checks_exactly_the_operator_extra_that_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["operator"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in declared}
    assert names == set(OPERATOR_EXTRA)


def test_the_documented_public_import_paths_exist() -> None:
    from agent_mesh import sdk
    from agent_mesh.domain import routing
    from agent_mesh.transport import client

    for name in sdk.__all__:
        assert getattr(sdk, name) is not None
    assert routing.ENTRY_POINT_GROUP == "agent_mesh.strategies"
    for name in ("Strategy", "Candidate", "TaskDemand"):
        assert hasattr(routing, name)
    for name in ("Transport", "TransportConfig", "Delivery", "Outcome"):
        assert hasattr(client, name)
    docs = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")}
    assert "from agent_mesh.sdk import" in docs["sdk.md"]
    assert "from agent_mesh.transport.client import Transport" in docs["sdk.md"]
    assert (
        "from agent_mesh.domain.routing import Candidate, Strategy, TaskDemand"
        in (docs["tasks.md"])
    )


class LetEveryoneIn:
    """Stands in for the Gate: the metrics, not the checks, are under test here."""

    loaded, stale = True, False
    registry = CollectorRegistry()  # a gate's own series: none here

    async def authenticate(self, authorization: str | None) -> Any:
        return SimpleNamespace(namespace="ns", sub="caller", agent_type="orchestrator")

    def authorize(self, caller: Any, call: Any) -> None:
        return None


def serving(agent: Agent) -> TestClient[Any, Any]:
    agent._gate = LetEveryoneIn()  # type: ignore[assignment]
    return TestClient(TestServer(agent.app(), host="127.0.0.1"))


def worker() -> Agent:
    agent = Agent("worker", ["echo"])

    @agent.task("echo")
    async def echo(payload: Any, ctx: TaskContext) -> Any:
        return payload

    @agent.task("boom")
    async def boom(payload: Any, ctx: TaskContext) -> Any:
        raise RuntimeError("no")

    return agent


async def test_an_agent_serves_its_work_load_and_process_in_its_own_registry() -> None:
    first, second = worker(), worker()
    async with serving(first) as client, serving(second) as other:
        for task_type in ("echo", "echo", "boom", "unknown"):
            await client.post("/v1/tasks", json={"taskUid": task_type, "taskType": task_type})
        await client.get("/no/such/path")
        metrics = await (await client.get("/metrics")).text()
        others = await (await other.get("/metrics")).text()
    assert 'agentmesh_agent_tasks_total{outcome="ok",task_type="echo"} 1.0' in metrics
    assert 'agentmesh_agent_tasks_total{outcome="failed",task_type="boom"} 1.0' in metrics
    assert "unknown" not in metrics  # no handler, no run: labels stay bounded
    assert 'agentmesh_agent_requests_total{route="/v1/tasks",status="200"} 2.0' in metrics
    assert 'agentmesh_agent_requests_total{route="/v1/tasks",status="500"} 1.0' in metrics
    assert 'agentmesh_agent_requests_total{route="/v1/tasks",status="404"} 1.0' in metrics
    assert 'agentmesh_agent_requests_total{route="other",status="404"} 1.0' in metrics
    assert 'agentmesh_agent_task_duration_seconds_count{task_type="echo"} 1.0' in metrics
    assert "agentmesh_agent_active_tasks 0.0" in metrics
    assert "agentmesh_agent_max_concurrent_tasks 10.0" in metrics
    assert "# TYPE agentmesh_transport_requests_total counter" in metrics  # its outbound calls
    assert "process_cpu_seconds_total" in metrics
    assert "agentmesh_auth_" not in metrics and "agentmesh_tasks_" not in metrics
    assert "agentmesh_agent_tasks_total{" not in others  # each agent counts its own


async def test_a_task_cut_short_by_the_drain_counts_as_handed_back() -> None:
    metrics = AgentMetrics(lambda: 0, lambda: 1)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    run = asyncio.ensure_future(metrics.timed("slow", forever()))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    text = metrics.exposition()[0].decode()
    assert 'agentmesh_agent_tasks_total{outcome="handed_back",task_type="slow"} 1.0' in text
