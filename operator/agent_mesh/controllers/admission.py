"""Validating admission: the rules OpenAPI and CEL cannot express.

The apiserver calls this webhook for MeshTask and MeshAgent create/update; what the
schema can check (enums, patterns, ranges, immutability) stays in the CRD so it holds
without the operator. A MeshAgent's spec.endpoint is checked against the egress policy as
far as that needs no DNS (the form, an IP-literal host); its name is checked when the
operator registers the agent and again at each connection. A tailscale agent's MagicDNS
host name must fit a DNS label and be no other agent's; a managed agent's name must fit
the StatefulSet and Service named after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from agent_mesh.api import GROUP, VERSION
from agent_mesh.api.meshagent import Network
from agent_mesh.api.meshtask import payload_size_error
from agent_mesh.config import OperatorConfig
from agent_mesh.domain.egress import EgressClass, EgressPolicy
from agent_mesh.domain.errors import EgressRefusedError
from agent_mesh.tailscale.names import collision_error, hostname_error
from agent_mesh.workloads.objects import workload_name_error


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


def validate_meshagent(
    spec: kopf.Spec, memo: kopf.Memo, meta: Mapping[str, Any] | None = None, **_: Any
) -> None:
    meta = meta or {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    if spec.get("workload") is not None and name:
        problem = workload_name_error(name)
        if problem is not None:
            raise kopf.AdmissionError(problem, code=422)
    config: OperatorConfig = memo.config
    if (spec.get("network") or config.default_network) == Network.TAILSCALE.value and name:
        problem = tailnet_hostname_problem(
            namespace, str(spec.get("agentId") or name), name, memo, config.default_network
        )
        if problem is not None:
            raise kopf.AdmissionError(problem, code=422)
    endpoint = spec.get("endpoint")
    if not endpoint:
        return
    try:
        egress_policy(memo).check_literal(EgressClass.DECLARED, str(endpoint), "spec.endpoint")
    except EgressRefusedError as error:
        raise kopf.AdmissionError(error.message, code=422) from None


def tailnet_hostname_problem(
    namespace: str, agent_id: str, name: str, memo: kopf.Memo, default_network: str
) -> str | None:
    """Why the agent's MagicDNS host name cannot be its device's: too long, not a DNS
    label, or another tailscale agent's (as far as the operator's registry knows them)."""
    runtime = memo.get("runtime")
    others = [
        (record.namespace, record.agent_id)
        for record in (runtime.registry if runtime is not None else ())
        if (record.network or default_network) == Network.TAILSCALE.value
        and (record.namespace, record.name) != (namespace, name)
    ]
    return hostname_error(namespace, agent_id) or collision_error(namespace, agent_id, others)


def egress_policy(memo: kopf.Memo) -> EgressPolicy:
    """The running operator's policy; before it has started, the configured one."""
    runtime = memo.get("runtime")
    if runtime is not None:
        policy: EgressPolicy = runtime.egress.policy
        return policy
    config: OperatorConfig = memo.config
    return config.egress_policy()
