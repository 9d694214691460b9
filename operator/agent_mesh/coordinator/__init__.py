"""The task engine (DESIGN §4): the `Coordinator` facade over its parts.

book (tracked tasks, tombstones, per-agent indexes) · queues and scheduler (placing
tasks, waiting reasons) · timers · dispatch · outcomes (a delivery's verdict, pure) ·
lifecycle (attempt ended, completed, given up; one notifier) · reconcile (after a
restart) · status_sync (coalesced, write-ahead status writes) · expiry (TTL deletion) ·
wiring (the parts built and joined).
"""

from agent_mesh.coordinator.facade import Coordinator
from agent_mesh.coordinator.status_sync import TaskWriter
from agent_mesh.coordinator.timers import TimerKind

__all__ = ["Coordinator", "TaskWriter", "TimerKind"]
