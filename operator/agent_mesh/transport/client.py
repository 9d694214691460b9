"""The transport client: one pooled aiohttp session per target agent.

Retries are for failures that cannot have reached the agent's handler, or that the agent
says are transient: connection errors and 502/503/504, after `retry_delay · 2^(n-1)`.
A 4xx is the caller's mistake and a timeout may have been executed: neither is retried.

Redirects are never followed (a 3xx is a failure: an agent has no reason to send one, and
following it would let a target pick where the next request goes). Response bodies are
read up to `response_max_bytes`. With an EgressGuard, calls to URLs of a checked class
(`egress=`) connect only to addresses its policy allows (transport/egress.py).

Tailnet names (hosts under `tailnet_domain`, the MagicDNS suffix) are reached through
`tailnet_proxy_url`, a tailscaled's outbound HTTP proxy on loopback: only it can resolve
them. Every other endpoint (direct mode) is dialled as before, never through that proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import aiohttp
import pydantic
from aiohttp.http_exceptions import LineTooLong
from yarl import URL

from agent_mesh.domain.egress import EgressClass, in_tailnet
from agent_mesh.domain.errors import (
    DispatchError,
    EgressRefusedError,
    MeshError,
    ResponseTooLargeError,
    ValidationError,
)
from agent_mesh.domain.message import Message
from agent_mesh.domain.stream import (
    FRAME_MAX_BYTES,
    NDJSON,
    StreamReader,
    StreamWriter,
    encode_frame,
    parse_frame,
)
from agent_mesh.domain.task_message import TaskRequest
from agent_mesh.transport.egress import EgressGuard
from agent_mesh.transport.metrics import (
    TRANSPORT_ACTIVE,
    TRANSPORT_DURATION,
    TRANSPORT_REQUESTS,
)

RETRYABLE_STATUS: Final = frozenset({502, 503, 504})
RESPONSE_MAX_BYTES: Final = 16 * 1024 * 1024
MESSAGES_PATH: Final = "/v1/messages"
STREAM_PATH: Final = "/v1/stream"

TokenProvider = Callable[[], Awaitable[str]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """DESIGN §5 defaults."""

    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 5.0
    """A dial that has not connected by then fails as a connection error, before the
    request is sent (safe to try elsewhere). Without it a call to a vanished pod's IP —
    nothing answers, nothing refuses — waited for its whole timeout."""
    retries: int = 3
    retry_delay_seconds: float = 1.0
    max_connections_per_agent: int = 10
    keepalive_seconds: float = 30.0
    """Idle connections older than this are closed (stale connections)."""
    use_tls: bool = False
    """Call agents over https even when their endpoint says http (off: the tailnet
    encrypts; on for direct mode across untrusted networks)."""
    ca_file: str | None = None
    """CA bundle that agents' certificates must chain to (default: the system's)."""
    proxy_url: str | None = None
    """An HTTP proxy every call goes through (for example a userspace tailnet proxy).
    Through a proxy the guard checks IP-literal hosts only: the proxy resolves names."""
    tailnet_proxy_url: str | None = None
    """The tailnet's outbound HTTP proxy (tailscaled --outbound-http-proxy-listen), used
    for hosts under `tailnet_domain` only."""
    tailnet_domain: str | None = None
    """The tailnet's MagicDNS suffix (without dots at either end)."""
    response_max_bytes: int = RESPONSE_MAX_BYTES
    """Largest response body read (a reply, an error, one line of a batch answer); a
    larger one fails the call with ResponseTooLarge, unread."""


class Outcome(StrEnum):
    OK = "ok"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    BAD_RESPONSE = "bad_response"
    NO_ENDPOINT = "no_endpoint"
    TLS_ERROR = "tls_error"
    """The agent's certificate did not verify: never retried, it will not change."""
    EGRESS_REFUSED = "egress_refused"
    """The egress policy refused the URL or an address its host resolved to; nothing was
    sent. Never retried."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to one message sent to one target."""

    target: str
    outcome: Outcome
    attempts: int
    status: int | None = None
    response: Message | None = None
    """The reply envelope (`send`)."""
    body: Any = None
    """The JSON answer (`post`)."""
    error: str | None = None
    code: str | None = None
    """The receiver's error code (`AccessDenied`, `AgentBusy`, ...) when it sent one."""
    field: str | None = None


