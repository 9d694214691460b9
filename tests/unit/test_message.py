"""The message envelope: wire form, correlation rules, validation errors naming fields."""

from __future__ import annotations

import pydantic
import pytest

from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.message import BROADCAST, Message, MessageType

clock = FakeClock()


def test_wire_form_is_camel_case_with_from() -> None:
    request = Message.new(MessageType.REQUEST, "critic-1", "worker-1", {"text": "hi"}, clock=clock)
    wire = request.to_wire()
    assert wire["from"] == "critic-1"
    assert {"messageId", "to", "type", "payload", "timestamp", "metadata"} <= set(wire)
    assert "correlationId" not in wire
    assert Message.model_validate(wire) == request


def test_reply_and_chunks_correlate_to_the_request() -> None:
    request = Message.new(MessageType.REQUEST, "a", "b", 1, clock=clock)
    reply = request.reply({"ok": True}, clock=clock)
    assert (reply.type, reply.sender, reply.to) == (MessageType.RESPONSE, "b", "a")
    assert reply.correlation_id == request.message_id
    assert request.chunk("part", clock=clock).correlation_id == request.message_id


@pytest.mark.parametrize("type_", [MessageType.RESPONSE, MessageType.STREAM])
def test_answers_need_a_correlation_id(type_: MessageType) -> None:
    with pytest.raises(pydantic.ValidationError, match="correlationId"):
        Message.new(type_, "a", "b", clock=clock)


def test_only_events_are_broadcast() -> None:
    assert Message.new(MessageType.EVENT, "monitor", BROADCAST, clock=clock).to == BROADCAST
    with pytest.raises(pydantic.ValidationError, match="broadcast"):
        Message.new(MessageType.REQUEST, "a", BROADCAST, clock=clock)


def test_bad_fields_are_named() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Message.model_validate(
            {"messageId": "m", "from": "Not Valid", "to": "b", "type": "shout", "timestamp": "x"}
        )
    fields = {error["loc"][0] for error in caught.value.errors()}
    assert {"from", "type", "timestamp"} <= fields


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="timezone"):
        Message.model_validate(
            {
                "messageId": "m",
                "from": "a",
                "to": "b",
                "type": "event",
                "timestamp": "2026-01-01T00:00:00",
            }
        )
