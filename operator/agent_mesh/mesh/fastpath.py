"""The fast path (DESIGN §4): tasks submitted over the mesh API run through the
coordinator's queue, router and dispatch, in memory, without a MeshTask.

In-memory tasks cost no apiserver write at all, which is what makes them fast, and also
what makes them not durable: an operator restart loses those in flight (documented). A
task submitted with `durable: true` becomes a MeshTask instead and is followed through
the coordinator like any other.

This module owns what the coordinator does not keep: finished answers until the
submitter fetches them (ResultStore), callbacks, and a time budget per in-memory task.
A task nobody can take would otherwise wait in the queue for ever; once its budget
(every attempt's timeout plus the backoffs, `budget_seconds`) has passed while it is
still Pending, it is withdrawn and ends Failed, saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Protocol

from agent_mesh.coordinator import Coordinator
from agent_mesh.domain.background import Background
from agent_mesh.domain.errors import MeshError, UnavailableError
from agent_mesh.domain.tasks import IN_FLIGHT_PHASES, TaskPhase, TaskState
from agent_mesh.mesh.callbacks import CallbackNotifier
from agent_mesh.mesh.task_results import ResultStore
from agent_mesh.mesh.task_wire import (
    Submission,
    TaskIn,
    answer_of,
    answer_of_object,
    budget_seconds,
    encode,
    spec_of,
    state_of,
)
from agent_mesh.observability.metrics import FAST_PATH_SUBMITTED, FAST_PATH_WITHDRAWN

MAX_OUTSTANDING: Final = 100_000
"""In-memory tasks unfinished at once; more are refused (503) rather than queued."""
DURABLE_INDEX_MAX: Final = 100_000
"""Durable submissions remembered (id → MeshTask name) so GET can find them after they
finish; older ones are still MeshTasks, read with kubectl."""
SWEEP_SECONDS: Final = 1.0
_FINAL: Final = frozenset({"Completed", "Failed", "TimedOut"})


class MeshTasks(Protocol):
    """MeshTask I/O (agent_mesh.kube.tasks.MeshTaskApi in the operator)."""

    async def create(
        self, namespace: str, spec: dict[str, Any], submitter: str
    ) -> dict[str, Any]: ...

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None: ...


@dataclass(slots=True)
class Ticket:
    """One submitted task as the submitter's request follows it."""

    key: str
    namespace: str
    ended: asyncio.Future[Any]
    """Resolves when the task ends: in memory, the coordinator's future (a TaskState);
    durable, a waiter resolving with the final answer (None at the wait bound)."""
    durable: bool = False
    fixed: dict[str, Any] | None = None
    """Durable: the answer when the MeshTask was created; refused: the whole answer."""


@dataclass(frozen=True, slots=True)
class Found:
    """A task found by id: its namespace (for the ACL) and its answer."""

    namespace: str
    answer: bytes | dict[str, Any]


