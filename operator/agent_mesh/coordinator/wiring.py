"""The coordinator's parts, built once and wired to one another; the facade's insides.

Calls run one way: scheduler → dispatch → lifecycle → queues → status sync → task book.
The status sync's news goes back up through two callbacks (`forget`, `settled`) and
timers reach each part through its handler, so no part needs one above it.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.authority import Authority
from agent_mesh.coordinator.background import Background
from agent_mesh.coordinator.book import TaskBook
from agent_mesh.coordinator.dispatch import AgentTransport, Dispatcher
from agent_mesh.coordinator.expiry import Expiry
from agent_mesh.coordinator.lifecycle import Lifecycle
from agent_mesh.coordinator.notifier import EventSink, Notifier
from agent_mesh.coordinator.queues import Queues
from agent_mesh.coordinator.reconcile import Reconciler
from agent_mesh.coordinator.scheduler import Scheduler
from agent_mesh.coordinator.status_sync import StatusSync, TaskWriter
from agent_mesh.coordinator.timers import TimerKind, Timers
from agent_mesh.coordinator.tracked import Tracked
from agent_mesh.domain.agents import AgentRegistry
from agent_mesh.domain.clock import Clock
from agent_mesh.domain.health import HealthTracker
from agent_mesh.domain.retry import RetryPolicy
from agent_mesh.domain.routing import Router
from agent_mesh.transport.client import Transport, TransportConfig


def default_transport() -> Transport:
    """The router bounds work per agent; the pool only has to keep up with it."""
    return Transport(TransportConfig(max_connections_per_agent=100, retries=0))


class Parts:
    """Every part of the coordinator, and `forget`, which touches several of them."""

    def __init__(
        self,
        *,
        registry: AgentRegistry,
        tracker: HealthTracker,
        authority: Authority,
        audit: AuditLog,
        clock: Clock,
        writer: TaskWriter | None,
        events: EventSink | None,
        router: Router,
        policy: RetryPolicy,
        transport: AgentTransport,
        result_max_bytes: int,
        coalesce_seconds: float,
        write_retry_seconds: float,
        reconcile_grace: dt.timedelta,
    ) -> None:
        self.wake = asyncio.Event()
        wake = self.wake.set
        self.book = book = TaskBook()
        self.background = background = Background()
        self.notifier = notifier = Notifier(audit, events)
        self.timers = timers = Timers(wake)
        self.expiry = Expiry(timers=timers, writer=writer, background=background)
        self.status = status = StatusSync(
            book=book,
            writer=writer,
            clock=clock,
            background=background,
            gone=self.forget,
            settled=self.settled,
            coalesce_seconds=coalesce_seconds,
            retry_seconds=write_retry_seconds,
        )
        self.queues = queues = Queues(
            book=book, clock=clock, timers=timers, status=status, notifier=notifier, wake=wake
        )
        self.lifecycle = lifecycle = Lifecycle(
            book=book,
            queues=queues,
            status=status,
            notifier=notifier,
            timers=timers,
            router=router,
            tracker=tracker,
            policy=policy,
            clock=clock,
            result_max_bytes=result_max_bytes,
            wake=wake,
        )
        dispatcher = Dispatcher(
            book=book,
            status=status,
            registry=registry,
            tracker=tracker,
            authority=authority,
            transport=transport,
            clock=clock,
            delivered=lifecycle.delivered,
        )
        self.scheduler = Scheduler(
            book=book,
            queues=queues,
            router=router,
            status=status,
            dispatcher=dispatcher,
            notifier=notifier,
        )
        self.reconciler = reconciler = Reconciler(
            book=book,
            registry=registry,
            tracker=tracker,
            router=router,
            clock=clock,
            timers=timers,
            queues=queues,
            lifecycle=lifecycle,
            status=status,
            dispatcher=dispatcher,
            grace=reconcile_grace,
        )
        timers.handle(
            {
                TimerKind.DUE: queues.due,
                TimerKind.TIMEOUT: lifecycle.timed_out,
                TimerKind.RECONCILE: reconciler.grace_over,
                TimerKind.TTL: self.expiry.expire,
            }
        )

    def forget(self, key: str, *, tombstone: bool = False) -> None:
        """Drop task `key` wherever it is: queue, dispatch, agent slot, TTL. With
        `tombstone`, remember that it finished (see TaskBook.drop)."""
        self.expiry.forget(key)
        tracked = self.book.drop(key, tombstone=tombstone)
        if tracked is not None:
            self.queues.remove(tracked)
            tracked.stop_dispatch()
            self.lifecycle.release(tracked)

    def settled(self, tracked: Tracked) -> None:
        """Its final status is stored (by us or by another writer): arm its TTL, then
        forget it, keeping a tombstone against late watch events."""
        self.expiry.after_finish(tracked.state)
        self.forget(tracked.key, tombstone=True)
