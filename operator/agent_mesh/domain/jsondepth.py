"""How deeply a JSON document nests, measured on its bytes before anyone parses it.

Python's json module (and anything that walks the result recursively) raises
RecursionError on a document nested a few thousand levels deep: a 500 from a 20 KB body.
This check counts brackets outside strings without recursion and without a Python loop
over the bytes (regular expressions, translate and accumulate all run in C), and is free
for the usual body, whose bracket count is below the limit anyway.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Final

from agent_mesh.domain.errors import ValidationError

DEFAULT_MAX_DEPTH: Final = 64

# A JSON string, or an unterminated one running to the end: every attempt from a quote
# succeeds, so the scan stays linear however the quotes and backslashes are arranged.
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_BRACKETS: Final = b"[{]}"
_STEP: Final = bytes.maketrans(_BRACKETS, b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in _BRACKETS)


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in `raw` (0 for a scalar)."""
    steps = _STRING.sub(b"", raw).translate(_STEP, _NOT_BRACKETS)
    return max(accumulate(memoryview(steps).cast("b")), default=0)


def check_json_depth(raw: bytes, limit: int = DEFAULT_MAX_DEPTH, field: str = "body") -> None:
    """ValidationError (400) naming `field` when `raw` nests deeper than `limit`."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return  # cannot nest deeper than it has brackets
    depth = json_depth(raw)
    if depth > limit:
        raise ValidationError(
            f"{field} nests arrays and objects {depth} levels deep; the limit is {limit}",
            field=field,
            code="JsonTooDeep",
        )
