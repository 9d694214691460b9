"""The MeshAgent admission webhook called in-process (no apiserver): what it answers a
MeshAgent, as the unit tests of its rules read it."""

from __future__ import annotations

from typing import Any

import kopf

from agent_mesh.controllers.admission import validate_meshagent


def admission_refusal(body: dict[str, Any], memo: kopf.Memo) -> str | None:
    """The webhook's refusal of MeshAgent `body` (its spec and, if given, its metadata)
    under `memo`: the message (always a 422), or None when admitted."""
    try:
        validate_meshagent(kopf.Spec(body), memo=memo, meta=body.get("metadata"))
    except kopf.AdmissionError as error:
        refused = error
    else:
        return None
    assert refused.code == 422, refused
    return str(refused)
