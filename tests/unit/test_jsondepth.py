"""JSON nesting measured on the bytes, before any parser can recurse on it."""

from __future__ import annotations

import json

import pytest

from agent_mesh.domain.errors import ValidationError
from agent_mesh.domain.jsondepth import check_json_depth, json_depth


@pytest.mark.parametrize(
    ("document", "depth"),
    [
        (b"3", 0),
        (b'"[[[["', 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": [[]]}]}', 5),
        (b'{"a": "]]]]", "b": [[["{"]]]}', 4),
        (b'["\\"[[[", ["\\\\"], [[]]]', 3),  # escaped quotes and backslashes inside strings
        (b'[["unterminated [[[[', 2),
    ],
)
def test_depth_counts_arrays_and_objects_never_brackets_inside_strings(
    document: bytes, depth: int
) -> None:
    assert json_depth(document) == depth


def test_a_body_at_the_limit_passes_and_one_level_deeper_is_refused_naming_the_field() -> None:
    check_json_depth(b"[" * 64 + b"]" * 64, 64)
    with pytest.raises(ValidationError) as caught:
        check_json_depth(b"[" * 65 + b"]" * 65, 64, field="payload")
    assert (caught.value.field, caught.value.code, caught.value.status) == (
        "payload",
        "JsonTooDeep",
        400,
    )
    assert "65 levels" in caught.value.message and "limit is 64" in caught.value.message


def test_a_document_far_deeper_than_the_recursion_limit_is_refused_not_crashed() -> None:
    with pytest.raises(ValidationError):
        check_json_depth(b"[" * 1_000_000, 64)


def test_many_shallow_brackets_are_fine() -> None:
    wide = json.dumps({"tasks": [{"payload": {"a": [1, {"b": "[[["}]}} for _ in range(5000)]})
    check_json_depth(wide.encode(), 64)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "hostile",
    [
        b"[" * 70 + b'"' + b'\\"' * 400_000,  # one string that never ends, all escaped quotes
        b"[" * 70 + b'"' * 800_000,
        b"[" * 70 + b"\\" * 800_000,
    ],
)
def test_hostile_runs_of_quotes_and_backslashes_are_measured_in_one_pass(hostile: bytes) -> None:
    assert json_depth(hostile) == 70  # quadratic scanning would blow the timeout
