"""One call to the operator's mesh API as an agent: with the agent's token, exchanged
once more when the mesh refuses it (a rotated key, a revoked token), and the mesh's JSON
error turned back into the MeshError it was. MeshClient and the agent's Gate share it.
An answer larger than `max_bytes` is not read (ResponseTooLargeError)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import aiohttp

from agent_mesh.domain.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    MeshError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnavailableError,
    ValidationError,
)
from agent_mesh.sdk.identity import TokenSource, retry_after_of
from agent_mesh.transport.client import RESPONSE_MAX_BYTES, read_body

_ERRORS: Final[dict[int, type[MeshError]]] = {
    400: ValidationError,
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: TooManyRequestsError,
    503: UnavailableError,
}


async def call_mesh(
    session: aiohttp.ClientSession,
    tokens: TokenSource,
    method: str,
    path: str,
    params: Sequence[tuple[str, str]] = (),
    *,
    body: Any = None,
    client_timeout: aiohttp.ClientTimeout | None = None,
    authenticated: bool = True,
    max_bytes: int = RESPONSE_MAX_BYTES,
) -> Any:
    """The JSON answer of a 200 or 202; otherwise the mesh's error, raised."""
    url = f"{tokens.mesh_url}{path}"
    extra: dict[str, Any] = {} if client_timeout is None else {"timeout": client_timeout}
    if body is not None:
        extra["json"] = body
    for attempt in range(2):
        headers = {"Authorization": f"Bearer {await tokens.token()}"} if authenticated else {}
        try:
            async with session.request(
                method,
                url,
                params=params,
                headers=headers,
                ssl=tokens.ssl,
                allow_redirects=False,  # a 3xx is an error, the token goes nowhere else
                **extra,
            ) as response:
                answer = _json(await read_body(response, max_bytes))
                status = response.status
                retry_after = retry_after_of(response.headers)
        except aiohttp.ClientError as error:
            raise tokens.unreachable(error) from error
        if status == 401 and authenticated and not attempt:
            tokens.invalidate()  # rotated key or revoked token: exchange once more
            continue
        if status in (200, 202):
            return answer
        detail = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise error_from_wire(status, detail, answer, retry_after)
    raise AssertionError("unreachable")


def _json(raw: bytes) -> Any:
    """The decoded answer; None for an empty body (as aiohttp's `json()` has it)."""
    return json.loads(raw) if raw.strip() else None


def error_from_wire(
    status: int, detail: Any, answer: Any = None, retry_after: float | None = None
) -> MeshError:
    """The MeshError a `{"code", "message", "field"}` error body (answered with HTTP
    `status`) stands for."""
    detail = detail if isinstance(detail, dict) else {}
    return _ERRORS.get(status, MeshError)(
        str(detail.get("message") or answer or detail),
        field=detail.get("field"),
        code=detail.get("code"),
        retry_after=retry_after,
    )
