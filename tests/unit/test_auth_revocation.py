"""Revocation lists: checks, namespace scoping, how long entries are kept (also when the
token lifetime is lowered), persistence form and its migration, merging two writers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.authority import Authority, AuthSettings, credential_hash
from agent_mesh.auth.memory import (
    MemoryKeyStore,
    MemoryRevocationStore,
)
from agent_mesh.auth.revocation import ANY_NAMESPACE, IssuedLifetime, RevocationList
from agent_mesh.auth.tokens import MeshClaims
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.errors import AuthError, ValidationError
from tests.support.memory_mesh import memory_authority

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, 500_000, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
LEEWAY = dt.timedelta(seconds=30)


def claims(
    jti: str = "j", sub: str = "a", iat: dt.datetime = NOW, namespace: str = "ns"
) -> MeshClaims:
    t = int(iat.timestamp())
    return MeshClaims(
        sub=sub,
        agent_type="worker",
        namespace=namespace,
        capabilities=[],
        agent_uid="u",
        iat=t,
        nbf=t,
        exp=t + 3600,
        jti=jti,
        iss="agent-mesh",
        aud="agent-mesh",
    )


def round_trip(revocations: RevocationList) -> RevocationList:
    return RevocationList.from_json(revocations.to_json())


def test_json_round_trip_keeps_sub_second_before_namespaces_and_expiries() -> None:
    revocations = RevocationList()
    revocations.revoke_token("j1", NOW + HOUR, "ns")
    revocations.revoke_agent("ns", "a", NOW, NOW + HOUR)
    revocations.longest_lifetime = IssuedLifetime(86400, NOW)
    back = round_trip(revocations)
    assert back.is_revoked(claims("j1"))
    assert not back.is_revoked(claims("j1", namespace="other"))
    assert back.is_revoked(claims("other", iat=NOW - dt.timedelta(seconds=1)))
    assert back.longest_lifetime == IssuedLifetime(86400, NOW)
    assert back.to_json() == revocations.to_json()
    assert len(back) == 2


def test_same_second_as_before_counts_as_before() -> None:
    revocations = RevocationList()
    revocations.revoke_agent("ns", "a", NOW)  # NOW has .5 s
    assert revocations.is_revoked(claims("x", iat=NOW))  # iat floors to the second


# --- scoping by namespace -------------------------------------------------------------------


def test_a_jti_revocation_refuses_that_token_of_its_namespace_only() -> None:
    revocations = RevocationList()
    revocations.revoke_token("j1", NOW + HOUR, "team-b")
    assert revocations.is_revoked(claims("j1", namespace="team-b"))
    assert not revocations.is_revoked(claims("j1", namespace="team-a"))
    assert not revocations.is_revoked(claims("j2", namespace="team-b"))


def test_a_jti_entry_from_before_scoping_refuses_the_jti_in_every_namespace() -> None:
    revocations = RevocationList.from_json('{"tokens": {"j1": "2026-06-01T13:00:00Z"}}')
    assert revocations.is_revoked(claims("j1", namespace="team-a"))
    assert revocations.is_revoked(claims("j1", namespace="team-b"))
    assert round_trip(revocations).to_wire()["tokensByNamespace"] == {
        ANY_NAMESPACE: {"j1": "2026-06-01T13:00:00Z"}
    }


def test_readers_from_before_scoping_still_find_every_revoked_jti() -> None:
    revocations = RevocationList()
    revocations.revoke_token("j1", NOW + HOUR, "team-a")
    revocations.revoke_token("j1", NOW + 2 * HOUR, "team-b")
    revocations.revoke_agent("team-a", "w", NOW, NOW + HOUR)
    doc = json.loads(revocations.to_json())
    assert doc["tokens"] == {"j1": "2026-06-01T14:00:00.500000Z"}  # the later of the two
    assert {"namespace", "agentId", "before"} <= set(doc["agents"][0])


def test_a_jti_an_older_writer_added_to_tokens_only_is_unscoped() -> None:
    doc = {
        "tokens": {"j1": "2026-06-01T13:00:00Z", "j2": "2026-06-01T13:00:00Z"},
        "tokensByNamespace": {"team-a": {"j1": "2026-06-01T13:00:00Z"}},
    }
    revocations = RevocationList.from_wire(doc)
    assert not revocations.is_revoked(claims("j1", namespace="team-b"))
    assert revocations.is_revoked(claims("j2", namespace="team-b"))


def test_for_namespaces_keeps_those_namespaces_entries_and_unscoped_ones() -> None:
    revocations = RevocationList()
    revocations.revoke_token("ja", NOW + HOUR, "team-a")
    revocations.revoke_token("jb", NOW + HOUR, "team-b")
    revocations.revoke_token("old", NOW + HOUR)
    revocations.revoke_agent("team-a", "w", NOW, NOW + HOUR)
    revocations.revoke_agent("team-b", "w", NOW, NOW + HOUR)
    revocations.longest_lifetime = IssuedLifetime(86400, None)
    seen = revocations.for_namespaces({"team-a"}).to_wire()
    assert seen["tokensByNamespace"] == {
        "team-a": {"ja": "2026-06-01T13:00:00.500000Z"},
        ANY_NAMESPACE: {"old": "2026-06-01T13:00:00.500000Z"},
    }
    assert set(seen["tokens"]) == {"ja", "old"}
    assert [a["namespace"] for a in seen["agents"]] == ["team-a"]
    assert "longestTokenLifetime" not in seen


def test_agent_revocation_matches_namespace_and_agent_only() -> None:
    revocations = RevocationList()
    revocations.revoke_agent("ns", "a", NOW + HOUR)
    assert revocations.is_revoked(claims("x", sub="a"))
    assert not revocations.is_revoked(claims("x", sub="b"))
    assert not revocations.is_revoked(claims("x", sub="a", namespace="other"))


# --- how long entries are kept ----------------------------------------------------------------


def test_prune_drops_each_entry_after_the_expiry_stored_with_it() -> None:
    revocations = RevocationList()
    revocations.revoke_token("j1", NOW + HOUR, "ns")
    revocations.revoke_agent("ns", "a", NOW, NOW + DAY)
    revocations.prune(NOW + HOUR - dt.timedelta(seconds=1))
    assert len(revocations) == 2
    revocations.prune(NOW + HOUR)
    assert len(revocations) == 1  # the agent's entry is kept for its own, later, expiry
    revocations.prune(NOW + DAY)
    assert len(revocations) == 0


def test_an_entry_without_a_stored_expiry_is_kept_until_it_is_given_one() -> None:
    stored = '{"agents": [{"namespace": "ns", "agentId": "a", "before": "2026-06-01T12:00:00Z"}]}'
    revocations = RevocationList.from_json(stored)
    revocations.prune(NOW + 30 * DAY)
    assert len(revocations) == 1
    assert revocations.settle_unknown_expiries(NOW + HOUR) == 1
    assert revocations.to_wire()["agents"][0]["expiresAt"] == "2026-06-01T13:00:00.500000Z"
    revocations.prune(NOW + HOUR)
    assert len(revocations) == 0


def test_a_longer_lifetime_is_tracked_until_its_last_token_has_expired() -> None:
    revocations = RevocationList()
    assert revocations.track_lifetime(DAY, NOW, LEEWAY)
    assert revocations.longest_lifetime == IssuedLifetime(86400, None)
    assert not revocations.track_lifetime(DAY, NOW + HOUR, LEEWAY)  # nothing new to store
    lowered = NOW + 2 * HOUR
    assert revocations.track_lifetime(HOUR, lowered, LEEWAY)
    assert revocations.longest_lifetime == IssuedLifetime(86400, lowered)
    # a token issued just before the change may live a day: revocations made later cover it
    assert revocations.latest_expiry(lowered + HOUR, HOUR) == lowered + DAY
    assert not revocations.track_lifetime(HOUR, lowered + DAY, LEEWAY)
    revocations.track_lifetime(HOUR, lowered + DAY + LEEWAY + dt.timedelta(seconds=1), LEEWAY)
    assert revocations.longest_lifetime == IssuedLifetime(3600, None)


def test_merge_is_a_union_keeping_the_later_before_and_expiry() -> None:
    mine, theirs = RevocationList(), RevocationList()
    mine.revoke_token("j1", NOW + HOUR, "ns")
    theirs.revoke_token("j2", NOW + HOUR, "ns")
    mine.revoke_agent("ns", "a", NOW, NOW + 2 * HOUR)
    theirs.revoke_agent("ns", "a", NOW + dt.timedelta(minutes=5))  # expiry unknown
    theirs.longest_lifetime = IssuedLifetime(7200, None)
    mine.merge(theirs)
    assert mine.is_revoked(claims("j2"))
    assert mine.is_revoked(claims("x", iat=NOW + dt.timedelta(minutes=4)))
    assert mine.to_wire()["agents"][0]["expiresAt"] == "2026-06-01T14:00:00.500000Z"
    assert mine.longest_lifetime == IssuedLifetime(7200, None)


@pytest.mark.parametrize("order", ["later last", "later first"])
def test_revoking_an_agent_twice_keeps_the_later_before(order: str) -> None:
    revocations = RevocationList()
    times = [NOW, NOW + dt.timedelta(minutes=5)]
    for before in times if order == "later last" else reversed(times):
        revocations.revoke_agent("ns", "a", before)
    assert revocations.is_revoked(claims("x", iat=NOW + dt.timedelta(minutes=4)))
    assert not revocations.is_revoked(claims("x", iat=NOW + dt.timedelta(minutes=6)))
    assert len(revocations) == 1


def test_empty_list_serializes_and_parses() -> None:
    assert len(round_trip(RevocationList())) == 0
    assert len(RevocationList.from_json("{}")) == 0


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[", "revocations"),
        ("[]", "revocations"),
        ('{"tokens": []}', "revocations.tokens"),
        ('{"tokens": {"j": "yesterday"}}', "revocations.tokens.j"),
        ('{"tokensByNamespace": []}', "revocations.tokensByNamespace"),
        ('{"tokensByNamespace": {"ns": ["j"]}}', "revocations.tokensByNamespace.ns"),
        ('{"tokensByNamespace": {"ns": {"j": "soon"}}}', "revocations.tokensByNamespace.ns.j"),
        ('{"agents": [{"namespace": "ns"}]}', "revocations.agents[0]"),
        (
            '{"agents": [{"namespace": "ns", "agentId": "a", "before": "2026-01-01T00:00:00"}]}',
            "revocations.agents[0].before",
        ),
        (
            '{"agents": [{"namespace": 7, "agentId": "a", "before": "2026-01-01T00:00:00Z"}]}',
            "revocations.agents[0].namespace",
        ),
        (
            '{"agents": [{"namespace": "ns", "agentId": "a", "before": "2026-01-01T00:00:00Z",'
            ' "expiresAt": 5}]}',
            "revocations.agents[0].expiresAt",
        ),
        ('{"agents": {"ns": "a"}}', "revocations.agents"),
        ('{"longestTokenLifetime": {"seconds": "1h"}}', "revocations.longestTokenLifetime"),
        (
            '{"longestTokenLifetime": {"seconds": 60, "issuedUntil": "later"}}',
            "revocations.longestTokenLifetime.issuedUntil",
        ),
    ],
)
def test_corrupt_revocations_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RevocationList.from_json(text)
    assert caught.value.field == field


# --- the authority: lowering the token lifetime lets no revocation lapse ------------------------

CREDENTIAL = "credential"


class Cluster:
    """What outlives an operator restart: keys, stored revocations, agents, the clock."""

    def __init__(self) -> None:
        self.keys = MemoryKeyStore()
        self.revocations = MemoryRevocationStore()
        self.registry = AgentRegistry()
        self.clock = FakeClock(NOW)
        self.registry.upsert(
            AgentRecord(
                namespace="ns",
                name="w",
                uid="uid-w",
                agent_id="w",
                agent_type="worker",
                capabilities=(),
                service_account=None,
                credential_hash=credential_hash(CREDENTIAL),
                external=True,
            )
        )

    async def operator(self, lifetime: dt.timedelta) -> Authority:
        """An operator (re)started with `lifetime` as its token lifetime setting."""
        return await memory_authority(
            self.registry,
            self.clock,
            AuditLog(clock=self.clock),
            settings=AuthSettings(token_lifetime=lifetime, key_overlap=2 * DAY),
            keys=self.keys,
            revocations=self.revocations,
        )

    def advance(self, delta: dt.timedelta) -> None:
        self.clock.advance(delta.total_seconds())


def verdict(authority: Authority, token: str) -> str:
    """What the operator says of `token`: accepted, or the refusal's code."""
    try:
        authority.verifier.verify(token)
    except AuthError as error:
        return error.code
    return "accepted"


async def test_an_agent_revocation_outlives_a_lowered_token_lifetime() -> None:
    cluster = Cluster()
    before = await cluster.operator(DAY)
    token, _ = await before.exchange_credential("ns", "w", CREDENTIAL)  # valid for a day
    await before.revoke_agent("ns", "w", actor="test")
    after = await cluster.operator(HOUR)  # restarted with a lower lifetime
    cluster.advance(2 * HOUR)
    await after.revoke_token("unrelated", actor="test", namespace="ns")  # prunes and stores
    assert verdict(after, token) == "TokenRevoked"
    assert (
        verdict(await cluster.operator(HOUR), token) == "TokenRevoked"
    )  # and after one more restart


async def test_a_token_issued_under_a_longer_lifetime_stays_revoked_after_the_setting_drops() -> (
    None
):
    cluster = Cluster()
    before = await cluster.operator(DAY)
    token, claims_ = await before.exchange_credential("ns", "w", CREDENTIAL)
    cluster.advance(dt.timedelta(minutes=1))
    after = await cluster.operator(HOUR)
    await after.revoke_token(claims_.jti, actor="test", namespace="ns")  # revoked after the drop
    cluster.advance(5 * HOUR)
    await after.revoke_agent("ns", "someone-else", actor="test")  # prunes and stores
    restarted = await cluster.operator(HOUR)
    assert verdict(restarted, token) == "TokenRevoked"  # still valid by its exp, still refused


