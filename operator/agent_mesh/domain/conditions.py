"""Kubernetes-style conditions, kept in their wire form (camelCase dicts).

lastTransitionTime moves only when the status value flips, so re-asserting a condition
does not produce a status write (the caller compares before patching).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
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


class ConditionSet:
    """The conditions of one status being rebuilt at `now` for spec `generation`: set
    each, then `patch` says what to write (nothing when nothing changed)."""

    def __init__(
        self, current: Sequence[Mapping[str, Any]], *, generation: int | None, now: dt.datetime
    ) -> None:
        self.read = [dict(c) for c in current]
        self.items = [dict(c) for c in current]
        self._generation = generation
        self._now = now

    def set(self, type_: str, status: str, reason: str, message: str) -> None:
        """Set `type_` (enum members are written as their values)."""
        self.items = set_condition(
            self.items,
            str(type_),
            status,
            str(reason),
            message,
            generation=self._generation,
            now=self._now,
        )

    def set_check(
        self, type_: str, problem: str | None, passed: tuple[str, str], failed_reason: str
    ) -> None:
        """A check's condition: True with `passed` (reason, message) when there is no
        `problem`, else False with `failed_reason` and the problem as the message."""
        if problem is None:
            self.set(type_, "True", *passed)
        else:
            self.set(type_, "False", failed_reason, problem)

    def patch(self, observed: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The merge patch: `conditions` when they changed and, given the status as read
        (`observed`), `observedGeneration` when it moved; empty when nothing would change."""
        patch: dict[str, Any] = {}
        if self.items != self.read:
            patch["conditions"] = self.items
        generation = self._generation
        moved = observed is not None and observed.get("observedGeneration") != generation
        if generation is not None and moved:
            patch["observedGeneration"] = generation
        return patch


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