class FastPath:
    """Submits, follows and answers for fast-path tasks; see the module docstring."""

    def __init__(
        self,
        coordinator: Coordinator,
        meshtasks: MeshTasks | None = None,
        results: ResultStore | None = None,
        callbacks: CallbackNotifier | None = None,
        max_outstanding: int = MAX_OUTSTANDING,
    ) -> None:
        self.coordinator = coordinator
        self.meshtasks = meshtasks
        self.results = results or ResultStore()
        self.callbacks = callbacks or CallbackNotifier()
        self.max_outstanding = max_outstanding
        self._live: dict[str, asyncio.Future[TaskState]] = {}
        self._budgets: list[tuple[float, str]] = []
        self._durable: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._sweeper: asyncio.Task[None] | None = None
        self._background = Background()

    @property
    def outstanding(self) -> int:
        return len(self._live)

    # --- submitting ---------------------------------------------------------------------

    async def submit(self, submission: Submission, namespace: str, submitter: str) -> list[Ticket]:
        """Start every task of the request; tickets in request order. A durable task the
        apiserver refuses fails the request when it is the only task, and is answered
        Failed in its place in a batch (the others are already running)."""
        fast = sum(1 for t in submission.tasks if not t.durable)
        if fast and len(self._live) + fast > self.max_outstanding:
            raise UnavailableError(
                f"the fast path has {len(self._live)} unfinished tasks, its limit is "
                f"{self.max_outstanding}: retry later, or submit durable tasks",
                code="TooManyTasks",
            )
        url = submission.options.callback_url
        if url is not None:
            await self.callbacks.check(url)  # before any task starts: a 400 runs nothing
        now = self.coordinator.clock.now()
        tickets: list[Ticket | None] = []
        durable: list[tuple[int, TaskIn]] = []
        for index, task in enumerate(submission.tasks):
            if task.durable:
                durable.append((index, task))
                tickets.append(None)
                continue
            state = state_of(task, uuid.uuid4().hex, namespace, now)
            ended = await self.coordinator.submit(state)
            self._live[state.key] = ended
            ended.add_done_callback(partial(self._ended, state.key, url))
            heapq.heappush(self._budgets, (time.monotonic() + budget_seconds(task), state.key))
            tickets.append(Ticket(state.key, namespace, ended))
        if fast:
            FAST_PATH_SUBMITTED.labels(kind="memory").inc(fast)
            self._ensure_sweeper()
        if durable:
            FAST_PATH_SUBMITTED.labels(kind="durable").inc(len(durable))
            follow = submission.options.wait or url is not None
            made = await asyncio.gather(
                *(self._create(task, namespace, submitter, url, follow) for _, task in durable),
                return_exceptions=True,
            )
            for (index, _), ticket in zip(durable, made, strict=True):
                if isinstance(ticket, BaseException):
                    if not isinstance(ticket, MeshError):
                        raise ticket
                    if not submission.batch:
                        raise ticket
                    tickets[index] = _refused(namespace, ticket)
                else:
                    tickets[index] = ticket
        return [t for t in tickets if t is not None]

    def _ended(self, key: str, url: str | None, ended: asyncio.Future[TaskState]) -> None:
        self._live.pop(key, None)
        if ended.cancelled():
            return
        state = ended.result()
        answer = answer_of(state)
        self.results.put(key, state.namespace, encode(answer))
        if url is not None:
            self.callbacks.notify(url, answer)

    # --- durable tasks ------------------------------------------------------------------

    async def _create(
        self, task: TaskIn, namespace: str, submitter: str, url: str | None, follow: bool
    ) -> Ticket:
        """Create the MeshTask; `follow` it to its end when someone waits for it (a
        synchronous request, a callback), else only answer that it exists."""
        if self.meshtasks is None:
            raise UnavailableError("durable tasks need the Kubernetes API", code="NoKubernetes")
        body = await self.meshtasks.create(namespace, spec_of(task), submitter)
        created = answer_of_object(body)
        uid, name = str(created["id"]), str(created["name"])
        self._durable[uid] = (namespace, name)
        while len(self._durable) > DURABLE_INDEX_MAX:
            self._durable.popitem(last=False)
        waiter: asyncio.Future[Any]
        if follow:
            waiter = self._background.spawn(
                self._follow(uid, namespace, name, budget_seconds(task), url)
            )
        else:
            waiter = asyncio.get_running_loop().create_future()
            waiter.set_result(None)
        return Ticket(uid, namespace, waiter, durable=True, fixed=created)

    async def _follow(
        self, uid: str, namespace: str, name: str, budget: float, url: str | None
    ) -> dict[str, Any] | None:
        """The durable task's final answer: from the coordinator as it ends (after the
        watch has delivered it), else from the apiserver (it ended before we looked).
        None when the budget passes first, or the MeshTask was deleted."""
        assert self.meshtasks is not None
        deadline = time.monotonic() + budget
        delay = 0.02
        answer: dict[str, Any] | None = None
        while answer is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ended = self.coordinator.outcome(uid)
            if ended is not None:
                try:
                    state = await asyncio.wait_for(asyncio.shield(ended), left)
                except TimeoutError:
                    return None
                answer = answer_of(state)
                break
            if delay >= 0.1:  # not seen by the watch yet, or already done and forgotten
                body = await self.meshtasks.read(namespace, name)
                if body is None:
                    return None
                if (body.get("status") or {}).get("phase") in _FINAL:
                    answer = answer_of_object(body)
                    break
            await asyncio.sleep(min(delay, max(left, 0.0)))
            delay = min(delay * 2, 1.0)
        if url is not None:
            self.callbacks.notify(url, answer)
        return answer

    # --- waiting ------------------------------------------------------------------------

    @staticmethod
    async def wait(tickets: list[Ticket], seconds: float) -> bool:
        """Wait until every ticket's task has ended or `seconds` pass; True when all did."""
        pending = [t.ended for t in tickets if not t.ended.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=seconds)
            return not still
        return True

    def answer(self, ticket: Ticket) -> bytes:
        """The final answer when the task ended, else what is known now."""
        ended = ticket.ended
        if ended.done() and not ended.cancelled():
            if not ticket.durable and ticket.fixed is None:  # in memory
                kept = self.results.get(ticket.key)
                return kept.answer if kept is not None else encode(answer_of(ended.result()))
            if ended.result() is not None:
                return encode(ended.result())
        state = self.coordinator.get(ticket.key) if ticket.key else None
        if state is not None:
            return encode(answer_of(state))
        if ticket.fixed is not None:
            return encode(ticket.fixed)
        kept = self.results.get(ticket.key)  # ended between the two looks
        if kept is not None:
            return kept.answer
        return encode({"id": ticket.key, "namespace": ticket.namespace, "phase": "Pending"})

    # --- reading back -------------------------------------------------------------------

    async def find(self, key: str) -> Found | None:
        """A task by id: in flight (the coordinator), finished in memory (kept answers),
        or durable (its MeshTask)."""
        state = self.coordinator.get(key)
        if state is not None:
            return Found(state.namespace, answer_of(state))
        kept = self.results.get(key)
        if kept is not None:
            return Found(kept.namespace, kept.answer)
        ended = self._live.get(key)
        if ended is not None and ended.done() and not ended.cancelled():
            # ended, and gone from the coordinator, but its answer is kept only once the
            # loop runs the future's callback (_ended): answer from the future meanwhile
            state = ended.result()
            return Found(state.namespace, answer_of(state))
        where = self._durable.get(key)
        if where is None or self.meshtasks is None:
            return None
        body = await self.meshtasks.read(*where)
        if body is None or (body.get("metadata") or {}).get("uid") != key:
            return None
        return Found(where[0], answer_of_object(body))

    # --- budgets ------------------------------------------------------------------------

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Withdraw in-memory tasks whose budget has passed while they are still Pending;
        one still running gets until its attempt's deadline to finish first."""
        budgets = self._budgets
        while budgets and budgets[0][0] <= now:
            _, key = heapq.heappop(budgets)
            ended = self._live.get(key)
            state = self.coordinator.get(key)
            if ended is None or ended.done() or state is None:
                continue
            if state.phase in IN_FLIGHT_PHASES:
                deadline = state.deadline()
                wall = self.coordinator.clock.now()
                left = (deadline - wall).total_seconds() if deadline is not None else 0.0
                heapq.heappush(budgets, (now + max(left, 0.0) + 1.0, key))
                continue
            self.coordinator.forget(key)
            why = state.waiting[1] if state.waiting else "no agent took it"
            state.give_up(
                TaskPhase.FAILED,
                f"withdrawn: the task did not finish within its time budget ({why})",
                self.coordinator.clock.now(),
            )
            FAST_PATH_WITHDRAWN.inc()
            ended.set_result(state)

    # --- plumbing -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
        await self._background.close()
        await self.callbacks.close()


def _refused(namespace: str, error: MeshError) -> Ticket:
    """A batch's durable task the apiserver refused: answered Failed with the reason."""
    answer = {
        "id": None,
        "namespace": namespace,
        "phase": "Failed",
        "agentId": None,
        "attempt": 0,
        "error": error.message,
        "code": error.code,
    }
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    done.set_result(answer)
    return Ticket("", namespace, done, fixed=answer)
