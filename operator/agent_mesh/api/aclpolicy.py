"""ACLPolicy: what agents of one type may do in the mesh, per namespace."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, Field

from agent_mesh.api.common import (
    AGE_COLUMN,
    BUILTIN_AGENT_TYPES_TEXT,
    DNS_LABEL_PATTERN,
    DNS_LABEL_RULE,
    LIST_SET,
    NAME_MAX_LENGTH,
    NAME_RULE,
    READY,
    RESERVED_AGENT_TYPE_RULE,
    WILDCARD,
    CelChecked,
    Condition,
    CrdDescriptor,
    DnsLabel,
    MeshModel,
    PrinterColumn,
    UniqueList,
    cel,
    conditions_field,
    is_dns_label,
    not_reserved_agent_type,
    observed_generation_field,
)
from agent_mesh.domain.acl import OPERATOR_AGENT_TYPE
from agent_mesh.domain.acl import Action as Action

MAX_RESOURCES: Final = 64
MAX_NAMESPACES: Final = 64
MAX_ADMIT_RULES: Final = 64
MAX_ADMITTED_TYPES: Final = 16

# A resource name, or '*' for all; the same characters as capability names.
RESOURCE_PATTERN: Final = r"^(\*|[a-z0-9]([-a-z0-9._/]*[a-z0-9])?)$"


class ACLPolicyCondition(StrEnum):
    """Condition types of an ACLPolicy."""

    READY = READY
    """Summary: the policy is in force in the operator's ACL engine."""
    ACCEPTED = "Accepted"
    """The operator validated the policy and found no conflict."""


class ACLPolicyReason(StrEnum):
    """Reasons of ACLPolicy conditions."""

    POLICY_ACCEPTED = "PolicyAccepted"
    INVALID_POLICY = "InvalidPolicy"
    CONFLICTING_POLICY = "ConflictingPolicy"
    POLICY_IN_FORCE = "PolicyInForce"
    POLICY_NOT_IN_FORCE = "PolicyNotInForce"


NAMESPACE_ITEM_MESSAGE: Final = (
    f"each spec.namespaces item must be '{WILDCARD}' (all namespaces) or a namespace name: "
    f"{DNS_LABEL_RULE}"
)


NamespaceOrWildcard = Annotated[
    str,
    CelChecked(
        rule=f"self == '{WILDCARD}' || self.matches('{DNS_LABEL_PATTERN}')",
        message=NAMESPACE_ITEM_MESSAGE,
        accepts=lambda value: value == WILDCARD or is_dns_label(value),
    ),
]

ResourceName = Annotated[str, Field(max_length=NAME_MAX_LENGTH, pattern=RESOURCE_PATTERN)]

ADMIT_NAMESPACE_MESSAGE: Final = (
    f"spec.admit[].namespace must name one namespace ({DNS_LABEL_RULE}); '{WILDCARD}' is "
    "not allowed: consent names each namespace it admits"
)
AGENT_TYPE_ITEM_MESSAGE: Final = (
    f"each spec.admit[].agentTypes item must be '{WILDCARD}' (every type) or an agent type: "
    f"{DNS_LABEL_RULE}, and not the operator's reserved type"
)


AdmittedNamespace = Annotated[
    str,
    CelChecked(
        rule=f"self.matches('{DNS_LABEL_PATTERN}')",
        message=ADMIT_NAMESPACE_MESSAGE,
        accepts=is_dns_label,
    ),
]

AgentTypeOrWildcard = Annotated[
    str,
    CelChecked(
        rule=(
            f"self == '{WILDCARD}' || (self.matches('{DNS_LABEL_PATTERN}') "
            f"&& self != '{OPERATOR_AGENT_TYPE}')"
        ),
        message=AGENT_TYPE_ITEM_MESSAGE,
        accepts=lambda value: (
            value == WILDCARD or (is_dns_label(value) and value != OPERATOR_AGENT_TYPE)
        ),
    ),
]

_ACTIONS_TEXT = ", ".join(a.value for a in Action)


class AdmitRule(MeshModel):
    """Consent for agents of one other namespace to act here (their policy must reach it too)."""

    namespace: AdmittedNamespace = Field(
        description=(
            "The one namespace whose agents are admitted. Not *: consent names each "
            "namespace it trusts, so nobody gains access by creating a namespace. Must be "
            "another namespace than this policy's own (the operator marks the policy "
            "InvalidPolicy otherwise)."
        ),
    )
    agent_types: Annotated[list[AgentTypeOrWildcard], UniqueList] = Field(
        min_length=1,
        max_length=MAX_ADMITTED_TYPES,
        description=(
            "Agent types of that namespace admitted (built-in or custom types), or * for "
            f"every type. Unique, 1 to {MAX_ADMITTED_TYPES}."
        ),
        json_schema_extra=LIST_SET,
    )
    actions: Annotated[list[Action], UniqueList] = Field(
        min_length=1,
        max_length=len(Action),
        description=(
            f"Actions they may perform here: {_ACTIONS_TEXT} (all). Unique, at least one. "
            "This namespace's own policy for their type still denies what it denies."
        ),
        json_schema_extra=LIST_SET,
    )
    resources: Annotated[list[ResourceName], UniqueList] = Field(
        min_length=1,
        max_length=MAX_RESOURCES,
        description=(
            "Resources those actions apply to here (for example tasks, results, agents, "
            f"events, audit, tokens), or * for all. Unique, 1 to {MAX_RESOURCES}."
        ),
        json_schema_extra=LIST_SET,
    )


