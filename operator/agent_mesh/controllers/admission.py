"""Validating admission: the rules OpenAPI and CEL cannot express.

The apiserver calls this webhook for MeshTask and MeshAgent create/update; what the
schema can check (enums, patterns, ranges, immutability) stays in the CRD so it holds
without the operator. A MeshAgent's spec.endpoint is checked against the egress policy as
far as that needs no DNS (the form, an IP-literal host); its name is checked when the
operator registers the agent and again at each connection.
"""

from __future__ import annotations

from typing import Any

import kopf

from agent_mesh.api import GROUP, VERSION
from agent_mesh.api.meshtask import payload_size_error
from agent_mesh.config import OperatorConfig
from agent_mesh.domain.egress import EgressClass, EgressPolicy
from agent_mesh.domain.errors import EgressRefusedError

WEBHOOK_CONFIGURATION = "agentmesh.io"


def register() -> None:
    """Add the admission handlers to kopf's registry. Only when webhooks are served: kopf
    refuses to start with admission handlers and no server (`--no-webhooks`)."""
    kopf.on.validate(
        GROUP, VERSION, "meshtasks", id="validate-meshtask", operations=["CREATE", "UPDATE"]
    )(validate_meshtask)
    kopf.on.validate(
        GROUP, VERSION, "meshagents", id="validate-meshagent", operations=["CREATE", "UPDATE"]
    )(validate_meshagent)


def validate_meshtask(spec: kopf.Spec, **_: Any) -> None:
    error = payload_size_error(spec.get("payload"))
    if error:
        raise kopf.AdmissionError(error, code=422)


def validate_meshagent(spec: kopf.Spec, memo: kopf.Memo, **_: Any) -> None:
    endpoint = spec.get("endpoint")
    if not endpoint:
        return
    try:
        egress_policy(memo).check_literal(EgressClass.DECLARED, str(endpoint), "spec.endpoint")
    except EgressRefusedError as error:
        raise kopf.AdmissionError(error.message, code=422) from None


def egress_policy(memo: kopf.Memo) -> EgressPolicy:
    """The running operator's policy; before it has started, the configured one."""
    runtime = memo.get("runtime")
    if runtime is not None:
        policy: EgressPolicy = runtime.egress.policy
        return policy
    config: OperatorConfig = memo.config
    return config.egress_policy()
