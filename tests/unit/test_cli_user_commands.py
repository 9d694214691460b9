"""`agent-mesh submit`, `agents`, `tasks`: flags and their environment variables, the task
built from them, and the lines and tables printed. No cluster: the integration tests
(tests/integration/test_cli_against_operator.py) drive them against one."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_mesh import cli
from agent_mesh.commands import EXIT_FAILED, EXIT_STILL_RUNNING, EXIT_TIMED_OUT, CommandError
from agent_mesh.commands.listing import age, agent_matches, agent_row, table, task_row
from agent_mesh.commands.submit import EXIT_OF_PHASE, TaskRequest, build_manifest, describe
from agent_mesh.config import OperatorConfig

pytestmark = pytest.mark.unit


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, deeper in _subparsers(sub):
                    yield f"{name} {inner}", deeper


def test_every_option_of_every_command_names_its_environment_variable() -> None:
    commands = dict(_subparsers(cli._parser()))
    assert {"operator", "crds", "dev up", "demo", "submit", "agents", "tasks"} <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help and "[env " in action.help, f"{name} {action.option_strings}"
            env = action.help.rsplit("[env ", 1)[1].rstrip("]")
            assert env == "KUBECONFIG" or env.startswith("AGENT_MESH_"), (name, env)
            if name == "operator" and env != "KUBECONFIG":
                # read by the operator's settings, so the name is one they know
                assert env.removeprefix("AGENT_MESH_").lower() in OperatorConfig.model_fields


def test_a_variable_sets_an_option_and_the_flag_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MESH_TASK_PRIORITY", "high")
    monkeypatch.setenv("AGENT_MESH_WAIT", "false")
    monkeypatch.setenv("AGENT_MESH_WAIT_TIMEOUT", "7.5")
    monkeypatch.setenv("AGENT_MESH_TASK_CAPABILITIES", "a, b")
    args = cli._parser().parse_args(["submit", "-t", "x"])
    assert (args.priority, args.wait, args.wait_timeout) == ("high", False, 7.5)
    assert args.capabilities == ["a", "b"]
    args = cli._parser().parse_args(["submit", "-t", "x", "--priority", "low"])
    assert args.priority == "low"


@pytest.mark.parametrize(
    ("command", "env", "value", "said"),
    [
        ("submit", "AGENT_MESH_WAIT", "maybe", "AGENT_MESH_WAIT=maybe: must be true or false"),
        ("submit", "AGENT_MESH_TASK_PRIORITY", "urgent", "must be one of low, medium, high"),
        ("submit", "AGENT_MESH_WAIT_TIMEOUT", "-1", "must be a number of seconds above 0"),
        ("submit", "AGENT_MESH_TASK_RETRIES", "three", "_RETRIES=three: must be a whole"),
        ("submit", "AGENT_MESH_TASK_LABELS", "team", "_LABELS=team: must be KEY=VALUE"),
        ("tasks", "AGENT_MESH_OUTPUT", "yaml", "AGENT_MESH_OUTPUT=yaml: must be one of table"),
        ("demo", "AGENT_MESH_DEMO_ONCE", "sure", "AGENT_MESH_DEMO_ONCE=sure: must be true"),
    ],
)
def test_a_variable_that_does_not_parse_is_named_with_its_rule(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    env: str,
    value: str,
    said: str,
) -> None:
    monkeypatch.setenv(env, value)
    assert cli.main([command]) == cli.EXIT_USAGE
    assert said in capsys.readouterr().err


def test_a_bad_variable_of_another_command_does_not_stop_this_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENT_MESH_WAIT", "maybe")  # submit's
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["tasks"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "AGENT_MESH_WAIT" not in err and "no cluster" in err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["submit", "-t", "x", "--wait-timeout", "0"], "--wait-timeout: must be a number"),
        (["submit", "-t", "x", "--retries", "2.5"], "--retries: must be a whole number"),
        (["submit", "-t", "x", "--label", "team"], "--label/-l: must be KEY=VALUE"),
        (["agents", "--health", "fine"], "--health: invalid choice"),
        (["tasks", "--phase", "Succeeded"], "--phase: invalid choice"),
    ],
)
def test_a_bad_flag_is_named_with_its_rule(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == cli.EXIT_USAGE
    assert said in capsys.readouterr().err


def test_submit_without_a_cluster_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.main(["submit", "-t", "x"]) == cli.EXIT_USAGE
    assert "no cluster: set KUBECONFIG or --kubeconfig" in capsys.readouterr().err


def test_a_kubeconfig_that_is_not_one_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "kc"
    bad.write_text("just: text\n")
    assert cli.main(["agents", "--kubeconfig", str(bad)]) == cli.EXIT_USAGE
    assert f"--kubeconfig={bad}: not a kubeconfig" in capsys.readouterr().err


# --- the task built from the flags --------------------------------------------------------


def test_flags_make_the_meshtask() -> None:
    body = build_manifest(
        TaskRequest(
            task_type="summarize",
            capabilities=["summarize", "en"],
            payload='{"text": "hi"}',
            priority="high",
            timeout_seconds=30,
            retries=0,
            agent="worker-1",
            namespace="team-a",
            labels={"team": "a"},
        )
    )
    assert body["kind"] == "MeshTask" and body["apiVersion"] == "agentmesh.io/v1alpha1"
    assert body["metadata"] == {
        "generateName": "summarize-",
        "namespace": "team-a",
        "labels": {"team": "a"},
    }
    assert body["spec"] == {
        "taskType": "summarize",
        "requiredCapabilities": ["summarize", "en"],
        "payload": {"text": "hi"},
        "priority": "high",
        "timeoutSeconds": 30,
        "retries": 0,
        "agentSelector": {"agentRef": "worker-1"},
    }


def test_flags_override_a_manifest_file(tmp_path: Path) -> None:
    manifest = tmp_path / "task.yaml"
    manifest.write_text(
        "apiVersion: agentmesh.io/v1alpha1\nkind: MeshTask\nmetadata: {name: nightly}\n"
        "spec: {taskType: summarize, priority: low, payload: {text: old}}\n"
    )
    payload = tmp_path / "payload.yaml"
    payload.write_text("text: new\n")
    body = build_manifest(
        TaskRequest(manifest=str(manifest), priority="critical", payload_file=str(payload))
    )
    assert body["metadata"] == {"name": "nightly"}
    assert body["spec"] == {
        "taskType": "summarize",
        "priority": "critical",
        "payload": {"text": "new"},
    }


def test_the_payload_can_come_from_stdin() -> None:
    body = build_manifest(
        TaskRequest(task_type="t", payload_file="-"), stdin=io.StringIO('{"n": 1}')
    )
    assert body["spec"]["payload"] == {"n": 1}


@pytest.mark.parametrize(
    ("request_", "said"),
    [
        (TaskRequest(), "--type: required"),
        (TaskRequest(task_type="t", payload="{oops"), "--payload: not JSON"),
        (TaskRequest(task_type="t", payload="1", payload_file="p.json"), "give one, not both"),
        (
            TaskRequest(task_type="t", timeout_seconds=0),
            "spec.timeoutSeconds: Input should be greater than or equal to 1 (--timeout-seconds)",
        ),
        (TaskRequest(task_type="Not A Name"), "spec.taskType"),
        (TaskRequest(task_type="t", capabilities=["a", "a"]), "(--capability)"),
        (TaskRequest(task_type="t", agent="Worker_1"), "agentRef must be the name of a MeshAgent"),
        (TaskRequest(task_type="t", payload_file="/nonexistent/p.json"), "cannot read it"),
    ],
)
def test_bad_task_input_is_refused_naming_the_field_and_the_rule(
    request_: TaskRequest, said: str
) -> None:
    with pytest.raises(CommandError) as refused:
        build_manifest(request_)
    assert said in str(refused.value)
    assert refused.value.code == cli.EXIT_USAGE


def test_a_manifest_that_is_not_a_meshtask_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "agent.yaml"
    other.write_text("kind: MeshAgent\nspec: {agentType: worker}\n")
    with pytest.raises(CommandError, match="must be one MeshTask manifest"):
        build_manifest(TaskRequest(manifest=str(other)))
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [MeshTask\n")
    with pytest.raises(CommandError, match="not JSON or YAML"):
        build_manifest(TaskRequest(manifest=str(broken)))


def test_each_final_phase_has_its_own_exit_code() -> None:
    assert EXIT_OF_PHASE == {"Completed": 0, "Failed": EXIT_FAILED, "TimedOut": EXIT_TIMED_OUT}
    codes = {0, EXIT_FAILED, EXIT_TIMED_OUT, EXIT_STILL_RUNNING, cli.EXIT_USAGE, cli.EXIT_FAILURE}
    assert len(codes) == 6


# --- what is printed ------------------------------------------------------------------------


def _task(phase: str | None, **status: object) -> dict[str, object]:
    return {
        "metadata": {"name": "t1", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"taskType": "summarize"},
        "status": {"phase": phase, **status} if phase else {},
    }


def test_progress_lines_say_where_the_task_is_and_why() -> None:
    assert describe(_task(None)) == "Created"
    waiting = _task(
        "Pending",
        conditions=[
            {"type": "Assigned", "status": "False", "reason": "NoCapableAgent", "message": "none"}
        ],
    )
    assert describe(waiting) == "Pending - NoCapableAgent: none"
    assert describe(_task("Running", agentId="w1", attempt=2)) == "Running on agent w1 (attempt 2)"
    failed = describe(_task("Failed", agentId="w1", attempt=4, error="boom"))
    assert failed == "Failed on agent w1 (attempt 4) - boom"


def test_tables_line_up_like_kubectls() -> None:
    out = table(("NAME", "PHASE"), [("a-long-name", "Running"), ("b", "-")])
    assert out.splitlines() == ["NAME          PHASE", "a-long-name   Running", "b             -"]


def test_task_rows_and_ages() -> None:
    now = dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.UTC)
    row = task_row(_task("Completed", agentId="w1", attempt=1), now)
    assert row == ("t1", "summarize", "Completed", "w1", "1", "5m")
    assert [age(dt.timedelta(seconds=s)) for s in (3, 61, 7200, 200000)] == ["3s", "1m", "2h", "2d"]


def test_the_discovery_query_wants_every_capability_asked_for() -> None:
    agent = {
        "metadata": {"name": "w1"},
        "spec": {"agentType": "worker", "capabilities": ["summarize", "translate"]},
        "status": {"healthStatus": "healthy", "endpoint": "http://10.0.0.1:8080"},
    }
    assert agent_matches(agent, ["summarize", "translate"], "worker", "healthy")
    assert not agent_matches(agent, ["summarize", "review"], None, None)
    assert not agent_matches(agent, [], "critic", None)
    assert not agent_matches(agent, [], None, "degraded")
    assert agent_row(agent) == (
        "w1",
        "worker",
        "healthy",
        "0",
        "summarize,translate",
        "http://10.0.0.1:8080",
    )


def test_json_output_is_the_objects_as_listed() -> None:
    from agent_mesh.commands.listing import AGENT_COLUMNS, render

    items = [{"metadata": {"name": "w1", "namespace": "a"}, "spec": {}}]
    text = render(
        items,
        AGENT_COLUMNS,
        agent_row,
        all_namespaces=True,
        output="json",
        what="agents",
        namespace="a",
    )
    assert json.loads(text) == items
    empty = render(
        [],
        AGENT_COLUMNS,
        agent_row,
        all_namespaces=False,
        output="table",
        what="agents",
        namespace="a",
    )
    assert empty == "No agents found in namespace a."
