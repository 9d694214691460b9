"""Batched task dispatch: a Transport whose task POSTs to one agent, issued in the same
turn of the event loop, travel as one `POST /v1/tasks/batch` call.

Why: per-request overhead, not routing, bounds dispatch (an HTTP round trip costs the
operator some hundred microseconds of CPU, a routing decision a few). The coordinator
needs no change: it still calls `post(endpoint, "/v1/tasks", task)` once per task (a
TaskRequest, agent_mesh.domain.task_message: the batch is encoded once from the typed
messages) and gets one Delivery per task. The coalescing happens underneath; a lone task
is a batch of one.

The agent streams the answers back as NDJSON, one line per task as each finishes
(`Accept: application/x-ndjson`), so a slow task does not hold back the answers of the
quick ones beside it, and each task keeps its own timeout. An agent without the batch
route (404/405) is remembered and gets one call per task from then on, the batch it
refused included: nothing of it ran. A batch is never retried as a whole; its tasks'
outcomes go back to the coordinator, which decides per task as for single calls.

Opt-in (operator setting `batch_dispatch`); one call per task stays the default.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp.http_exceptions import LineTooLong

from agent_mesh.domain.background import Background
from agent_mesh.domain.egress import EgressClass
from agent_mesh.domain.errors import EgressRefusedError, ResponseTooLargeError
from agent_mesh.domain.stream import NDJSON
from agent_mesh.domain.task_message import BATCH_MAX, TaskBatch, TaskRequest
from agent_mesh.transport.client import (
    Delivery,
    Outcome,
    Transport,
    TransportConfig,
    not_connected,
    read_body,
    redirect_refused,
)
from agent_mesh.transport.metrics import (
    TRANSPORT_ACTIVE,
    TRANSPORT_DURATION,
    TRANSPORT_REQUESTS,
)

TASKS_PATH: Final = "/v1/tasks"
BATCH_PATH: Final = "/v1/tasks/batch"
MAX_TASKS: Final = BATCH_MAX
"""The SDK agent's limit per batch."""
MAX_BYTES: Final = 512 * 1024
"""Half the SDK agent's body limit: a larger batch is split before it could be refused as
too large (one task alone, payload capped at 256 KiB, always fits)."""
_NO_BATCH_ROUTE: Final = frozenset({404, 405})
_Key = tuple[str, str | None, EgressClass]


@dataclass(slots=True)
class _Item:
    task: TaskRequest
    done: asyncio.Future[Delivery]
    timeout: float


