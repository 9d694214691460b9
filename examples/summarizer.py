"""A summarizer-style worker: extractive, so it runs anywhere without a model.

Task `summarize` ({"text": ..., "sentences": 3}) streams the chosen sentences as partial
results (an async generator); over `POST /v1/tasks` the result is the list of them.
Swap `summarize` for a call to your model and nothing else changes.
"""

import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from agent_mesh.sdk import Agent, MeshClaims, Message, TaskContext

agent = Agent(agent_type="worker", capabilities=["summarize"])
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z']+")


def best_sentences(text: str, count: int) -> list[str]:
    """The `count` sentences whose words are most frequent in the text, in text order."""
    sentences = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    frequency = Counter(_WORD.findall(text.lower()))

    def score(sentence: str) -> float:
        words = _WORD.findall(sentence.lower())
        return sum(frequency[w] for w in words) / (len(words) or 1)

    chosen = sorted(sorted(sentences, key=score, reverse=True)[:count], key=sentences.index)
    return chosen


@agent.task("summarize")
async def summarize(payload: dict[str, Any], ctx: TaskContext) -> AsyncIterator[str]:
    for sentence in best_sentences(str(payload["text"]), int(payload.get("sentences", 3))):
        yield sentence


@agent.on_message
async def answer(message: Message, caller: MeshClaims) -> Any:
    payload = message.payload or {}
    return {"summary": best_sentences(str(payload["text"]), int(payload.get("sentences", 3)))}


if __name__ == "__main__":
    agent.run()
