"""Kubernetes-style conditions, kept in their wire form (camelCase dicts).

lastTransitionTime moves only when the status value flips, so re-asserting a condition
does not produce a status write (the caller compares before patching).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from agent_mesh.domain.clock import rfc3339

Condition = dict[str, Any]


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: dt.datetime,
) -> list[Condition]:
    """A new list with `type_` set; others untouched, order stable."""
    updated: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            updated.append(dict(cond))
            continue
        found = True
        moved = cond.get("status") != status
        updated.append(
            _make(
                type_,
                status,
                reason,
                message,
                generation,
                rfc3339(now) if moved else cond.get("lastTransitionTime") or rfc3339(now),
            )
        )
    if not found:
        updated.append(_make(type_, status, reason, message, generation, rfc3339(now)))
    return updated


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def _make(
    type_: str, status: str, reason: str, message: str, generation: int | None, when: str
) -> Condition:
    cond: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": when,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond
