"""Revocation lists: checks, pruning, persistence form, merging two writers."""

from __future__ import annotations

import datetime as dt

import pytest

from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import MeshClaims
from agent_mesh.domain.errors import ValidationError

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, 500_000, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
LEEWAY = dt.timedelta(seconds=30)


def claims(jti: str = "j", sub: str = "a", iat: dt.datetime = NOW) -> MeshClaims:
    t = int(iat.timestamp())
    return MeshClaims(
        sub=sub,
        agent_type="worker",
        namespace="ns",
        capabilities=[],
        agent_uid="u",
        iat=t,
        nbf=t,
        exp=t + 3600,
        jti=jti,
        iss="agent-mesh",
        aud="agent-mesh",
    )


def test_json_round_trip_keeps_sub_second_before() -> None:
    revocations = RevocationList()
    revocations.revoke_token("j1", NOW + HOUR)
    revocations.revoke_agent("ns", "a", NOW)
    back = RevocationList.from_json(revocations.to_json())
    assert back.is_revoked(claims("j1"))
    assert back.is_revoked(claims("other", iat=NOW - dt.timedelta(seconds=1)))
    assert len(back) == 2


def test_same_second_as_before_counts_as_before() -> None:
    revocations = RevocationList()
    revocations.revoke_agent("ns", "a", NOW)  # NOW has .5 s
    assert revocations.is_revoked(claims("x", iat=NOW))  # iat floors to the second


def test_prune_drops_entries_no_valid_token_can_match() -> None:
    revocations = RevocationList()
    revocations.revoke_token("j1", NOW + HOUR)
    revocations.revoke_agent("ns", "a", NOW)
    revocations.prune(NOW + HOUR, HOUR, LEEWAY)
    assert len(revocations) == 2
    revocations.prune(NOW + HOUR + LEEWAY + dt.timedelta(seconds=1), HOUR, LEEWAY)
    assert len(revocations) == 0


def test_merge_is_a_union_keeping_the_later_before() -> None:
    mine, theirs = RevocationList(), RevocationList()
    mine.revoke_token("j1", NOW + HOUR)
    theirs.revoke_token("j2", NOW + HOUR)
    mine.revoke_agent("ns", "a", NOW)
    theirs.revoke_agent("ns", "a", NOW + dt.timedelta(minutes=5))
    mine.merge(theirs)
    assert mine.is_revoked(claims("j2"))
    assert mine.is_revoked(claims("x", iat=NOW + dt.timedelta(minutes=4)))


@pytest.mark.parametrize("order", ["later last", "later first"])
def test_revoking_an_agent_twice_keeps_the_later_before(order: str) -> None:
    revocations = RevocationList()
    times = [NOW, NOW + dt.timedelta(minutes=5)]
    for before in times if order == "later last" else reversed(times):
        revocations.revoke_agent("ns", "a", before)
    assert revocations.is_revoked(claims("x", iat=NOW + dt.timedelta(minutes=4)))
    assert not revocations.is_revoked(claims("x", iat=NOW + dt.timedelta(minutes=6)))
    assert len(revocations) == 1


def test_agent_revocation_matches_namespace_and_agent_only() -> None:
    revocations = RevocationList()
    revocations.revoke_agent("ns", "a", NOW + HOUR)
    assert revocations.is_revoked(claims("x", sub="a"))
    assert not revocations.is_revoked(claims("x", sub="b"))
    other = claims("x", sub="a").model_copy(update={"namespace": "other"})
    assert not revocations.is_revoked(other)


def test_revoked_jti_matches_that_token_only() -> None:
    revocations = RevocationList()
    revocations.revoke_token("j1", NOW + HOUR)
    assert revocations.is_revoked(claims("j1"))
    assert not revocations.is_revoked(claims("j2"))


def test_empty_list_serializes_and_parses() -> None:
    assert len(RevocationList.from_json(RevocationList().to_json())) == 0
    assert len(RevocationList.from_json("{}")) == 0


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[", "revocations"),
        ("[]", "revocations"),
        ('{"tokens": []}', "revocations.tokens"),
        ('{"tokens": {"j": "yesterday"}}', "revocations.tokens.j"),
        ('{"agents": [{"namespace": "ns"}]}', "revocations.agents[0]"),
        (
            '{"agents": [{"namespace": "ns", "agentId": "a", "before": "2026-01-01T00:00:00"}]}',
            "revocations.agents[0].before",
        ),
        (
            '{"agents": [{"namespace": 7, "agentId": "a", "before": "2026-01-01T00:00:00Z"}]}',
            "revocations.agents[0].namespace",
        ),
        ('{"agents": {"ns": "a"}}', "revocations.agents"),
    ],
)
def test_corrupt_revocations_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RevocationList.from_json(text)
    assert caught.value.field == field
