"""Audit records: JSON lines on agent_mesh.audit, and the recent ones in memory."""

from __future__ import annotations

import json
import logging

import pytest

from agent_mesh.auth.audit import AuditLog
from agent_mesh.observability.logging import JsonFormatter


def test_record_is_one_json_line_with_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog()
    with caplog.at_level(logging.INFO, logger="agent_mesh.audit"):
        log.record("acl.decision", "worker may not admin acl", decision="deny", agentId="w1")
    line = json.loads(JsonFormatter().format(caplog.records[-1]))
    assert line["logger"] == "agent_mesh.audit"
    assert (line["event"], line["decision"], line["agentId"]) == ("acl.decision", "deny", "w1")
    assert line["msg"] == "worker may not admin acl"


def test_recent_is_newest_first_filtered_and_bounded() -> None:
    log = AuditLog(capacity=3)
    for i in range(5):
        log.record("token.issued", "issued", namespace="a" if i % 2 else "b", n=i)
    assert [r["n"] for r in log.recent()] == [4, 3, 2]
    assert [r["n"] for r in log.recent(namespace="a")] == [3]
    assert log.recent(event="other") == []


def test_listeners_see_every_record() -> None:
    log = AuditLog()
    seen: list[str] = []
    log.subscribe(lambda r: seen.append(r["event"]))
    log.record("x", "m")
    assert seen == ["x"]


def test_refusals_have_a_ring_of_their_own_and_never_evict_other_records() -> None:
    log = AuditLog(capacity=3, refusal_capacity=2)
    log.record("token.issued", "issued", n=1)
    for i in range(100):
        log.record("token.rejected", "rejected", n=100 + i)
    log.record("acl.decision", "allowed", n=2)
    assert [r["n"] for r in log.recent(event="token.issued")] == [1]
    # both rings, newest first: the refusals ring kept its last two
    assert [r["n"] for r in log.recent()] == [2, 199, 198, 1]
