"""The mesh's error hierarchy: each error knows its HTTP status, a stable code and the field.

Messages name the field, the rule and (where safe) the value, so a caller can fix the
request without reading the operator's logs.
"""

from __future__ import annotations

from typing import ClassVar


class MeshError(Exception):
    """Base of every error the mesh reports to a caller."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "Internal"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code or self.default_code
        self.retry_after = retry_after
        """Seconds after which a retry may succeed (sent as `Retry-After`), when known."""

    def to_wire(self) -> dict[str, dict[str, str | None]]:
        """The JSON error body: `{"error": {"code", "message", "field"}}`."""
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class ValidationError(MeshError):
    """The request is malformed or breaks a rule (HTTP 400)."""

    status = 400
    default_code = "InvalidRequest"


class AuthError(MeshError):
    """No verified identity: missing, malformed, expired or revoked credentials (HTTP 401)."""

    status = 401
    default_code = "Unauthenticated"


class ForbiddenError(MeshError):
    """A verified identity that the ACL does not allow to do this (HTTP 403)."""

    status = 403
    default_code = "Forbidden"


class NotFoundError(MeshError):
    """The named object does not exist (HTTP 404)."""

    status = 404
    default_code = "NotFound"


class ConflictError(MeshError):
    """The request conflicts with the current state (HTTP 409)."""

    status = 409
    default_code = "Conflict"


class PayloadTooLargeError(MeshError):
    """The body is larger than the server accepts (HTTP 413)."""

    status = 413
    default_code = "PayloadTooLarge"


class TooManyRequestsError(MeshError):
    """The caller went over a rate limit; retry after `retry_after` seconds (HTTP 429)."""

    status = 429
    default_code = "RateLimited"


class UnavailableError(MeshError):
    """A dependency (the apiserver, a key store) cannot answer now; retry later (HTTP 503)."""

    status = 503
    default_code = "Unavailable"


class DispatchError(MeshError):
    """A call to an agent failed: connection, timeout, or the agent's error (HTTP 502)."""

    status = 502
    default_code = "DispatchFailed"


class EgressRefusedError(ValidationError):
    """An outbound URL the egress policy refuses (docs/security.md, "Outbound requests");
    400 when it came in a request, a failed delivery when found at dispatch."""

    default_code = "EgressRefused"


class ResponseTooLargeError(DispatchError):
    """A response body over the reader's limit: not read further (HTTP 502)."""

    default_code = "ResponseTooLarge"
