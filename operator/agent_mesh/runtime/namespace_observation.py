"""A namespace created while kopf (re)lists namespaces is watched like any other.

kopf observes the namespaces matching the operator's patterns in two steps: it lists them,
then starts a watch stream, which lists them again before it watches. Its event processor
drops the objects of that second listing (kopf marks listed objects with event type None,
which it uses elsewhere to skip start-up noise), so a namespace created between the two
listings is never added: the operator never serves it until it restarts. The same loss
repeats whenever the stream re-lists after "410 Gone". Under load the gap grows to
hundreds of milliseconds, so a namespace created right after the operator starts — a
GitOps sync applying a namespace and its MeshAgents, or a test — is missed.

This takes every listed namespace into account as well; adding a namespace already known
is a no-op. Checked against kopf 1.45.2 and kopf's main branch, which drop them the same
way. Applied once, before `kopf.operator` starts its observers.
"""

from __future__ import annotations

from typing import Any

from kopf._cogs.structs import bodies, references
from kopf._core.reactor import observation


async def process_namespace_event(
    *,
    raw_event: bodies.RawEvent,
    namespaces: Any,
    insights: references.Insights,
    **_: Any,
) -> None:
    """kopf's processor for namespace events, listed namespaces included."""
    async with insights.revised:
        observation.revise_namespaces(
            raw_events=[raw_event], insights=insights, namespaces=namespaces
        )
        insights.revised.notify_all()


def observe_listed_namespaces() -> None:
    """Make kopf's namespace observer use `process_namespace_event` (idempotent)."""
    observation.process_discovered_namespace_event = process_namespace_event
