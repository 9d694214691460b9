"""The operator's log lines are JSON objects with the object they concern."""

from __future__ import annotations

import json
import logging

from agent_mesh.observability.logging import JsonFormatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "agent_mesh.test", logging.INFO, __file__, 1, "agent %s up", ("worker-1",), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_line_is_json_with_the_standard_fields() -> None:
    line = json.loads(JsonFormatter().format(_record()))
    assert line["level"] == "info"
    assert line["logger"] == "agent_mesh.test"
    assert line["msg"] == "agent worker-1 up"
    assert line["ts"].endswith("Z")


def test_kopf_object_reference_and_context_become_keys() -> None:
    record = _record(
        k8s_ref={"namespace": "prod", "name": "worker-1", "kind": "MeshAgent"},
        agentId="worker-1",
        taskId="t-9",
    )
    line = json.loads(JsonFormatter().format(record))
    assert (line["namespace"], line["name"], line["kind"]) == ("prod", "worker-1", "MeshAgent")
    assert (line["agentId"], line["taskId"]) == ("worker-1", "t-9")


def test_exceptions_are_kept_on_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = _record()
        record.exc_info = sys.exc_info()
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "RuntimeError: boom" in json.loads(text)["error"]
