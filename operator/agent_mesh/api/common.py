"""What every CRD model shares: the wire format, conditions, identifiers and CRD descriptors.

The models are the single source of truth for `crds/*.yaml`, so constraints live here as
pydantic metadata (patterns, bounds, CEL rules in `json_schema_extra`) and are enforced
twice: by the apiserver from the generated schema, and in Python wherever a spec is parsed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Final

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, AwareDatetime, Field
from pydantic.config import JsonDict

# The ACL vocabulary is defined by the domain's ACL engine; the models re-export it.
from agent_mesh.domain.acl import OPERATOR_AGENT_TYPE, OPERATOR_SUBJECT
from agent_mesh.domain.acl import WILDCARD as WILDCARD
from agent_mesh.domain.acl import BuiltinAgentType as BuiltinAgentType
from agent_mesh.domain.wire import WireModel

GROUP: Final = "agentmesh.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "agentmesh"

# DNS-1123 label: what Kubernetes requires of namespace names and what MagicDNS host names
# are built from, so agent ids, agent types and strategy names follow it.
DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_LABEL_MAX_LENGTH: Final = 63
DNS_LABEL_RULE: Final = (
    "a DNS-1123 label (at most 63 lower-case letters, digits and '-', "
    "starting and ending with a letter or digit)"
)

# Capability, task-type and ACL resource names: DNS-label characters plus '.', '_' and '/',
# so namespaced names such as `nlp/summarize` or `code.review` work, while spaces,
# upper case and wildcards (which would make capability matching ambiguous) do not.
NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9._/]*[a-z0-9])?$"
NAME_MAX_LENGTH: Final = 63
NAME_RULE: Final = (
    "at most 63 lower-case letters, digits, '-', '.', '_' and '/', "
    "starting and ending with a letter or digit"
)

# Bounds on lists: they keep objects small and let the CEL cost estimator accept rules.
MAX_CAPABILITIES: Final = 64
MAX_CONDITIONS: Final = 16
MESSAGE_MAX_LENGTH: Final = 32768
URL_MAX_LENGTH: Final = 2048

READY: Final = "Ready"
"""The summary condition every kind has, so `kubectl wait --for=condition=Ready` works."""


class MeshModel(WireModel):
    """Base of every spec/status model: camelCase on the wire, snake_case in Python.

    Unknown fields are ignored rather than rejected, so an operator reading objects
    written under a newer schema keeps working (the apiserver prunes them anyway).
    """

    def to_wire(self) -> dict[str, Any]:
        """The JSON form the apiserver stores: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry; the message names the field and the rule."""

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def as_schema(self) -> JsonDict:
        entry: JsonDict = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


def cel(*rules: CelRule) -> JsonDict:
    """`json_schema_extra` carrying CEL rules into the field's CRD schema."""
    return {"x-kubernetes-validations": [r.as_schema() for r in rules]}


RESERVED_AGENT_TYPE_RULE: Final = CelRule(
    rule=f"self != '{OPERATOR_AGENT_TYPE}'",
    message=f"agentType {OPERATOR_AGENT_TYPE} is reserved for the operator's own identity",
)


def not_reserved_agent_type(value: str) -> str:
    if value == OPERATOR_AGENT_TYPE:
        raise ValueError(RESERVED_AGENT_TYPE_RULE.message)
    return value


RESERVED_AGENT_ID_MESSAGE: Final = (
    f"agentId {OPERATOR_SUBJECT} is reserved for the operator's own identity (the agentId is "
    "spec.agentId, or metadata.name when that is unset): choose another"
)
RESERVED_AGENT_ID_RULE: Final = CelRule(
    rule=f"self != '{OPERATOR_SUBJECT}'", message=RESERVED_AGENT_ID_MESSAGE
)


def not_reserved_agent_id(value: str) -> str:
    if value == OPERATOR_SUBJECT:
        raise ValueError(RESERVED_AGENT_ID_MESSAGE)
    return value


LIST_SET: Final[JsonDict] = {"x-kubernetes-list-type": "set"}
"""Lists of unique scalars: the apiserver rejects duplicates (uniqueItems is not allowed)."""


def _unique(values: list[str]) -> list[str]:
    duplicates = sorted(v for v, n in Counter(values).items() if n > 1)
    if duplicates:
        raise ValueError(f"items must be unique; repeated: {', '.join(duplicates)}")
    return values


def is_dns_label(value: str) -> bool:
    """Python twin of the DNS-label pattern, for fields checked by CEL in the CRD."""
    return len(value) <= DNS_LABEL_MAX_LENGTH and re.fullmatch(DNS_LABEL_PATTERN, value) is not None


