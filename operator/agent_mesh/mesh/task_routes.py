"""Task routes of the mesh API: submit tasks (the fast path), read them back, and take the
later result of an agent that accepted a dispatch with 202. docs/tasks.md is the
reference; DESIGN §2 says what each call needs.

- `POST /v1/tasks` (`execute tasks` in the target namespace): one task, or
  `{"tasks": [...]}`; with `wait` (default) the answer comes when every task has ended
  or the wait bound passed, else at once with the ids.
- `GET /v1/tasks/{id}` (`read tasks` there; the result needs `read results` too).
- `POST /v1/tasks/{id}/result`: only the agent the current attempt is assigned to.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from agent_mesh.domain.acl import MeshCall
from agent_mesh.domain.errors import ConflictError, ForbiddenError, NotFoundError
from agent_mesh.mesh.fastpath import FastPath
from agent_mesh.mesh.http import read_json
from agent_mesh.mesh.identity_routes import AUTHORITY
from agent_mesh.mesh.task_wire import (
    answer_of,
    budget_seconds,
    encode,
    parse_report,
    parse_submission,
)

FAST_PATH: Final = web.AppKey("fast_path", FastPath)
_JSON: Final = "application/json"


async def submit(request: web.Request) -> web.Response:
    authority = request.app[AUTHORITY]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    data = await read_json(request)
    size = len(await request.read())  # read once and cached; chunked bodies have no length
    submission = parse_submission(data, size)
    namespace = submission.options.namespace or claims.namespace
    authority.authorize(claims, MeshCall.SUBMIT_TASK, namespace)
    fast = request.app[FAST_PATH]
    tickets = await fast.submit(submission, namespace, claims.sub)
    finished = False
    if submission.options.wait:
        bound = max(budget_seconds(t) for t in submission.tasks)
        if submission.options.wait_seconds is not None:
            bound = min(bound, submission.options.wait_seconds)
        finished = await fast.wait(tickets, bound)
    parts = [fast.answer(t) for t in tickets]
    body = b'{"tasks":[' + b",".join(parts) + b"]}" if submission.batch else parts[0]
    return web.Response(body=body, status=200 if finished else 202, content_type=_JSON)


async def get_task(request: web.Request) -> web.Response:
    authority = request.app[AUTHORITY]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    key = request.match_info["id"]
    found = await request.app[FAST_PATH].find(key)
    if found is None:
        raise NotFoundError(
            f"no task {key}: unknown, or a finished in-memory task whose answer is no longer "
            "kept (see docs/tasks.md)",
            field="id",
        )
    authority.authorize(claims, MeshCall.READ_TASK, found.namespace)
    answer = found.answer
    try:
        authority.authorize(claims, MeshCall.READ_RESULT, found.namespace)
    except ForbiddenError:
        answer = _without_result(answer)
    body = answer if isinstance(answer, bytes) else encode(answer)
    return web.Response(body=body, content_type=_JSON)


def _without_result(answer: bytes | dict[str, Any]) -> dict[str, Any]:
    """A caller who may read tasks but not results sees the task, and that a result
    exists, but not the result."""
    out = dict(json.loads(answer) if isinstance(answer, bytes) else answer)
    out.pop("result", None)
    if out.get("phase") == "Completed":
        out["resultWithheld"] = True
    return out


async def report(request: web.Request) -> web.Response:
    """An agent's answer for the attempt it took with 202 (`{attempt, result}` or
    `{attempt, error}`); 403 NotYourTask for anyone else, 409 StaleAttempt for an attempt
    that is over."""
    authority = request.app[AUTHORITY]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    key = request.match_info["id"]
    body = parse_report(await read_json(request))
    fast = request.app[FAST_PATH]
    try:
        state = fast.coordinator.report(
            key, claims.namespace, claims.sub, body.attempt, result=body.result, error=body.error
        )
    except NotFoundError:
        if await fast.find(key) is None:
            raise
        raise ConflictError(
            f"task {key} has already ended", field="attempt", code="StaleAttempt"
        ) from None
    except ForbiddenError as denied:
        authority.audit_identity_denial(claims, f"tasks/{key}", denied.message)
        raise
    return web.json_response({"accepted": True, **_brief(answer_of(state))})


def _brief(answer: dict[str, object]) -> dict[str, object]:
    """The task after the report, without echoing the result back."""
    return {k: v for k, v in answer.items() if k != "result"}


def add_routes(app: web.Application, fast_path: FastPath) -> None:
    app[FAST_PATH] = fast_path
    app.router.add_post("/v1/tasks", submit)
    app.router.add_get("/v1/tasks/{id}", get_task)
    app.router.add_post("/v1/tasks/{id}/result", report)
