"""MeshTask handlers: the watch feeds the coordinator, which owns every status write.

A raw event handler, not kopf's create/update handlers: those would add their own
progress writes to each task, and the coordinator already coalesces its writes.
"""

from __future__ import annotations

from typing import Any

import kopf

from agent_mesh.api import GROUP, VERSION
from agent_mesh.controllers.services import MeshServices


@kopf.on.event(GROUP, VERSION, "meshtasks")
async def track(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    runtime: MeshServices = memo.runtime
    body = event["object"]
    if event["type"] == "DELETED":
        runtime.coordinator.forget(str((body.get("metadata") or {}).get("uid") or ""))
    else:
        runtime.coordinator.observe(body)