class ACLPolicySpec(MeshModel):
    """Permissions of one agent type in this namespace. Deny beats allow."""

    agent_type: Annotated[DnsLabel, AfterValidator(not_reserved_agent_type)] = Field(
        description=(
            f"Agent type the policy governs, in this namespace: a built-in type "
            f"({BUILTIN_AGENT_TYPES_TEXT}), whose default ACL it replaces, or a custom type, "
            f"which is denied everything without a policy. Must be {DNS_LABEL_RULE}."
        ),
        json_schema_extra=cel(RESERVED_AGENT_TYPE_RULE),
    )
    allowed_actions: Annotated[list[Action], UniqueList] = Field(
        default_factory=list,
        max_length=len(Action),
        description=(
            f"Actions the agents may perform: {_ACTIONS_TEXT} (all). Unique. Default: none."
        ),
        json_schema_extra=LIST_SET,
    )
    allowed_resources: Annotated[list[ResourceName], UniqueList] = Field(
        default_factory=list,
        max_length=MAX_RESOURCES,
        description=(
            "Resources the allowed actions apply to (for example tasks, results, agents, "
            f"events, acl, audit), or * for all. Each name: {NAME_RULE}. "
            f"Unique, at most {MAX_RESOURCES}. Default: none."
        ),
        json_schema_extra=LIST_SET,
    )
    denied_actions: Annotated[list[Action], UniqueList] = Field(
        default_factory=list,
        max_length=len(Action),
        description=(
            f"Actions the agents may never perform, whatever is allowed: {_ACTIONS_TEXT} "
            "(all). They are denied on deniedResources when that is set, else on every "
            "resource. Unique. Default: none."
        ),
        json_schema_extra=LIST_SET,
    )
    denied_resources: Annotated[list[ResourceName], UniqueList] = Field(
        default_factory=list,
        max_length=MAX_RESOURCES,
        description=(
            "Resources the agents may never act on, whatever is allowed, or * for all: "
            "with the deniedActions when that is set, else with any action. "
            f"Unique, at most {MAX_RESOURCES}. Default: none."
        ),
        json_schema_extra=LIST_SET,
    )
    namespaces: Annotated[list[NamespaceOrWildcard], UniqueList] = Field(
        default_factory=list,
        max_length=MAX_NAMESPACES,
        description=(
            "Other namespaces whose agents and tasks these agents may reach (namespace "
            "names, or * for all). The policy's own namespace is always included. Reaching "
            "another namespace also needs its consent: a policy there must admit this "
            f"namespace (spec.admit). Unique, at most {MAX_NAMESPACES}. Default: own "
            "namespace only."
        ),
        json_schema_extra=LIST_SET,
    )
    admit: list[AdmitRule] = Field(
        default_factory=list,
        max_length=MAX_ADMIT_RULES,
        description=(
            "Consent for agents of other namespaces to act in this one: each rule admits "
            "agent types of one namespace for some actions on some resources. A call from "
            "another namespace is allowed only when the caller's own policy reaches this "
            "namespace and a rule here admits it; the rules of every policy in force in "
            "this namespace count, whatever its agentType. This namespace's policy for the "
            "caller's type still denies what it denies. At most "
            f"{MAX_ADMIT_RULES} rules. Default: no other namespace admitted."
        ),
    )


class ACLPolicyStatus(MeshModel):
    """Whether the operator applies the policy, written by the operator only."""

    conditions: list[Condition] = conditions_field("policy", ", ".join(ACLPolicyCondition))
    observed_generation: int | None = observed_generation_field("ACLPolicy")


ACLPOLICY: Final = CrdDescriptor(
    kind="ACLPolicy",
    plural="aclpolicies",
    singular="aclpolicy",
    short_names=("aclp",),
    description=(
        "ACLPolicy sets what agents of one type may do in the mesh from this namespace: "
        "allowed and denied actions on resources, and which other namespaces they may "
        "reach; and which agents of other namespaces this namespace admits. Deny beats "
        "allow. Built-in types without a policy get the defaults; custom types without one "
        "are denied everything."
    ),
    spec_model=ACLPolicySpec,
    status_model=ACLPolicyStatus,
    printer_columns=(
        PrinterColumn("Agent Type", "string", ".spec.agentType", "Agent type governed."),
        PrinterColumn(
            "Accepted",
            "string",
            '.status.conditions[?(@.type=="Accepted")].status',
            "Whether the operator accepted the policy.",
        ),
        AGE_COLUMN,
    ),
    selectable_fields=(".spec.agentType",),
)
