"""Admission: the rules OpenAPI and CEL cannot express, and the tailscale sidecar injected
into pods you run yourself.

The apiserver calls the validating webhooks for MeshTask and MeshAgent create/update; what
the schema can check (enums, patterns, ranges, immutability) stays in the CRD so it holds
without the operator. A MeshAgent's spec.endpoint is checked against the egress policy as
far as that needs no DNS (the form, an IP-literal host); its name is checked when the
operator registers the agent and again at each connection. A tailscale agent's MagicDNS
host name must fit a DNS label and be no other agent's; a managed agent's name must fit
the StatefulSet and Service named after it.

The mutating webhook `inject-tailscale` is called for pods labelled
`agentmesh.io/agent=<MeshAgent name>` when they are created (workloads/injection.py
decides). `webhooks()` builds both configurations the way the Helm chart declares them, for
the operator's own registration (webhook_registration=self).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

import kopf

from agent_mesh.api import GROUP, VERSION
from agent_mesh.api.meshagent import Network
from agent_mesh.api.meshtask import payload_size_error
from agent_mesh.config import OperatorConfig
from agent_mesh.domain.agents import AGENT_LABEL
from agent_mesh.domain.egress import EgressClass, EgressPolicy
from agent_mesh.domain.errors import EgressRefusedError, MeshError
from agent_mesh.kube.agents import read_meshagent
from agent_mesh.tailscale.names import collision_error, hostname_error
from agent_mesh.workloads.injection import inject
from agent_mesh.workloads.objects import workload_name_error

VALIDATED: Final = ("meshtask", "meshagent")
"""The kinds the validating webhooks check: handler `validate-<kind>`, path the same."""
INJECT_ID: Final = "inject-tailscale"
INJECT_TIMEOUT_SECONDS: Final = 5
"""The apiserver waits this long for the injection webhook. It reads one MeshAgent; a
pod's creation should never wait the 30 s maximum for an operator that is not there."""
VALIDATE_TIMEOUT_SECONDS: Final = 10
SYSTEM_NAMESPACES: Final = ("kube-system", "kube-public", "kube-node-lease")
"""Never injected into (nor is the operator's own namespace): the webhook's failurePolicy
is Fail, and the cluster's own pods, and the operator's, must start without the operator."""
INJECTED_LABELS: Final[dict[str, Any]] = {AGENT_LABEL: kopf.PRESENT}
INJECTED_POD_SELECTOR: Final = [
    {"key": AGENT_LABEL, "operator": "Exists"},
    # the operator's own StatefulSets' pods carry their sidecar already: they never wait
    # on the webhook (NotIn also matches pods without the label)
    {"key": "app.kubernetes.io/managed-by", "operator": "NotIn", "values": ["agent-mesh"]},
]
"""The pods the apiserver calls the injection webhook for."""


def register() -> None:
    """Add the admission handlers to kopf's registry. Only when webhooks are served: kopf
    refuses to start with admission handlers and no server (`--no-webhooks`)."""
    kopf.on.validate(
        GROUP, VERSION, "meshtasks", id="validate-meshtask", operations=["CREATE", "UPDATE"]
    )(validate_meshtask)
    kopf.on.validate(
        GROUP, VERSION, "meshagents", id="validate-meshagent", operations=["CREATE", "UPDATE"]
    )(validate_meshagent)
    # CREATE only: a pod's containers cannot change afterwards, so an UPDATE has nothing
    # to inject into (and is never touched)
    kopf.on.mutate("v1", "pods", id=INJECT_ID, operations=["CREATE"], labels=INJECTED_LABELS)(
        inject_tailscale
    )


async def inject_tailscale(
    body: kopf.Body, patch: kopf.Patch, warnings: list[str], memo: kopf.Memo, **_: Any
) -> None:
    """Add the tailscale sidecar to a labelled pod of a tailscale MeshAgent (once), leave
    any other pod as it is with a warning saying why, refuse one that could not run it."""
    config: OperatorConfig = memo.config
    namespace = str(body.get("metadata", {}).get("namespace") or "")
    if not config.watches(namespace) or namespace in excluded_namespaces(config):
        return  # another operator's namespace (its own webhook answers), or a system one
    agent_name = str(body.get("metadata", {}).get("labels", {}).get(AGENT_LABEL) or "")
    try:
        meshagent = await asyncio.wait_for(
            read_meshagent(memo.runtime.api, namespace, agent_name),
            timeout=INJECT_TIMEOUT_SECONDS - 1,
        )
    except TimeoutError:
        raise kopf.AdmissionError(
            f"MeshAgent {namespace}/{agent_name} could not be read in time: try again",
            code=503,
        ) from None
    except MeshError as error:
        raise kopf.AdmissionError(error.message, code=503) from None
    decision = inject(
        body,
        meshagent,
        agent_name=agent_name,
        settings=config.sidecar_settings(),
        default_network=config.default_network,
    )
    if decision.refusal is not None:
        raise kopf.AdmissionError(decision.refusal, code=422)
    if decision.warning is not None:
        warnings.append(decision.warning)
    if decision.containers is not None:
        patch.spec["containers"] = decision.containers
        patch.spec["volumes"] = decision.volumes


def excluded_namespaces(config: OperatorConfig) -> list[str]:
    """Namespaces the injection webhook is never called for: the system's and the
    operator's own."""
    return [*SYSTEM_NAMESPACES, config.operator_namespace]


def webhooks(
    config: OperatorConfig, client_config: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The validating and the mutating webhooks, as charts/agent-mesh/templates/webhook.yaml
    declares them, at `client_config` (a URL, or a Service; each webhook's path is its
    handler's id). Named `<id>.<webhook_configuration>`."""
    name = config.webhook_configuration

    def at(handler: str) -> dict[str, Any]:
        if "url" in client_config:
            return {**client_config, "url": f"{str(client_config['url']).rstrip('/')}/{handler}"}
        return {**client_config, "service": {**client_config["service"], "path": f"/{handler}"}}

    common = {"sideEffects": "None", "matchPolicy": "Equivalent"}
    versions = {"admissionReviewVersions": ["v1", "v1beta1"]}
    validating = [
        {
            "name": f"validate-{kind}.{name}",
            "clientConfig": at(f"validate-{kind}"),
            "rules": [
                {
                    "apiGroups": [GROUP],
                    "apiVersions": [VERSION],
                    "resources": [f"{kind}s"],
                    "operations": ["CREATE", "UPDATE"],
                    "scope": "*",
                }
            ],
            **common,
            "failurePolicy": "Fail",
            "timeoutSeconds": VALIDATE_TIMEOUT_SECONDS,
            **versions,
        }
        for kind in VALIDATED
    ]
    mutating = [
        {
            "name": f"{INJECT_ID}.{name}",
            "clientConfig": at(INJECT_ID),
            "rules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                    "operations": ["CREATE"],
                    "scope": "Namespaced",
                }
            ],
            "objectSelector": {"matchExpressions": INJECTED_POD_SELECTOR},
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "NotIn",
                        "values": excluded_namespaces(config),
                    }
                ]
            },
            **common,
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "timeoutSeconds": INJECT_TIMEOUT_SECONDS,
            **versions,
        }
    ]
    return validating, mutating


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
