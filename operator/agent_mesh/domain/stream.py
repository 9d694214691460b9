"""Streams (DESIGN §5): NDJSON frames, one mesh Message per line, ending in `complete`.

A stream opens with a `request` Message. Each direction then carries `stream` Messages
correlated to that request, numbered by `metadata.seq` from 0, and ends with one frame
whose `metadata.complete` is "true" and `metadata.chunks` is the count sent. A frame out
of order, a frame after `complete`, or a stream that stops without `complete` is an
error: a receiver never mistakes a truncated stream for a finished one. A sender that
fails mid-stream ends it with a `complete` frame carrying `metadata.error` (the error
code) and the error's wire form as payload.
"""

from __future__ import annotations

from typing import Any, Final

from agent_mesh.domain.clock import Clock
from agent_mesh.domain.errors import MeshError, ValidationError
from agent_mesh.domain.message import Message, MessageType

NDJSON: Final = "application/x-ndjson"
FRAME_MAX_BYTES: Final = 1024 * 1024 + 4096
"""One frame: a chunk payload of up to 1 MiB plus its envelope."""
STREAM_KEY: Final = "stream"
"""`metadata.stream` of the opening request names the receiver's stream handler."""


class StreamWriter:
    """Numbers the frames one side sends on a stream."""

    def __init__(self, opening: Message, *, reply: bool, clock: Clock | None = None) -> None:
        self._opening = opening
        self._reply = reply
        self._clock = clock
        self.sent = 0

    def _frame(self, payload: Any, metadata: dict[str, str]) -> Message:
        sender, to = self._opening.sender, self._opening.to
        if self._reply:
            sender, to = to, sender
        return Message.new(
            MessageType.STREAM,
            sender,
            to,
            payload,
            correlation_id=self._opening.message_id,
            metadata=metadata,
            clock=self._clock,
        )

    def chunk(self, payload: Any) -> Message:
        frame = self._frame(payload, {"seq": str(self.sent)})
        self.sent += 1
        return frame

    def complete(self, error: MeshError | None = None) -> Message:
        metadata = {"complete": "true", "chunks": str(self.sent)}
        if error is None:
            return self._frame(None, metadata)
        return self._frame(error.to_wire(), {**metadata, "error": error.code})


class StreamReader:
    """Checks the frames one side receives: correlation, order, completion."""

    def __init__(self, opening: Message) -> None:
        self._opening = opening
        self.received = 0
        self.completed = False

    def accept(self, frame: Message) -> tuple[bool, Any]:
        """(done, payload): the chunk's payload, or done=True at `complete`.

        Raises ValidationError for a frame that does not belong here, and the sender's
        MeshError when it ended the stream with one."""
        if self.completed:
            raise ValidationError("frame after the stream's complete frame", field="metadata")
        if frame.type is not MessageType.STREAM:
            raise ValidationError(
                f"stream frames have type stream, not {frame.type.value}", field="type"
            )
        if frame.correlation_id != self._opening.message_id:
            raise ValidationError(
                f"frame correlates to {frame.correlation_id!r}, not to the stream "
                f"{self._opening.message_id!r}",
                field="correlationId",
            )
        if frame.metadata.get("complete") == "true":
            self.completed = True
            error = frame.metadata.get("error")
            if error is not None:
                raise _remote_error(error, frame.payload)
            declared = frame.metadata.get("chunks")
            if declared != str(self.received):
                raise ValidationError(
                    f"complete frame says {declared} chunks, {self.received} arrived",
                    field="metadata.chunks",
                )
            return True, None
        seq = frame.metadata.get("seq")
        if seq != str(self.received):
            raise ValidationError(
                f"frame seq {seq!r} arrived where {self.received} was expected",
                field="metadata.seq",
            )
        self.received += 1
        return False, frame.payload

    def truncated(self) -> ValidationError:
        return ValidationError(
            f"stream ended after {self.received} chunks without a complete frame",
            field="body",
            code="StreamTruncated",
        )


def parse_frame(line: bytes) -> Message:
    try:
        return Message.model_validate_json(line)
    except ValueError as error:
        raise ValidationError(
            f"stream frame is not a mesh message: {error}", field="body"
        ) from None


def encode_frame(frame: Message) -> bytes:
    return frame.model_dump_json(by_alias=True, exclude_none=True).encode() + b"\n"


def _remote_error(code: str, payload: Any) -> MeshError:
    detail = payload.get("error", {}) if isinstance(payload, dict) else {}
    message = detail.get("message") if isinstance(detail, dict) else None
    return MeshError(str(message or f"the stream's sender failed with {code}"), code=code)
