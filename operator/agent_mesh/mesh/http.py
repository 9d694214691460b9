"""What every mesh route shares: JSON errors, body limits, body parsing, the caller.

Errors always have the shape `{"error": {"code", "message", "field"}}` so clients need one
error path; bad input names the field (as a JSON path in camelCase) and the rule.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import pydantic
from aiohttp import web

from agent_mesh.domain.errors import MeshError, PayloadTooLargeError, ValidationError
from agent_mesh.domain.jsondepth import DEFAULT_MAX_DEPTH, check_json_depth
from agent_mesh.domain.ratelimit import retry_after_seconds
from agent_mesh.domain.wire import validate as validate
from agent_mesh.mesh.limits import GUARD

logger = logging.getLogger("agent_mesh.mesh")

M = TypeVar("M", bound=pydantic.BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY_KEY: Final = web.AppKey("max_body_bytes", int)
MAX_DEPTH_KEY: Final = web.AppKey("max_json_depth", int)


def error_response(error: MeshError) -> web.Response:
    headers = None
    if error.retry_after is not None:
        headers = {"Retry-After": str(retry_after_seconds(error.retry_after))}
    return web.json_response(error.to_wire(), status=error.status, headers=headers)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON error body; unexpected ones are logged, not leaked.
    A declared oversize body is refused before a byte of it is read (one middleware
    rather than two: each layer costs on every call)."""
    length = request.content_length
    if length is not None and length > request.app[MAX_BODY_KEY]:
        return error_response(_too_large(request))
    guard = request.app.get(GUARD)
    try:
        if guard is not None:
            guard.admit(request)
        return await handler(request)
    except MeshError as error:
        if guard is not None and error.status == 401:
            guard.failed(request)
        return error_response(error)
    except web.HTTPRequestEntityTooLarge:
        return error_response(_too_large(request))
    except web.HTTPException as http:
        if http.status < 400:
            raise
        code = http.reason.replace(" ", "")
        wire = MeshError(http.reason, code=code)
        return web.json_response(wire.to_wire(), status=http.status)
    except Exception:
        logger.exception("mesh API %s %s failed", request.method, request.path)
        return error_response(MeshError("internal error; see the operator log"))


def _too_large(request: web.Request) -> PayloadTooLargeError:
    limit = request.app[MAX_BODY_KEY]
    return PayloadTooLargeError(
        f"request body is larger than the mesh API's limit of {limit} bytes",
        field="body",
    )


async def read_json(request: web.Request) -> Any:
    """The body as JSON; 400 naming `body` when it is not JSON or nests too deeply (checked
    before parsing: the parser would recurse), 413 when too large."""
    raw = await request.read()
    if not raw:
        raise ValidationError("request body is empty: send a JSON object", field="body")
    check_json_depth(raw, request.app.get(MAX_DEPTH_KEY, DEFAULT_MAX_DEPTH))
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValidationError(f"request body is not valid JSON: {error}", field="body") from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The body validated by `model`; the first problem is reported with its field path."""
    data = await read_json(request)
    return validate(model, data)