class Transport:
    """Sends envelopes to agents' endpoints; close() when done."""

    def __init__(
        self,
        config: TransportConfig | None = None,
        token: TokenProvider | None = None,
        sleep: Sleep = asyncio.sleep,
        guard: EgressGuard | None = None,
    ) -> None:
        self.config = config or TransportConfig()
        self._token = token
        self._sleep = sleep
        self._guard = guard
        # by endpoint; by (endpoint, class) for the classes a guard checks
        self._sessions: dict[str | tuple[str, EgressClass], aiohttp.ClientSession] = {}
        self._timeout = self.timeout(self.config.timeout_seconds)
        self._tls: ssl.SSLContext | None = None
        if self.config.use_tls or self.config.ca_file:
            self._tls = ssl.create_default_context(cafile=self.config.ca_file)

    def timeout(self, total: float) -> aiohttp.ClientTimeout:
        """A call's deadline: `total` for all of it, the connect timeout for the dial."""
        return aiohttp.ClientTimeout(
            total=total, sock_connect=min(total, self.config.connect_timeout_seconds)
        )

    def proxy_for(self, endpoint: str) -> str | None:
        """The proxy a call to `endpoint` goes through: the tailnet's for a MagicDNS name,
        else the configured one (usually none)."""
        if self.config.tailnet_proxy_url and on_tailnet(endpoint, self.config.tailnet_domain):
            return self.config.tailnet_proxy_url
        return self.config.proxy_url

    def _session(
        self, endpoint: str, egress: EgressClass = EgressClass.DERIVED
    ) -> aiohttp.ClientSession:
        """The endpoint's pool. For a checked class, EgressRefusedError when its host is a
        refused IP literal; a name is checked (and pinned) as each connection resolves it."""
        guard = self._guard if egress is not EgressClass.DERIVED else None
        key = endpoint if guard is None else (endpoint, egress)
        session = self._sessions.get(key)
        if session is None or session.closed:
            # the tailnet encrypts, and serve answers plain HTTP on the agent's port
            tailnet = self.config.tailnet_proxy_url is not None and on_tailnet(
                endpoint, self.config.tailnet_domain
            )
            if self.config.use_tls and endpoint.startswith("http://") and not tailnet:
                endpoint_url = "https://" + endpoint.removeprefix("http://")
            else:
                endpoint_url = endpoint
            resolver = None
            if guard is not None:
                guard.check_literal(egress, endpoint_url, "endpoint")
                if self.proxy_for(endpoint) is None:  # a proxy resolves the names itself
                    resolver = guard.resolver(egress)
            connector = aiohttp.TCPConnector(
                limit=self.config.max_connections_per_agent,
                keepalive_timeout=self.config.keepalive_seconds,
                ssl=self._tls if self._tls is not None else True,
                resolver=resolver,
            )
            session = aiohttp.ClientSession(
                base_url=endpoint_url,
                connector=connector,
                timeout=self._timeout,
                json_serialize=json.dumps,
            )
            self._sessions[key] = session
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    async def _headers(self, content_type: str, token: str | None) -> dict[str, str]:
        headers = {"Content-Type": content_type}
        if token is None and self._token is not None:
            token = await self._token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def send(
        self,
        endpoint: str,
        message: Message,
        path: str = MESSAGES_PATH,
        *,
        token: str | None = None,
        egress: EgressClass = EgressClass.DERIVED,
    ) -> Delivery:
        """POST the envelope, retrying where safe; never raises for the target's failures.
        `token` overrides the transport's token provider for this call; `egress` is who
        chose the endpoint (checked by the guard unless DERIVED)."""
        return await self._send_encoded(endpoint, _encode(message), path, token, egress)

    async def _send_encoded(
        self, endpoint: str, body: str, path: str, token: str | None, egress: EgressClass
    ) -> Delivery:
        headers = await self._headers("application/json", token)
        return await self._deliver(endpoint, path, body, headers, None, None, egress, reply=True)

    async def post(
        self,
        endpoint: str,
        path: str,
        payload: Any,
        *,
        token: str | None = None,
        timeout_seconds: float | None = None,
        retries: int | None = None,
        egress: EgressClass = EgressClass.DERIVED,
    ) -> Delivery:
        """POST `payload` as JSON (a TaskRequest as its wire form); the JSON answer is
        `Delivery.body`. Retries as the module docstring says (`retries` overrides the
        configured count, 0 for callers that fail over themselves); `timeout_seconds`
        overrides the per-request timeout; `egress` as for `send`."""
        headers = await self._headers("application/json", token)
        body = payload.to_json() if isinstance(payload, TaskRequest) else json.dumps(payload)
        return await self._deliver(
            endpoint, path, body, headers, timeout_seconds, retries, egress, reply=False
        )

    async def _deliver(
        self,
        endpoint: str,
        path: str,
        body: str,
        headers: Mapping[str, str],
        timeout_seconds: float | None,
        retries: int | None,
        egress: EgressClass,
        *,
        reply: bool,
    ) -> Delivery:
        limit = self.config.retries if retries is None else retries
        attempts = 0
        while True:
            attempts += 1
            delivery = await self._attempt(
                endpoint, path, body, headers, attempts, timeout_seconds, egress, reply
            )
            retryable = delivery.outcome is Outcome.CONNECT_ERROR or (
                delivery.outcome is Outcome.HTTP_ERROR and delivery.status in RETRYABLE_STATUS
            )
            if not retryable or attempts > limit:
                _REQUESTS_BY_OUTCOME[delivery.outcome].inc()
                return delivery
            await self._sleep(self.config.retry_delay_seconds * 2 ** (attempts - 1))

    async def _attempt(
        self,
        endpoint: str,
        path: str,
        body: str,
        headers: Mapping[str, str],
        attempts: int,
        timeout_seconds: float | None,
        egress: EgressClass,
        reply: bool = False,
    ) -> Delivery:
        """One HTTP attempt; `reply` parses the answer as a mesh Message (`response`),
        otherwise as any JSON (`body`)."""
        started = time.perf_counter()
        timeout = timeout_seconds if timeout_seconds is not None else self.config.timeout_seconds
        client_timeout = self._timeout if timeout_seconds is None else self.timeout(timeout)
        TRANSPORT_ACTIVE.inc()
        try:
            if path[:1] != "/" or path[1:2] == "/":  # "//host/x" would replace the origin
                raise EgressRefusedError(f"path {path!r} must start with a single '/'")
            async with self._session(endpoint, egress).post(
                path,
                data=body,
                headers=headers,
                proxy=self.proxy_for(endpoint),
                timeout=client_timeout,
                allow_redirects=False,
            ) as resp:
                if 300 <= resp.status < 400:
                    return Delivery(
                        endpoint,
                        Outcome.HTTP_ERROR,
                        attempts,
                        status=resp.status,
                        error=redirect_refused(resp),
                        code="RedirectRefused",
                    )
                try:
                    raw = await read_body(resp, self.config.response_max_bytes)
                except ResponseTooLargeError as error:
                    return Delivery(
                        endpoint,
                        Outcome.BAD_RESPONSE,
                        attempts,
                        status=resp.status,
                        error=error.message,
                        code=error.code,
                    )
                if resp.status >= 400:
                    code, message, field = _error_detail(raw)
                    return Delivery(
                        endpoint,
                        Outcome.HTTP_ERROR,
                        attempts,
                        status=resp.status,
                        error=message,
                        code=code,
                        field=field,
                    )
                if not raw:
                    return Delivery(endpoint, Outcome.OK, attempts, status=resp.status)
                if reply:
                    try:
                        envelope = Message.model_validate_json(raw)
                    except pydantic.ValidationError as error:
                        return Delivery(
                            endpoint,
                            Outcome.BAD_RESPONSE,
                            attempts,
                            status=resp.status,
                            error=f"response is not a mesh message: {error.errors()[0]['msg']}",
                        )
                    return Delivery(
                        endpoint, Outcome.OK, attempts, status=resp.status, response=envelope
                    )
                try:
                    answer = json.loads(raw)
                except ValueError as error:
                    return Delivery(
                        endpoint,
                        Outcome.BAD_RESPONSE,
                        attempts,
                        status=resp.status,
                        error=f"response is not JSON: {error}",
                    )
                return Delivery(endpoint, Outcome.OK, attempts, status=resp.status, body=answer)
        except EgressRefusedError as error:
            return Delivery(
                endpoint, Outcome.EGRESS_REFUSED, attempts, error=error.message, code=error.code
            )
        except aiohttp.ConnectionTimeoutError:
            return Delivery(
                endpoint, Outcome.CONNECT_ERROR, attempts, error=not_connected(self.config)
            )
        except TimeoutError:
            return Delivery(
                endpoint, Outcome.TIMEOUT, attempts, error=f"no response within {timeout:g} s"
            )
        except aiohttp.ClientSSLError as error:
            return Delivery(endpoint, Outcome.TLS_ERROR, attempts, error=str(error))
        except aiohttp.ClientConnectionError as error:
            return Delivery(endpoint, Outcome.CONNECT_ERROR, attempts, error=str(error))
        finally:
            TRANSPORT_ACTIVE.dec()
            TRANSPORT_DURATION.observe(time.perf_counter() - started)

    async def request(
        self, endpoint: str, message: Message, *, token: str | None = None
    ) -> Message:
        """Request/response: the agent's reply, correlated to `message`, or DispatchError.
        `token` overrides the transport's token provider for this call."""
        delivery = await self.send(endpoint, message, token=token)
        if delivery.outcome is not Outcome.OK or delivery.response is None:
            raise DispatchError(
                f"{endpoint}: {delivery.outcome.value}"
                + (f" {delivery.status}" if delivery.status else "")
                + (f": {delivery.error}" if delivery.error else ""),
                code=delivery.code or f"Dispatch{delivery.outcome.value.title().replace('_', '')}",
                field=delivery.field,
            )
        if delivery.response.correlation_id != message.message_id:
            raise DispatchError(
                f"{endpoint}: reply correlates to {delivery.response.correlation_id!r}, "
                f"not to request {message.message_id!r}",
                code="DispatchBadResponse",
            )
        return delivery.response

    async def broadcast(
        self,
        targets: Mapping[str, str],
        message: Message,
        *,
        token: str | None = None,
        tokens: Mapping[str, str] | None = None,
        egress: Mapping[str, EgressClass] | None = None,
    ) -> dict[str, Delivery]:
        """Send to every target (name → endpoint) in parallel; one outcome per target.
        `tokens` gives each target its own token (by name), `token` one for all;
        `egress`: each target's class (default DERIVED)."""
        names = list(targets)
        body = _encode(message)  # once, not once per target
        classes = egress or {}
        results: list[Any] = await asyncio.gather(
            *(
                self._send_encoded(
                    targets[name],
                    body,
                    MESSAGES_PATH,
                    tokens.get(name, token) if tokens is not None else token,
                    classes.get(name, EgressClass.DERIVED),
                )
                for name in names
            )
        )
        return dict(zip(names, results, strict=True))

    @contextlib.asynccontextmanager
    async def stream(
        self,
        endpoint: str,
        opening: Message,
        chunks: AsyncIterable[Any] | None = None,
        *,
        token: str | None = None,
    ) -> AsyncIterator[AsyncIterator[Any]]:
        """Open a stream: `opening` (a request naming the receiver's handler in
        `metadata.stream`), then `chunks` as they are produced, then `complete`; yields
        the receiver's chunks, in order, as they arrive.

        Both directions are read only as fast as they are consumed, so neither side holds
        more than a few socket buffers of a large stream. A stream is never retried: the
        receiver may have consumed part of it. `timeout_seconds` bounds the wait for each
        frame, not the whole stream. A stream that ends without `complete`, or with an
        error frame, raises rather than looking finished. `token` overrides the
        transport's token provider.
        """
        headers = await self._headers(NDJSON, token)
        headers["Accept"] = NDJSON
        writer = StreamWriter(opening, reply=False)
        failed: list[BaseException] = []

        async def body() -> AsyncIterator[bytes]:
            yield encode_frame(opening)
            if chunks is not None:
                try:
                    async for part in chunks:
                        yield encode_frame(writer.chunk(part))
                except Exception as error:  # tell the receiver, then the caller
                    failed.append(error)
                    mesh = (
                        error
                        if isinstance(error, MeshError)
                        else MeshError(f"the stream's source failed: {error}", code="SourceFailed")
                    )
                    yield encode_frame(writer.complete(mesh))
                    return
            yield encode_frame(writer.complete())

        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.config.connect_timeout_seconds,
            sock_read=self.config.timeout_seconds,
        )
        started = time.perf_counter()
        outcome = Outcome.OK
        TRANSPORT_ACTIVE.inc()
        try:
            async with self._session(endpoint).post(
                STREAM_PATH,
                data=body(),
                headers=headers,
                timeout=timeout,
                proxy=self.proxy_for(endpoint),
                allow_redirects=False,
            ) as response:
                if 300 <= response.status < 400:
                    outcome = Outcome.HTTP_ERROR
                    raise DispatchError(
                        f"{endpoint}: {redirect_refused(response)}", code="RedirectRefused"
                    )
                if response.status >= 400:
                    outcome = Outcome.HTTP_ERROR
                    raw = await read_body(response, self.config.response_max_bytes)
                    raise _refused(endpoint, response.status, raw)
                reader = StreamReader(opening)

                async def parts() -> AsyncIterator[Any]:
                    while True:
                        line = await read_frame(response.content)
                        if not line.endswith(b"\n"):
                            raise reader.truncated()
                        done, payload = reader.accept(parse_frame(line))
                        if done:
                            return
                        yield payload

                try:
                    yield parts()
                except MeshError:
                    if failed:  # the receiver only echoes our source's failure back
                        raise failed[0] from None
                    raise
                if failed:
                    raise failed[0]
        except TimeoutError:
            outcome = Outcome.TIMEOUT
            raise DispatchError(
                f"{endpoint}: no stream frame within {self.config.timeout_seconds} s",
                code="DispatchTimeout",
            ) from None
        except aiohttp.ClientSSLError as error:
            outcome = Outcome.TLS_ERROR
            raise DispatchError(f"{endpoint}: {error}", code="DispatchTlsError") from error
        except aiohttp.ClientConnectionError as error:
            outcome = Outcome.CONNECT_ERROR
            raise DispatchError(f"{endpoint}: {error}", code="DispatchConnectError") from error
        except BaseException:
            if outcome is Outcome.OK:
                outcome = Outcome.BAD_RESPONSE
            raise
        finally:
            TRANSPORT_ACTIVE.dec()
            TRANSPORT_DURATION.observe(time.perf_counter() - started)
            _REQUESTS_BY_OUTCOME[outcome].inc()


