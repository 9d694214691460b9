"""Where the time of a round trip goes besides HTTP: µs per call of each step either end
takes per message (build, validate and serialize the envelope, metrics, token and ACL
checks), timed in this process next to what the raw baseline does instead."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agent_mesh.auth.jwks import PublicKeySet
from agent_mesh.auth.keys import KeyRing
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import AgentIdentity, TokenIssuer, TokenVerifier, bearer_token
from agent_mesh.domain.acl import Action, PolicyIndex
from agent_mesh.domain.clock import SystemClock
from agent_mesh.domain.message import Message, MessageType
from agent_mesh.transport.metrics import (
    TRANSPORT_ACTIVE,
    TRANSPORT_DURATION,
    TRANSPORT_REQUESTS,
)
from common.load import per_call_us
from common.output import Column, label, table

from .parts import CALLER, PAYLOAD, RECEIVER, raw_envelope, raw_reply


def run(seconds: float) -> list[dict[str, Any]]:
    """µs per call of each step, ours next to the raw baseline's (0: it has no such
    step)."""
    clock = SystemClock()
    ring = KeyRing.generate("ES256", clock.now())
    token, _ = TokenIssuer(lambda: ring, clock).issue(
        AgentIdentity(CALLER, "orchestrator", "bench", (), "uid-0")
    )
    keys = PublicKeySet.from_jwks(ring.jwks())
    verifier = TokenVerifier(lambda: keys, clock, RevocationList())
    policies = PolicyIndex()
    authorization = f"Bearer {token}"
    request = Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD)
    request_bytes = json.dumps(request.to_wire()).encode()
    reply_bytes = json.dumps(request.reply(PAYLOAD).to_wire()).encode()
    raw_request = json.loads(request_bytes)

    def metrics() -> None:  # what Transport.send/_attempt record per message
        TRANSPORT_ACTIVE.inc()
        TRANSPORT_ACTIVE.dec()
        TRANSPORT_DURATION.observe(0.001)
        TRANSPORT_REQUESTS.labels(outcome="ok").inc()

    steps: list[tuple[str, str, Callable[[], object], Callable[[], object] | None]] = [
        (
            "caller",
            "build the request (Message.new, to_wire, json.dumps)",
            lambda: json.dumps(
                Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD).to_wire()
            ),
            lambda: json.dumps(raw_envelope(CALLER, RECEIVER, "request", PAYLOAD)),
        ),
        ("caller", "transport metrics (gauge, histogram, labelled counter)", metrics, None),
        (
            "caller",
            "parse the reply (json.loads, Message.model_validate)",
            lambda: Message.model_validate(json.loads(reply_bytes)),
            lambda: json.loads(reply_bytes),
        ),
        (
            "agent",
            "token: bearer_token + TokenVerifier.verify, cache hit",
            lambda: verifier.verify(bearer_token(authorization)),
            None,
        ),
        (
            "agent",
            "ACL: PolicyIndex.decide (cached)",
            lambda: policies.decide("orchestrator", "bench", Action.EXECUTE, "agents", "bench"),
            None,
        ),
        (
            "agent",
            "parse the request (Message.model_validate_json)",
            lambda: Message.model_validate_json(request_bytes),
            lambda: json.loads(request_bytes),
        ),
        (
            "agent",
            "build the reply (Message.reply, to_wire, json.dumps)",
            lambda: json.dumps(request.reply(PAYLOAD).to_wire()),
            lambda: json.dumps(raw_reply(raw_request)),
        ),
    ]
    verifier.verify(token)  # the first sight verifies the signature; the rest hit the cache
    return [
        {
            "side": side,
            "step": what,
            "ours_us": per_call_us(ours, seconds),
            "raw_us": per_call_us(raw, seconds) if raw is not None else 0.0,
        }
        for side, what, ours, raw in steps
    ]


def report(steps: list[dict[str, Any]]) -> None:
    print(
        table(
            [
                label(6, "", "side"),
                label(58, "step", "step"),
                Column("ours", 6, ".1f", "ours_us"),
                Column("raw", 6, ".1f", "raw_us"),
            ],
            steps,
            "per message, besides HTTP (in-process, µs per call)",
        )
    )
    extra = sum(r["ours_us"] - r["raw_us"] for r in steps)
    print(f"ours - raw, both ends together: {extra:.0f} µs per round trip")
    print()