async def test_entries_go_once_every_token_they_cover_has_expired() -> None:
    cluster = Cluster()
    before = await cluster.operator(DAY)
    await before.revoke_agent("ns", "w", actor="test")
    after = await cluster.operator(HOUR)
    cluster.advance(DAY + 2 * LEEWAY)
    await after.revoke_token("fresh", actor="test", namespace="ns")
    stored = cluster.revocations.stored.to_wire()
    assert stored["agents"] == []
    assert stored["longestTokenLifetime"] == {"seconds": 3600, "issuedUntil": None}


async def test_entries_stored_before_expiries_were_are_kept_one_lifetime_past_the_upgrade() -> None:
    cluster = Cluster()
    cluster.revocations.stored = RevocationList.from_wire(
        {"agents": [{"namespace": "ns", "agentId": "w", "before": "2026-06-01T11:00:00Z"}]}
    )
    authority = await cluster.operator(HOUR)
    (entry,) = cluster.revocations.stored.to_wire()["agents"]
    assert entry["expiresAt"] == "2026-06-01T13:00:30.500000Z"  # start + lifetime + leeway
    assert authority.revocations.is_revoked(claims("x", sub="w", iat=NOW - 2 * HOUR))


async def test_a_jti_revocation_is_recorded_with_its_namespace_in_the_audit() -> None:
    authority = await Cluster().operator(HOUR)
    await authority.revoke_token("j1", actor="ns/boss", namespace="team-b")
    (record,) = authority.audit.recent(event="token.revoked", namespace="team-b")
    assert (record["jti"], record["actor"]) == ("j1", "ns/boss")
    assert not authority.revocations.is_revoked(claims("j1", namespace="team-a"))


