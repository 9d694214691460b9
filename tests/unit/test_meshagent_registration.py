"""What the operator writes into a new MeshAgent's status, and that it writes nothing twice."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agent_mesh.api.meshagent_status import credential_conditions, registration_patch
from agent_mesh.domain.clock import FakeClock, rfc3339
from agent_mesh.domain.conditions import get_condition
from agent_mesh.kube.credentials import foreign_secret_problem


def _apply(status: dict, patch: dict) -> dict:  # type: ignore[type-arg]
    return {**status, **patch}


def test_a_new_agent_is_pending_registered_and_not_ready() -> None:
    clock = FakeClock()
    patch = registration_patch({}, 1, clock.now())
    assert patch["healthStatus"] == "pending"
    assert patch["registeredAt"] == rfc3339(clock.now())
    assert patch["observedGeneration"] == 1
    registered = get_condition(patch["conditions"], "Registered")
    ready = get_condition(patch["conditions"], "Ready")
    assert registered is not None and registered["status"] == "True"
    assert ready is not None and ready["status"] == "False"
    assert ready["reason"] == "AwaitingHeartbeat"


def test_a_registered_agent_needs_no_status_write() -> None:
    clock = FakeClock()
    status = _apply({}, registration_patch({}, 1, clock.now()))
    clock.advance(120)
    assert registration_patch(status, 1, clock.now()) == {}


def test_a_spec_change_only_bumps_observed_generation() -> None:
    clock = FakeClock()
    status = _apply({}, registration_patch({}, 1, clock.now()))
    clock.advance(5)
    patch = registration_patch(status, 2, clock.now())
    assert patch["observedGeneration"] == 2
    assert "registeredAt" not in patch and "healthStatus" not in patch
    for cond in patch["conditions"]:
        assert cond["observedGeneration"] == 2
        assert cond["lastTransitionTime"] == status["registeredAt"]


def test_registration_never_overrides_a_known_health() -> None:
    clock = FakeClock()
    status = _apply({}, registration_patch({}, 1, clock.now()))
    status["healthStatus"] = "healthy"
    patch = registration_patch(status, 1, clock.now())
    assert "healthStatus" not in patch


# -- the credential Secret of an external agent ------------------------------------------


@dataclass
class Owner:
    kind: str
    name: str
    uid: str
    api_version: str = "agentmesh.io/v1alpha1"


def test_a_credential_secret_owned_by_the_agent_is_taken_over() -> None:
    owners = [Owner("MeshAgent", "ext", "uid-1")]
    assert foreign_secret_problem(owners, "uid-1", "ns", "ext") is None


def test_a_credential_secret_left_by_a_deleted_namesake_is_taken_over() -> None:
    owners = [Owner("MeshAgent", "ext", "uid-of-the-deleted-one")]
    assert foreign_secret_problem(owners, "uid-1", "ns", "ext") is None


@pytest.mark.parametrize(
    ("owners", "named"),
    [
        ([], "it has no owner"),
        ([Owner("MeshAgent", "other", "uid-o")], "MeshAgent other (uid uid-o)"),
        ([Owner("ConfigMap", "planted", "uid-x", "v1")], "ConfigMap planted (uid uid-x)"),
        ([Owner("MeshAgent", "ext", "uid-y", "evil.io/v1")], "MeshAgent ext (uid uid-y)"),
        (
            [Owner("MeshAgent", "ext", "uid-old"), Owner("Deployment", "d", "uid-d", "apps/v1")],
            "Deployment d",
        ),
    ],
)
def test_a_credential_secret_the_agent_does_not_own_is_refused_naming_the_problem(
    owners: list[Owner], named: str
) -> None:
    problem = foreign_secret_problem(owners, "uid-1", "ns", "ext")
    assert problem is not None
    assert "Secret ns/ext-mesh-credential exists but is not owned by MeshAgent ext" in problem
    assert named in problem
    assert "Delete or rename it" in problem


def test_a_refused_credential_secret_sets_credential_issued_false_until_it_is_resolved() -> None:
    clock = FakeClock()
    refused = credential_conditions([], "Secret ns/ext-mesh-credential ...", 1, clock.now())
    condition = get_condition(refused, "CredentialIssued")
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "CredentialSecretNotOwned")
    clock.advance(30)
    issued = get_condition(credential_conditions(refused, None, 1, clock.now()), "CredentialIssued")
    assert issued is not None
    assert (issued["status"], issued["reason"]) == ("True", "CredentialSecretReady")
    assert issued["lastTransitionTime"] == rfc3339(clock.now())
