"""`agent-mesh submit`: a MeshTask from flags or a manifest, followed to its end; the exit
code says how it ended (0 Completed, 3 Failed, 4 TimedOut, 5 still running)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import yaml

from agent_mesh.api.meshtask import MeshTaskSpec
from agent_mesh.commands import (
    EXIT_FAILED,
    EXIT_STILL_RUNNING,
    EXIT_TIMED_OUT,
    EXIT_USAGE,
    CommandError,
)
from agent_mesh.commands.kubeclient import (
    GROUP,
    VERSION,
    Connection,
    connect,
    failures,
)
from agent_mesh.domain.errors import ValidationError
from agent_mesh.domain.wire import validate

EXIT_OF_PHASE: Final = {"Completed": 0, "Failed": EXIT_FAILED, "TimedOut": EXIT_TIMED_OUT}
"""How a task ended, as `submit`'s exit code."""

FLAG_OF_FIELD: Final = {
    "spec.taskType": "--type",
    "spec.requiredCapabilities": "--capability",
    "spec.payload": "--payload",
    "spec.priority": "--priority",
    "spec.timeoutSeconds": "--timeout-seconds",
    "spec.retries": "--retries",
    "spec.agentSelector.agentRef": "--agent",
}
POLL_SECONDS: Final = 0.5


@dataclass
class TaskRequest:
    """What the flags (or their environment variables) ask for; None: not given."""

    task_type: str | None = None
    capabilities: Sequence[str] = ()
    payload: str | None = None
    payload_file: str | None = None
    manifest: str | None = None
    name: str | None = None
    namespace: str | None = None
    priority: str | None = None
    timeout_seconds: int | None = None
    retries: int | None = None
    agent: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


def build_manifest(request: TaskRequest, stdin: TextIO = sys.stdin) -> dict[str, Any]:
    """The MeshTask to create: the manifest file (if any) with the flags over it, its spec
    checked by the CRD's model, so a bad value is refused before the apiserver sees it."""
    body = _read_manifest(request.manifest, stdin) if request.manifest else {}
    meta = dict(body.get("metadata") or {})
    spec = dict(body.get("spec") or {})
    if request.task_type is not None:
        spec["taskType"] = request.task_type
    if request.capabilities:
        spec["requiredCapabilities"] = list(request.capabilities)
    if request.payload is not None and request.payload_file is not None:
        raise CommandError("--payload and --payload-file: give one, not both", EXIT_USAGE)
    if request.payload is not None:
        spec["payload"] = _parse_json(request.payload, "--payload")
    if request.payload_file is not None:
        spec["payload"] = _parse_document(_read(request.payload_file, stdin), request.payload_file)
    for key, value in (
        ("priority", request.priority),
        ("timeoutSeconds", request.timeout_seconds),
        ("retries", request.retries),
    ):
        if value is not None:
            spec[key] = value
    if request.agent is not None:
        spec["agentSelector"] = {**(spec.get("agentSelector") or {}), "agentRef": request.agent}
    if "taskType" not in spec:
        raise CommandError(
            "--type: required (the task's spec.taskType), or a --file that sets it", EXIT_USAGE
        )
    try:
        validate(MeshTaskSpec, spec, "spec")
    except ValidationError as error:
        flag = next(
            (f for path, f in FLAG_OF_FIELD.items() if (error.field or "").startswith(path)), None
        )
        where = f" ({flag})" if flag else (f" (in {request.manifest})" if request.manifest else "")
        raise CommandError(f"{error.message}{where}", EXIT_USAGE) from None
    if request.name:
        meta = {k: v for k, v in meta.items() if k != "generateName"} | {"name": request.name}
    elif not meta.get("name"):
        meta["generateName"] = f"{spec['taskType']}-"[:58]
    if request.namespace:
        meta["namespace"] = request.namespace
    if request.labels:
        meta["labels"] = {**(meta.get("labels") or {}), **request.labels}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "MeshTask", "metadata": meta, "spec": spec}


def _read(path: str, stdin: TextIO) -> str:
    if path == "-":
        return stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{path}: cannot read it: {exc.strerror}", EXIT_USAGE) from exc


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(
            f"{where}: not JSON ({exc}); a string is quoted, for example '\"hello\"'", EXIT_USAGE
        ) from exc


def _parse_document(text: str, where: str) -> Any:
    """JSON or YAML (a superset)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CommandError(f"{where}: not JSON or YAML ({exc})", EXIT_USAGE) from exc


def _read_manifest(path: str, stdin: TextIO) -> dict[str, Any]:
    doc = _parse_document(_read(path, stdin), path)
    if not isinstance(doc, dict) or doc.get("kind") != "MeshTask":
        raise CommandError(
            f"{path}: must be one MeshTask manifest (kind: MeshTask, with a spec)", EXIT_USAGE
        )
    return doc


# --- following a task -----------------------------------------------------------------


def describe(task: Mapping[str, Any]) -> str:
    """One line for where the task is: phase, agent, attempt, and why it waits or failed."""
    status = task.get("status") or {}
    phase = status.get("phase") or "Created"
    parts = [phase]
    if status.get("agentId") and phase != "Pending":
        parts.append(f"on agent {status['agentId']}")
    if status.get("attempt"):
        parts.append(f"(attempt {status['attempt']})")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if phase == "Pending":
        waiting = conditions.get("Assigned") or {}
        if waiting.get("status") == "False" and waiting.get("message"):
            parts.append(f"- {waiting.get('reason')}: {waiting['message']}")
    if phase in ("Failed", "TimedOut") and status.get("error"):
        parts.append(f"- {status['error']}")
    return " ".join(parts)


async def submit(
    request: TaskRequest,
    *,
    kubeconfig: str | None,
    wait: bool,
    wait_timeout: float,
    quiet: bool,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Create the task; unless `wait` is off, follow it and print its result."""
    manifest = build_manifest(request)
    connection = await connect(kubeconfig)
    async with connection.api:
        namespace = manifest["metadata"].setdefault("namespace", connection.namespace)
        with failures("creating a MeshTask", f"namespace {namespace}"):
            created = await connection.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "meshtasks", manifest
            )
        name = created["metadata"]["name"]
        ref = f"meshtask/{name} -n {namespace}"
        if not wait:
            print(ref, file=out)
            return 0
        if not quiet:
            print(f"{ref} created", file=err)
        return await _follow(connection, namespace, name, wait_timeout, quiet, out, err, clock)


async def _follow(
    connection: Connection,
    namespace: str,
    name: str,
    wait_timeout: float,
    quiet: bool,
    out: TextIO,
    err: TextIO,
    clock: Callable[[], float],
) -> int:
    deadline = clock() + wait_timeout
    last = ""
    while True:
        with failures(f"reading meshtask/{name}", namespace):
            task = await connection.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "meshtasks", name
            )
        line = describe(task)
        if line != last and not quiet:
            print(f"  {line}", file=err)
        last = line
        phase = (task.get("status") or {}).get("phase")
        if phase in EXIT_OF_PHASE:
            if phase == "Completed":
                print(json.dumps((task.get("status") or {}).get("result"), indent=2), file=out)
            else:
                print(f"meshtask/{name}: {line}", file=err)
            return EXIT_OF_PHASE[phase]
        if clock() >= deadline:
            print(
                f"meshtask/{name} -n {namespace}: still {phase or 'not started'} after "
                f"--wait-timeout {wait_timeout:g} s; it keeps running (follow it with "
                f"`agent-mesh tasks -n {namespace}`)",
                file=err,
            )
            return EXIT_STILL_RUNNING
        await asyncio.sleep(POLL_SECONDS)