async def test_a_rotated_out_credential_is_refused_while_the_registry_still_shows_it() -> None:
    """A watch event older than the rotation may put the old hash back in the registry for
    a moment: the credential retired by the rotation stays refused all the same."""
    cluster = Cluster()
    authority = await cluster.operator(HOUR)
    authority.retire_credential("ns", "w", credential_hash(CREDENTIAL))
    with pytest.raises(AuthError) as refused:
        await authority.exchange_credential("ns", "w", CREDENTIAL)
    assert refused.value.code == "CredentialInvalid"
    assert refused.value.field == "credential"


async def test_a_credential_issued_before_the_watch_brought_its_hash_is_accepted() -> None:
    """The agent read its Secret as soon as status.credential was written; the operator's
    registry still holds the MeshAgent without a hash: the apiserver is asked."""
    cluster = Cluster()
    authority = await cluster.operator(HOUR)
    known = cluster.registry.get("ns", "w")
    assert known is not None
    cluster.registry.upsert(dataclasses.replace(known, credential_hash=None))

    async def apiserver(namespace: str, agent_id: str) -> AgentRecord | None:
        return known if (namespace, agent_id) == ("ns", "w") else None

    authority._fetch_agent = apiserver
    token, claims = await authority.exchange_credential("ns", "w", CREDENTIAL)
    assert claims.sub == "w" and verdict(authority, token) == "accepted"
    with pytest.raises(AuthError):  # a wrong credential is still wrong
        await authority.exchange_credential("ns", "w", "guess")


async def test_a_stale_credential_hash_in_the_registry_is_checked_with_the_apiserver() -> None:
    """A stale watch event put back a copy of the MeshAgent with the hash of an earlier
    credential: the agent's current credential is checked against the apiserver's copy,
    and the registry takes that copy."""
    cluster = Cluster()
    authority = await cluster.operator(HOUR)
    known = cluster.registry.get("ns", "w")
    assert known is not None
    cluster.registry.upsert(dataclasses.replace(known, credential_hash="0" * 64))
    asked: list[tuple[str, str]] = []

    async def apiserver(namespace: str, agent_id: str) -> AgentRecord | None:
        asked.append((namespace, agent_id))
        return known if (namespace, agent_id) == ("ns", "w") else None

    authority._fetch_agent = apiserver
    token, claims = await authority.exchange_credential("ns", "w", CREDENTIAL)
    assert claims.sub == "w" and verdict(authority, token) == "accepted"
    assert asked == [("ns", "w")]
    assert cluster.registry.get("ns", "w") == known
    with pytest.raises(AuthError):  # a wrong credential is still wrong, after one more look
        await authority.exchange_credential("ns", "w", "guess")
    assert len(asked) == 2