async def read_frame(stream: aiohttp.StreamReader) -> bytes:
    """The next NDJSON frame of a stream (either side), within FRAME_MAX_BYTES; what is
    left at the end (without a newline) when the stream stops early."""
    try:
        return await stream.readuntil(b"\n", max_size=FRAME_MAX_BYTES)
    except LineTooLong:
        raise ValidationError(
            f"a stream frame is larger than {FRAME_MAX_BYTES} bytes",
            field="body",
            code="FrameTooLarge",
        ) from None


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body if it is at most `limit` bytes (after decompression); otherwise
    ResponseTooLargeError naming the limit, with the rest left unread and the connection
    closed."""
    length = response.content_length
    if length is not None and not response.headers.get("Content-Encoding"):
        if length <= limit:  # the common case: read exactly that (no decompression)
            return await response.read()
    elif length is None or length <= limit:
        body = bytearray()
        while len(body) <= limit:
            chunk = await response.content.read(limit + 1 - len(body))
            if not chunk:
                return bytes(body)
            body += chunk
    response.close()
    raise ResponseTooLargeError(
        f"the response from {response.url.origin()} is larger than the {limit}-byte "
        "response limit: not read",
        code="ResponseTooLarge",
    )


def on_tailnet(endpoint: str, tailnet_domain: str | None) -> bool:
    """Whether `endpoint`'s host is a MagicDNS name of the tailnet `tailnet_domain`."""
    try:
        host = URL(endpoint).host or ""
    except ValueError:
        return False
    return in_tailnet(host, tailnet_domain)


