"""A monitor that listens to broadcasts (including the operator's `agent.health`) and
answers "what have you heard?" requests with the events it has kept.

Monitors may read everything and change nothing (shared/DESIGN.md §2): they get events,
and their own calls to execute tasks are refused.
"""

import logging
from collections import deque
from typing import Any

from agent_mesh.sdk import Agent, MeshClaims, Message

agent = Agent(agent_type="monitor", capabilities=["observe"])
heard: deque[dict[str, Any]] = deque(maxlen=1000)
logger = logging.getLogger("monitor")


@agent.on_event
async def on_event(message: Message, caller: MeshClaims) -> None:
    event = {"event": message.metadata.get("event"), "from": caller.sub, "data": message.payload}
    heard.append(event)
    logger.info("heard %s from %s", event["event"], caller.sub)


@agent.on_message
async def report(message: Message, caller: MeshClaims) -> Any:
    return {"heard": list(heard)}


if __name__ == "__main__":
    agent.run()