@dataclass(frozen=True)
class CelChecked(GroupedMetadata):
    """Metadata of a string of at most 63 characters checked by a CEL `rule` in the CRD and
    by its Python twin `accepts` wherever a spec is parsed, both failing with `message`.
    CEL rather than a pattern: users type these by hand, and the message says what the
    field must name instead of printing a regular expression."""

    rule: str
    message: str
    accepts: Callable[[str], bool]

    def __iter__(self) -> Iterator[object]:
        rule = CelRule(rule=self.rule, message=self.message, reason="FieldValueInvalid")
        yield Field(max_length=DNS_LABEL_MAX_LENGTH, json_schema_extra=cel(rule))
        yield AfterValidator(self._check)

    def _check(self, value: str) -> str:
        if not self.accepts(value):
            raise ValueError(self.message)
        return value


DnsLabel = Annotated[str, Field(max_length=DNS_LABEL_MAX_LENGTH, pattern=DNS_LABEL_PATTERN)]
"""A DNS-1123 label, checked by an OpenAPI pattern."""

MeshName = Annotated[str, Field(max_length=NAME_MAX_LENGTH, pattern=NAME_PATTERN)]
"""A capability or task-type name."""

UniqueList = AfterValidator(_unique)
"""Python-side twin of `x-kubernetes-list-type: set`."""

Timestamp = AwareDatetime
"""RFC 3339 in UTC on the wire (`format: date-time`); naive datetimes are refused."""


BUILTIN_AGENT_TYPES_TEXT: Final = ", ".join(t.value for t in BuiltinAgentType)


class ConditionStatus(StrEnum):
    """Status of a condition, as in the Kubernetes API conventions."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


# The patterns metav1.Condition uses, so tools that understand conditions accept ours.
CONDITION_TYPE_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN: Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(MeshModel):
    """One observation of the resource's state, following the Kubernetes API conventions."""

    type: str = Field(
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description=(
            "Kind of condition, in CamelCase (for example Ready). Unique within the list; "
            "`kubectl wait --for=condition=<type>` waits on it."
        ),
    )
    status: ConditionStatus = Field(
        description="Whether the condition holds: True, False or Unknown.",
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description=(
            "Machine-readable CamelCase cause of the current status (for example "
            "AgentHealthy); stable, so tools may match on it."
        ),
    )
    message: str = Field(
        "",
        max_length=MESSAGE_MAX_LENGTH,
        description="Human-readable details of the current status; may be empty.",
    )
    observed_generation: int | None = Field(
        None,
        ge=0,
        description=(
            "metadata.generation the operator had seen when it set this condition; lower "
            "than the current generation means the condition may be stale."
        ),
    )
    last_transition_time: Timestamp = Field(
        description=(
            "When status last changed (RFC 3339, UTC). Re-asserting the same status does "
            "not move it."
        ),
    )


def conditions_field(kind: str, types: str) -> Any:
    """The `status.conditions` field: a list-map keyed by `type`, as metav1.Condition is."""
    return Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description=(
            f"Current state of the {kind} as Kubernetes conditions, one per type ({types}). "
            f"`kubectl wait --for=condition=Ready` waits on the summary."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


def observed_generation_field(kind: str) -> Any:
    """The `status.observedGeneration` field: which spec the status describes."""
    return Field(
        None,
        ge=0,
        description=(
            f"metadata.generation of the {kind} spec this status describes; when it lags "
            "metadata.generation the operator has not yet acted on the latest change."
        ),
    )


@dataclass(frozen=True)
class PrinterColumn:
    """One `kubectl get` column; priority 1 shows only with `-o wide`."""

    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0
    format: str | None = None


AGE_COLUMN: Final = PrinterColumn(
    name="Age",
    type="date",
    json_path=".metadata.creationTimestamp",
    description="Time since the object was created.",
)


@dataclass(frozen=True)
class CrdDescriptor:
    """Names, columns and root-level rules of one kind: the parts of a CRD that are not
    in the spec/status models."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec_model: type[MeshModel]
    status_model: type[MeshModel]
    printer_columns: tuple[PrinterColumn, ...]
    # Rules that need metadata.name or oldSelf of the whole object sit at the root.
    root_rules: tuple[CelRule, ...] = ()
    selectable_fields: tuple[str, ...] = ()
    categories: tuple[str, ...] = field(default=(CATEGORY,))

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def filename(self) -> str:
        return f"{self.name}.yaml"
