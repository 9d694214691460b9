"""Reading NDJSON stream frames off an aiohttp stream (both sides of `POST /v1/stream`):
a frame ends at its newline, one over the limit is refused before it is held whole."""

from __future__ import annotations

import asyncio
from unittest import mock

import aiohttp
import pytest

from agent_mesh.domain.errors import ValidationError
from agent_mesh.domain.stream import FRAME_MAX_BYTES
from agent_mesh.transport.client import read_frame


def stream_of(*parts: bytes) -> aiohttp.StreamReader:
    reader = aiohttp.StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
    for part in parts:
        reader.feed_data(part)
    reader.feed_eof()
    return reader


async def test_frames_are_read_one_line_at_a_time() -> None:
    stream = stream_of(b'{"a": 1}\n{"b"', b": 2}\n")
    assert await read_frame(stream) == b'{"a": 1}\n'
    assert await read_frame(stream) == b'{"b": 2}\n'
    assert await read_frame(stream) == b""


async def test_a_cut_stream_leaves_its_last_frame_without_a_newline() -> None:
    stream = stream_of(b'{"a": 1}\n{"b": ')
    await read_frame(stream)
    assert await read_frame(stream) == b'{"b": '


async def test_a_frame_over_the_limit_is_refused_as_frame_too_large() -> None:
    stream = stream_of(b"x" * (FRAME_MAX_BYTES + 1) + b"\n")
    with pytest.raises(ValidationError) as refused:
        await read_frame(stream)
    assert refused.value.code == "FrameTooLarge"
    assert refused.value.field == "body"
