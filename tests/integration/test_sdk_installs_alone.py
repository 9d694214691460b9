"""An agent author's install: `pip install agent-mesh` from this tree, no extras, in a fresh
venv. It brings the SDK's five dependencies and neither kopf nor a Kubernetes client;
examples/echo_worker.py run by that venv's Python joins the real operator (https, trusting
the operator's CA), turns healthy and answers a MeshTask, and serves its own metrics; the
`agent-mesh` command says what to install instead of failing with a traceback.

Marked `packaging`: the venv is made from the package index once per dependency set
(tests/support/venvs.py), after which each run only reinstalls the project's wheel.
"""

from __future__ import annotations

import subprocess
import urllib.request
from pathlib import Path

import pytest

from agent_mesh.testing import OperatorProcess
from tests.support.agents import launch, register
from tests.support.cluster import Cluster
from tests.support.tasks import agent_status, create_task, wait_phase
from tests.support.venvs import (
    ROOT,
    build_wheel,
    cached_venv,
    canonical,
    install_project,
    installed,
    isolated_env,
    requirements,
    run,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.packaging

NOT_FOR_AGENTS = frozenset(
    {"kopf", "kubernetes", "kubernetes-asyncio", "pydantic-settings", "pyyaml", "httpx"}
)
"""The operator extra's distributions, and the tests' own HTTP client."""


@pytest.fixture(scope="module")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a venv where `pip install <wheel of this tree>` (no extras) ran."""
    wheel = build_wheel(tmp_path_factory.mktemp("sdk-wheel"))
    python = cached_venv("sdk", [str(r) for r in requirements()], [wheel])
    install_project(python, wheel)
    return python


def test_installing_the_project_without_extras_brings_no_kopf_or_kubernetes(
    sdk_python: Path,
) -> None:
    present = installed(sdk_python)
    assert "agent-mesh" in present
    assert not NOT_FOR_AGENTS & present.keys(), sorted(NOT_FOR_AGENTS & present.keys())
    assert {canonical(r.name) for r in requirements()} <= present.keys()
    for name in ("kopf", "kubernetes", "kubernetes_asyncio"):
        shown = subprocess.run(
            [sdk_python, "-m", "pip", "show", name], capture_output=True, text=True, check=False
        )
        assert shown.returncode != 0 and "not found" in shown.stderr.lower(), shown.stdout
    run([sdk_python, "-m", "pip", "check"])


def test_the_sdk_and_the_strategy_interface_import_from_the_installed_package(
    sdk_python: Path,
) -> None:
    out = run(
        [
            sdk_python,
            "-I",
            "-c",
            "import sys, agent_mesh, agent_mesh.sdk, agent_mesh.domain.routing as r; "
            "assert r.Strategy and r.Candidate and r.TaskDemand and r.ENTRY_POINT_GROUP; "
            "print(agent_mesh.__file__); "
            "print(sorted(m.split('.')[0] for m in sys.modules))",
        ],
        env=isolated_env(),
    )
    location, modules = out.splitlines()
    assert Path(location).is_relative_to(sdk_python.parents[1]), location
    for operator_only in ("kopf", "kubernetes_asyncio", "pydantic_settings", "yaml"):
        assert f"'{operator_only}'" not in modules


def test_every_example_loads_with_the_sdk_alone(sdk_python: Path) -> None:
    examples = sorted((ROOT / "examples").glob("*.py"))
    assert examples
    run(
        [
            sdk_python,
            "-I",
            "-c",
            "import runpy, sys\nfor path in sys.argv[1:]: runpy.run_path(path, run_name='example')",
            *examples,
        ],
        env=isolated_env(),
    )


def test_the_cli_without_the_operator_extra_says_what_to_install(sdk_python: Path) -> None:
    result = subprocess.run(
        [sdk_python.parent / "agent-mesh", "operator"],
        capture_output=True,
        text=True,
        env=isolated_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "pip install 'agent-mesh[operator]'" in result.stderr, result.stderr
    assert "kopf" in result.stderr and "kubernetes_asyncio" in result.stderr


def test_echo_worker_from_the_sdk_only_venv_turns_healthy_and_answers_a_task(
    sdk_python: Path,
    cluster: Cluster,
    operator: OperatorProcess,
    namespace: str,
    tmp_path: Path,
) -> None:
    assert operator.ca_file is not None, "the mesh API serves https by default"
    url, credential = register(cluster, namespace, "echo-sdk", "worker", ["echo"])
    agent = launch(
        "echo_worker.py",
        operator,
        namespace,
        "echo-sdk",
        url,
        credential,
        tmp_path,
        python=(str(sdk_python), "-I"),  # -I: the venv's agent_mesh, not the tree's
    )
    try:
        agent.wait_ready()
        wait_for(
            "echo-sdk to turn healthy",
            lambda: agent_status(cluster, namespace, "echo-sdk").get("healthStatus") == "healthy",
            timeout=60,
        )
        create_task(
            cluster,
            namespace,
            "hello-sdk",
            taskType="echo",
            requiredCapabilities=["echo"],
            payload={"from": "an SDK-only install"},
        )
        status = wait_phase(cluster, namespace, "hello-sdk", {"Completed", "Failed", "TimedOut"})
        assert status["phase"] == "Completed", (status, agent.logs()[-3000:])
        assert status["result"] == {"from": "an SDK-only install"}
        assert status["agentId"] == "echo-sdk"
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'agentmesh_agent_tasks_total{outcome="ok",task_type="echo"} 1.0' in metrics
        assert "agentmesh_auth_" not in metrics and "agentmesh_tasks_" not in metrics
    finally:
        agent.stop()
