"""Stream framing: numbered chunks, one complete frame, and every way a stream can be
wrong raising instead of looking finished."""

from __future__ import annotations

import pytest

from agent_mesh.domain.errors import MeshError, UnavailableError, ValidationError
from agent_mesh.domain.message import Message, MessageType
from agent_mesh.domain.stream import StreamReader, StreamWriter, encode_frame, parse_frame


def opening() -> Message:
    return Message.new(MessageType.REQUEST, "client", "server", {"q": 1})


def test_frames_round_trip_in_order_and_complete() -> None:
    start = opening()
    writer, reader = StreamWriter(start, reply=True), StreamReader(start)
    frames = [writer.chunk(i) for i in range(3)] + [writer.complete()]
    got = [reader.accept(parse_frame(encode_frame(f))) for f in frames]
    assert got == [(False, 0), (False, 1), (False, 2), (True, None)]
    assert all(f.sender == "server" and f.to == "client" for f in frames)  # a reply
    assert frames[-1].metadata == {"complete": "true", "chunks": "3"}


def test_outbound_frames_keep_the_openers_direction() -> None:
    frame = StreamWriter(opening(), reply=False).chunk("x")
    assert (frame.sender, frame.to, frame.metadata["seq"]) == ("client", "server", "0")


def test_a_frame_out_of_order_names_seq() -> None:
    start = opening()
    writer, reader = StreamWriter(start, reply=True), StreamReader(start)
    writer.chunk(0)
    with pytest.raises(ValidationError) as error:
        reader.accept(writer.chunk(1))
    assert error.value.field == "metadata.seq"


def test_a_frame_of_another_stream_names_correlation_id() -> None:
    reader = StreamReader(opening())
    stray = StreamWriter(opening(), reply=True).chunk(0)
    with pytest.raises(ValidationError) as error:
        reader.accept(stray)
    assert error.value.field == "correlationId"


def test_a_frame_that_is_not_a_stream_frame_names_type() -> None:
    start = opening()
    with pytest.raises(ValidationError) as error:
        StreamReader(start).accept(start.reply("done"))
    assert error.value.field == "type"


def test_a_complete_frame_with_the_wrong_count_names_chunks() -> None:
    start = opening()
    writer, reader = StreamWriter(start, reply=True), StreamReader(start)
    writer.chunk(0)  # sent, but lost on the way
    with pytest.raises(ValidationError) as error:
        reader.accept(writer.complete())
    assert error.value.field == "metadata.chunks"


def test_nothing_is_accepted_after_complete() -> None:
    start = opening()
    writer, reader = StreamWriter(start, reply=True), StreamReader(start)
    reader.accept(writer.complete())
    with pytest.raises(ValidationError, match="after the stream's complete"):
        reader.accept(writer.chunk(0))


def test_an_error_frame_raises_the_senders_error_with_its_code() -> None:
    start = opening()
    writer, reader = StreamWriter(start, reply=True), StreamReader(start)
    reader.accept(writer.chunk(0))
    failure = UnavailableError("the agent stopped mid-stream", code="HandedBack")
    with pytest.raises(MeshError) as error:
        reader.accept(writer.complete(failure))
    assert error.value.code == "HandedBack"
    assert "stopped mid-stream" in error.value.message


def test_a_truncated_stream_is_an_error_naming_what_arrived() -> None:
    start = opening()
    reader = StreamReader(start)
    reader.accept(StreamWriter(start, reply=True).chunk(0))
    error = reader.truncated()
    assert error.code == "StreamTruncated"
    assert "after 1 chunks" in error.message


@pytest.mark.parametrize("line", [b"not json\n", b'{"messageId": "x"}\n'])
def test_a_line_that_is_not_a_message_names_body(line: bytes) -> None:
    with pytest.raises(ValidationError) as error:
        parse_frame(line)
    assert error.value.field == "body"
