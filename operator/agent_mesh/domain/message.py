"""The mesh message envelope (DESIGN §5): what every request, response, event and stream
chunk between agents carries, camelCase on the wire."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Final, Self

from pydantic import AwareDatetime, Field, model_validator

from agent_mesh.domain.clock import Clock, SystemClock
from agent_mesh.domain.wire import STRICT, WireModel

BROADCAST: Final = "*"
"""`to` of an event meant for every agent a broadcast selects."""

AgentAddress = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^(\*|[a-z0-9]([-a-z0-9./]*[a-z0-9])?)$")
]


class MessageType(StrEnum):
    REQUEST = "request"
    RESPONSE = "response"
    EVENT = "event"
    STREAM = "stream"


class Message(WireModel):
    """One envelope. Responses and stream chunks name the request they answer in
    `correlationId`; requests and events start a conversation and have none."""

    model_config = STRICT

    message_id: str = Field(min_length=1, max_length=128)
    sender: AgentAddress = Field(alias="from")
    to: AgentAddress
    type: MessageType
    payload: Any = None
    timestamp: AwareDatetime
    correlation_id: str | None = Field(None, min_length=1, max_length=128)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)

    @model_validator(mode="after")
    def _correlation(self) -> Self:
        answers = self.type in (MessageType.RESPONSE, MessageType.STREAM)
        if answers and self.correlation_id is None:
            raise ValueError(f"a {self.type.value} message needs correlationId")
        if self.to == BROADCAST and self.type is not MessageType.EVENT:
            raise ValueError("only events may be sent to '*' (broadcast)")
        return self

    @classmethod
    def new(
        cls,
        type_: MessageType,
        sender: str,
        to: str,
        payload: Any = None,
        *,
        correlation_id: str | None = None,
        metadata: dict[str, str] | None = None,
        clock: Clock | None = None,
    ) -> Message:
        return cls(
            message_id=uuid.uuid4().hex,
            sender=sender,
            to=to,
            type=type_,
            payload=payload,
            timestamp=(clock or SystemClock()).now(),
            correlation_id=correlation_id,
            metadata=metadata or {},
        )

    def reply(self, payload: Any, *, clock: Clock | None = None) -> Message:
        """The response to this request, addressed back to its sender."""
        return self._answer(MessageType.RESPONSE, payload, clock)

    def chunk(self, payload: Any, *, clock: Clock | None = None) -> Message:
        """A stream chunk answering this request."""
        return self._answer(MessageType.STREAM, payload, clock)

    def _answer(self, type_: MessageType, payload: Any, clock: Clock | None) -> Message:
        return Message.new(
            type_, self.to, self.sender, payload, correlation_id=self.message_id, clock=clock
        )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