class BatchingTransport(Transport):
    """See the module docstring; every other call behaves as the plain Transport's."""

    def __init__(self, config: TransportConfig | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._pending: dict[_Key, list[_Item]] = {}
        self._unbatched: set[str] = set()
        self._sending = Background()

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
        if (
            path != TASKS_PATH
            or endpoint in self._unbatched
            or not isinstance(payload, TaskRequest)
        ):
            return await super().post(
                endpoint,
                path,
                payload,
                token=token,
                timeout_seconds=timeout_seconds,
                retries=retries,
                egress=egress,
            )
        timeout = timeout_seconds if timeout_seconds is not None else self.config.timeout_seconds
        loop = asyncio.get_running_loop()
        item = _Item(payload, loop.create_future(), timeout)
        self._enqueue((endpoint, token, egress), item)
        # a timer per task rather than wait_for: this is the hot path
        expiry = loop.call_later(timeout, _expire, item, endpoint)
        try:
            return await item.done
        finally:
            expiry.cancel()

    def _enqueue(self, key: _Key, item: _Item) -> None:
        pending = self._pending.get(key)
        if pending is not None and len(pending) >= MAX_TASKS:
            self._flush(key)
            pending = None
        if pending is None:
            pending = self._pending[key] = []
            asyncio.get_running_loop().call_soon(self._flush_if_current, key, pending)
        pending.append(item)

    def _flush_if_current(self, key: _Key, batch: list[_Item]) -> None:
        if self._pending.get(key) is batch:
            self._flush(key)

    def _flush(self, key: _Key) -> None:
        self._start(key, self._pending.pop(key))

    def _start(self, key: _Key, batch: list[_Item]) -> None:
        self._sending.spawn(self._send(key, batch))

    async def _send(self, key: _Key, batch: list[_Item]) -> None:
        endpoint = key[0]
        try:
            await self._send_batch(key, batch)
        except BaseException as error:
            for item in batch:
                if not item.done.done():
                    item.done.set_result(
                        Delivery(endpoint, Outcome.BAD_RESPONSE, 1, error=f"batch failed: {error}")
                    )
            if not isinstance(error, Exception):
                raise

    async def _send_batch(self, key: _Key, batch: list[_Item]) -> None:
        endpoint, token, egress = key
        # one encoding for the whole batch; the rare batch too large for the agent's body
        # limit (large payloads) is split in halves until each part fits
        body = TaskBatch.of([item.task for item in batch]).to_json().encode()
        if len(body) > MAX_BYTES and len(batch) > 1:
            half = len(batch) // 2
            self._start(key, batch[:half])
            self._start(key, batch[half:])
            return
        headers = await self._headers("application/json", token)
        headers["Accept"] = NDJSON
        waiting: dict[tuple[str, int], list[_Item]] = {}
        for item in batch:
            waiting.setdefault(item.task.key, []).append(item)
        total = max(item.timeout for item in batch) + 5
        timeout = aiohttp.ClientTimeout(
            total=total, sock_connect=min(total, self.config.connect_timeout_seconds)
        )
        started = time.perf_counter()
        outcome = Outcome.OK
        TRANSPORT_ACTIVE.inc()
        try:
            async with self._session(endpoint, egress).post(
                BATCH_PATH,
                data=body,
                headers=headers,
                timeout=timeout,
                proxy=self.proxy_for(endpoint),
                allow_redirects=False,
            ) as response:
                if response.status in _NO_BATCH_ROUTE:
                    self._unbatched.add(endpoint)
                    outcome = Outcome.HTTP_ERROR
                    self._one_by_one(key, batch)
                    return
                if 300 <= response.status < 400:
                    outcome = Outcome.HTTP_ERROR
                    error = redirect_refused(response)
                    _settle_all(
                        batch,
                        Delivery(
                            endpoint,
                            outcome,
                            1,
                            status=response.status,
                            error=error,
                            code="RedirectRefused",
                        ),
                    )
                    return
                if response.status >= 400:
                    outcome = Outcome.HTTP_ERROR
                    raw = await read_body(response, self.config.response_max_bytes)
                    _settle_all(batch, _refusal(endpoint, response.status, raw))
                    return
                # one line per task, each within the response limit; no more lines than
                # tasks are read
                limit, lines = self.config.response_max_bytes, 0
                while lines <= len(batch) and (
                    line := await response.content.readline(max_line_length=limit)
                ):
                    lines += 1
                    answered = _delivery(endpoint, line)
                    if answered is None:
                        continue
                    task_key, delivery = answered
                    for item in waiting.pop(task_key, ()):
                        if not item.done.done():
                            item.done.set_result(delivery)
        except (ResponseTooLargeError, LineTooLong):
            outcome = Outcome.BAD_RESPONSE
            error = (
                f"an answer in the batch from {endpoint} is larger than the "
                f"{self.config.response_max_bytes}-byte response limit: not read"
            )
            _settle_all(batch, Delivery(endpoint, outcome, 1, error=error, code="ResponseTooLarge"))
        except EgressRefusedError as error:
            outcome = Outcome.EGRESS_REFUSED
            _settle_all(batch, Delivery(endpoint, outcome, 1, error=error.message, code=error.code))
        except aiohttp.ConnectionTimeoutError:
            outcome = Outcome.CONNECT_ERROR
            _settle_all(batch, Delivery(endpoint, outcome, 1, error=not_connected(self.config)))
        except TimeoutError:
            outcome = Outcome.TIMEOUT
        except aiohttp.ClientSSLError as error:
            outcome = Outcome.TLS_ERROR
            _settle_all(batch, Delivery(endpoint, outcome, 1, error=str(error)))
        except aiohttp.ClientConnectionError as error:
            outcome = Outcome.CONNECT_ERROR
            _settle_all(batch, Delivery(endpoint, outcome, 1, error=str(error)))
        finally:
            TRANSPORT_ACTIVE.dec()
            TRANSPORT_DURATION.observe(time.perf_counter() - started)
            TRANSPORT_REQUESTS.labels(outcome=outcome.value).inc()
        left = [item for items in waiting.values() for item in items if not item.done.done()]
        if outcome is Outcome.TIMEOUT:
            missing = Delivery(endpoint, outcome, 1, error="the batch did not finish in time")
        else:
            missing = Delivery(
                endpoint, Outcome.BAD_RESPONSE, 1, error="the batch answer left this task out"
            )
        _settle_all(left, missing)

    def _one_by_one(self, key: _Key, batch: list[_Item]) -> None:
        """The agent has no batch route: send each task of the batch on its own."""
        endpoint, token, egress = key

        async def single(item: _Item) -> None:
            delivery = await super(BatchingTransport, self).post(
                endpoint,
                TASKS_PATH,
                item.task,
                token=token,
                timeout_seconds=item.timeout,
                retries=0,
                egress=egress,
            )
            if not item.done.done():
                item.done.set_result(delivery)

        for item in batch:
            self._sending.spawn(single(item))

    async def close(self) -> None:
        await self._sending.close()
        await super().close()


def _expire(item: _Item, endpoint: str) -> None:
    if not item.done.done():
        error = f"no response within {item.timeout:g} s"
        item.done.set_result(Delivery(endpoint, Outcome.TIMEOUT, 1, error=error))


def _delivery(endpoint: str, line: bytes) -> tuple[tuple[str, int], Delivery] | None:
    """One NDJSON answer line as the Delivery a single call would have produced."""
    try:
        item = json.loads(line)
        key = (str(item["taskUid"]), int(item.get("attempt") or 1))
    except (ValueError, KeyError, TypeError):
        return None
    error = item.get("error")
    if isinstance(error, Mapping):
        status = int(item.get("status") or 500)
        return key, Delivery(
            endpoint,
            Outcome.HTTP_ERROR,
            1,
            status=status,
            error=str(error.get("message") or ""),
            code=error.get("code"),
            field=error.get("field"),
        )
    if item.get("accepted"):
        return key, Delivery(endpoint, Outcome.OK, 1, status=202)
    return key, Delivery(endpoint, Outcome.OK, 1, status=200, body=item)


def _refusal(endpoint: str, status: int, raw: bytes) -> Delivery:
    try:
        detail = json.loads(raw)["error"]
        code, message, field = detail.get("code"), str(detail.get("message")), detail.get("field")
    except (ValueError, KeyError, TypeError):
        code, message, field = None, raw[:512].decode(errors="replace"), None
    return Delivery(
        endpoint, Outcome.HTTP_ERROR, 1, status=status, error=message, code=code, field=field
    )


def _settle_all(items: list[_Item], delivery: Delivery) -> None:
    for item in items:
        if not item.done.done():
            item.done.set_result(delivery)