def redirect_refused(response: aiohttp.ClientResponse) -> str:
    """The error of a 3xx: redirects are not followed."""
    where = response.headers.get("Location", "")
    return f"answered {response.status} (redirect to {where!r}): redirects are not followed"


def _encode(message: Message) -> str:
    return message.model_dump_json(by_alias=True, exclude_none=True)


_REQUESTS_BY_OUTCOME: Final = {o: TRANSPORT_REQUESTS.labels(outcome=o.value) for o in Outcome}


def _error_detail(raw: bytes) -> tuple[str | None, str, str | None]:
    """(code, message, field) of a receiver's JSON error body; the raw text otherwise."""
    try:
        detail = json.loads(raw)["error"]
        return str(detail["code"]), str(detail["message"]), detail.get("field")
    except (ValueError, KeyError, TypeError):
        return None, raw[:512].decode(errors="replace"), None


def _refused(endpoint: str, status: int, raw: bytes) -> DispatchError:
    """The receiver's error as a DispatchError that keeps its code and field."""
    code, message, field = _error_detail(raw)
    return DispatchError(
        f"{endpoint}: {status} {code or ''}: {message}",
        field=field,
        code=code or "DispatchHttpError",
    )


def not_connected(config: TransportConfig) -> str:
    """The error of a dial that ran out of its connect timeout."""
    return f"not connected within {config.connect_timeout_seconds:g} s (nothing answered the dial)"
