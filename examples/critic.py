"""A critic that calls a worker: it asks any agent with capability `summarize` for a
summary and scores how much of the text's vocabulary the summary keeps.

Critics may not call other agents by default (shared/DESIGN.md §2): the namespace needs an
ACLPolicy granting `execute` and `read` on `agents` to type `critic`, as
config/samples/aclpolicy-critic.yaml does.
"""

import re
from typing import Any

from agent_mesh.sdk import Agent, TaskContext

agent = Agent(agent_type="critic", capabilities=["critique"])
_WORD = re.compile(r"[a-z']{4,}")


@agent.task("critique")
async def critique(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    text = str(payload["text"])
    reply = await agent.mesh.request({"text": text, "sentences": 2}, capability="summarize")
    summary = " ".join(reply["summary"])
    vocabulary = set(_WORD.findall(text.lower()))
    kept = vocabulary & set(_WORD.findall(summary.lower()))
    return {
        "summary": summary,
        "coverage": round(len(kept) / (len(vocabulary) or 1), 3),
        "verdict": "ok" if len(summary) < len(text) else "not shorter than the text",
    }


if __name__ == "__main__":
    agent.run()
