"""The waiting line: pending tasks by shape (what routing depends on), each shape in
priority then arrival order, and why each shape waits.

Tasks of one shape wait for the same reason: when the head of a line cannot be placed,
every task behind it gets the same condition (written once per change of reason) and
only the head an Event, so a thousand waiting tasks cost no thousand Events.
"""

from __future__ import annotations

from collections.abc import Callable

from agent_mesh.api.meshtask import MeshTaskReason
from agent_mesh.coordinator.book import TaskBook
from agent_mesh.coordinator.notifier import Notifier
from agent_mesh.coordinator.status_sync import StatusSync
from agent_mesh.coordinator.timers import TimerKind, Timers
from agent_mesh.coordinator.tracked import Shape, Tracked
from agent_mesh.domain.clock import Clock
from agent_mesh.domain.routing import RoutingDecision
from agent_mesh.domain.task_queue import PRIORITY_RANK, QueueEntry, TaskQueue
from agent_mesh.domain.tasks import TaskPhase

Picked = tuple[Shape, QueueEntry[Tracked]]


class Queues:
    """One TaskQueue per shape, the reason each shape waits, and retries' due times."""

    def __init__(
        self,
        *,
        book: TaskBook,
        clock: Clock,
        timers: Timers,
        status: StatusSync,
        notifier: Notifier,
        wake: Callable[[], None],
    ) -> None:
        self._book = book
        self._clock = clock
        self._timers = timers
        self._status = status
        self._notifier = notifier
        self._wake = wake
        self._queues: dict[Shape, TaskQueue[Tracked]] = {}
        self._waiting: dict[Shape, tuple[str, str]] = {}

    def enqueue(self, tracked: Tracked) -> None:
        """Queue a pending task, or arm its retry's DUE timer when that is still ahead."""
        state = tracked.state
        if state.next_retry_at is not None and state.next_retry_at > self._clock.now():
            self._timers.at(state.next_retry_at, TimerKind.DUE, state.key)
        else:
            queue = self._queues.get(tracked.shape)
            if queue is None:
                queue = self._queues[tracked.shape] = TaskQueue()
            queue.push(state.key, tracked, state.priority)
            waiting = self._waiting.get(tracked.shape)
            if waiting is not None:  # behind others that wait: it waits for the same
                self._say_waiting(tracked, waiting)
        self._wake()

    def due(self, key: str) -> None:
        """The DUE timer handler: a pending task's retry time has come."""
        tracked = self._book.get(key)
        if tracked is not None and tracked.state.phase is TaskPhase.PENDING:
            tracked.state.next_retry_at = None
            self.enqueue(tracked)

    def remove(self, tracked: Tracked) -> None:
        queue = self._queues.get(tracked.shape)
        if queue is not None:
            queue.remove(tracked.key)

    def pop_next(self, blocked: set[Shape]) -> Picked | None:
        """The highest-priority, oldest task among the shapes not `blocked`, taken out of
        its queue; None when none is left."""
        best: tuple[tuple[int, int], Shape, TaskQueue[Tracked]] | None = None
        for shape, queue in list(self._queues.items()):
            if shape in blocked:
                continue
            head = queue.peek()
            if head is None:
                del self._queues[shape]
                continue
            order = (PRIORITY_RANK[head.priority], head.item.seq)
            if best is None or order < best[0]:
                best = (order, shape, queue)
        if best is None:
            return None
        _, shape, queue = best
        entry = queue.pop()
        assert entry is not None
        return shape, entry

    def put_back(self, shape: Shape, entry: QueueEntry[Tracked]) -> None:
        """A task that could not be placed keeps its turn."""
        queue = self._queues.get(shape)
        if queue is None:
            queue = self._queues[shape] = TaskQueue()
        queue.requeue(entry)

    def placed(self, tracked: Tracked) -> None:
        """A task of this shape found an agent: the shape no longer waits."""
        self._waiting.pop(tracked.shape, None)

    def waiting(self, tracked: Tracked, decision: RoutingDecision) -> None:
        """No agent for `tracked`: it and every task queued behind it wait for the same
        reason; each gets the condition (once per change), the head an Event too."""
        reason = decision.reason.value if decision.reason else MeshTaskReason.QUEUED.value
        waiting = (reason, decision.message or "Waiting for an agent.")
        if self._waiting.get(tracked.shape) == waiting:
            self._say_waiting(tracked, waiting)
            return
        self._waiting[tracked.shape] = waiting
        if self._say_waiting(tracked, waiting):
            self._notifier.waiting(tracked.state, reason, waiting[1])
        for entry in self._queues.get(tracked.shape) or ():
            self._say_waiting(entry.item, waiting)

    def _say_waiting(self, tracked: Tracked, waiting: tuple[str, str]) -> bool:
        if waiting == tracked.reported_waiting or tracked.state.next_retry_at is not None:
            return False
        tracked.reported_waiting = waiting
        tracked.state.waiting = waiting
        self._status.dirty(tracked)
        return True
