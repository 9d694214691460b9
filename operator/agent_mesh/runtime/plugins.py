"""Plug-in strategies: found among the installed packages' entry points
(`agent_mesh.strategies`, docs/tasks.md) and handed to the Router, which stays pure."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Final

from agent_mesh.domain.routing import ENTRY_POINT_GROUP, BuiltinStrategy, Strategy

logger = logging.getLogger("agent_mesh.routing")
_BUILTIN: Final = frozenset(strategy.value for strategy in BuiltinStrategy)


def load_strategies(
    group: str = ENTRY_POINT_GROUP,
) -> tuple[dict[str, Strategy], dict[str, str]]:
    """Plug-in strategies by entry-point name, and why each one that failed to load did.

    An entry point names a class (instantiated without arguments) or an object with a
    `select` method. Built-in names cannot be taken over.
    """
    loaded: dict[str, Strategy] = {}
    errors: dict[str, str] = {}
    for point in entry_points(group=group):
        if point.name in _BUILTIN:
            logger.warning("plug-in strategy %s (%s) ignored: built in", point.name, point.value)
            continue
        try:
            target = point.load()
            strategy = target() if isinstance(target, type) else target
            if not callable(getattr(strategy, "select", None)):
                raise TypeError("it has no select(candidates, task) method")
        except Exception as exc:
            logger.warning("plug-in strategy %s failed to load", point.name, exc_info=True)
            errors[point.name] = (
                f"plug-in strategy {point.name!r} ({point.value}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            )
            continue
        loaded[point.name] = strategy
    return loaded, errors
