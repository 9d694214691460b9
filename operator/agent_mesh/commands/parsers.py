"""The flags of `agent-mesh submit`, `agents` and `tasks`, each with its environment
variable."""

from __future__ import annotations

import argparse
from typing import Any

from agent_mesh.commands import (
    EXIT_FAILED,
    EXIT_FAILURE,
    EXIT_STILL_RUNNING,
    EXIT_TIMED_OUT,
    EXIT_USAGE,
)
from agent_mesh.commands.options import label, positive, setting, whole


def _connection_settings(parser: argparse.ArgumentParser, *, all_namespaces: bool) -> None:
    setting(
        parser,
        "--kubeconfig",
        env="KUBECONFIG",
        help="kubeconfig file (default: ~/.kube/config, else in-cluster)",
    )
    setting(
        parser,
        "--namespace",
        "-n",
        env="AGENT_MESH_NAMESPACE",
        help="namespace (default: the kubeconfig context's, else default)",
    )
    if all_namespaces:
        setting(
            parser,
            "--all-namespaces",
            "-A",
            action="store_true",
            env="AGENT_MESH_ALL_NAMESPACES",
            help="list every namespace (overrides --namespace)",
        )


def add_user_commands(sub: Any) -> None:
    """submit, agents, tasks: the mesh as its users drive it, through the apiserver."""
    submit = sub.add_parser(
        "submit",
        help="create a MeshTask, follow it, print its result",
        description="Create a MeshTask and wait for it. Exit code: 0 Completed, "
        f"{EXIT_FAILED} Failed, {EXIT_TIMED_OUT} TimedOut, {EXIT_STILL_RUNNING} still "
        f"running at --wait-timeout, {EXIT_USAGE} bad input, {EXIT_FAILURE} an API error, "
        "130 interrupted (the task keeps running).",
    )
    _connection_settings(submit, all_namespaces=False)
    setting(
        submit,
        "--type",
        "-t",
        dest="task_type",
        env="AGENT_MESH_TASK_TYPE",
        help="spec.taskType (required unless --file sets it)",
    )
    setting(
        submit,
        "--capability",
        "-c",
        action="append",
        dest="capabilities",
        env="AGENT_MESH_TASK_CAPABILITIES",
        help="a required capability (repeatable; the variable: comma-separated)",
    )
    setting(submit, "--payload", "-p", env="AGENT_MESH_TASK_PAYLOAD", help="spec.payload as JSON")
    setting(
        submit,
        "--payload-file",
        env="AGENT_MESH_TASK_PAYLOAD_FILE",
        help="spec.payload from a JSON or YAML file (- reads stdin)",
    )
    setting(
        submit,
        "--file",
        "-f",
        dest="manifest",
        env="AGENT_MESH_TASK_FILE",
        help="a MeshTask manifest (YAML or JSON; - reads stdin); the flags override it",
    )
    setting(
        submit,
        "--name",
        env="AGENT_MESH_TASK_NAME",
        help="metadata.name (default: generated from the type)",
    )
    setting(
        submit,
        "--priority",
        choices=["low", "medium", "high", "critical"],
        env="AGENT_MESH_TASK_PRIORITY",
        help="spec.priority (default medium)",
    )
    setting(
        submit,
        "--timeout-seconds",
        type=whole,
        env="AGENT_MESH_TASK_TIMEOUT_SECONDS",
        help="spec.timeoutSeconds: limit of each attempt (default 300)",
    )
    setting(
        submit,
        "--retries",
        type=whole,
        env="AGENT_MESH_TASK_RETRIES",
        help="spec.retries (default 3)",
    )
    setting(
        submit,
        "--agent",
        env="AGENT_MESH_TASK_AGENT",
        help="spec.agentSelector.agentRef: pin the task to this MeshAgent",
    )
    setting(
        submit,
        "--label",
        "-l",
        action="append",
        dest="labels",
        type=label,
        env="AGENT_MESH_TASK_LABELS",
        help="KEY=VALUE label on the MeshTask (repeatable; the variable: comma-separated)",
    )
    setting(
        submit,
        "--no-wait",
        dest="wait",
        action="store_false",
        env="AGENT_MESH_WAIT",
        help="print the task's name and return once it is created; the variable says "
        "whether to wait (false: do not)",
    )
    setting(
        submit,
        "--wait-timeout",
        type=positive,
        default=600.0,
        env="AGENT_MESH_WAIT_TIMEOUT",
        help=f"seconds to wait for the end (default 600), then exit {EXIT_STILL_RUNNING}",
    )
    setting(
        submit,
        "--quiet",
        "-q",
        action="store_true",
        env="AGENT_MESH_QUIET",
        help="no progress lines on stderr, only the result",
    )

    agents = sub.add_parser(
        "agents", help="discovery query: the agents, their type, health and capabilities"
    )
    _connection_settings(agents, all_namespaces=True)
    setting(
        agents,
        "--capability",
        "-c",
        action="append",
        dest="capabilities",
        env="AGENT_MESH_AGENTS_CAPABILITIES",
        help="only agents holding this capability (repeatable: all of them; the variable: "
        "comma-separated)",
    )
    setting(
        agents,
        "--type",
        "-t",
        dest="agent_type",
        env="AGENT_MESH_AGENTS_TYPE",
        help="only agents of this spec.agentType",
    )
    setting(
        agents,
        "--health",
        choices=["pending", "healthy", "degraded", "unreachable"],
        env="AGENT_MESH_AGENTS_HEALTH",
        help="only agents in this health",
    )
    _outputsetting(agents)

    tasks = sub.add_parser("tasks", help="the MeshTasks and their phases")
    _connection_settings(tasks, all_namespaces=True)
    setting(
        tasks,
        "--phase",
        choices=["Pending", "Assigned", "Running", "Completed", "Failed", "TimedOut"],
        env="AGENT_MESH_TASKS_PHASE",
        help="only tasks in this phase",
    )
    setting(
        tasks,
        "--type",
        "-t",
        dest="task_type",
        env="AGENT_MESH_TASKS_TYPE",
        help="only tasks of this spec.taskType",
    )
    _outputsetting(tasks)


def _outputsetting(parser: argparse.ArgumentParser) -> None:
    setting(
        parser,
        "--output",
        "-o",
        choices=["table", "json"],
        default="table",
        env="AGENT_MESH_OUTPUT",
        help="table (default) or json (the objects as the apiserver returns them)",
    )
