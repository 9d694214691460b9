"""The generated CRDs: structural, validating what DESIGN §2 says, and equal to crds/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from agent_mesh.api import ACLPOLICY, MESHAGENT, MESHTASK
from agent_mesh.api.crdgen import (
    HEADER,
    SchemaError,
    crd_files,
    crd_objects,
    render_yaml,
    structural_schema,
    write_crds,
)

pytestmark = pytest.mark.unit

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"
CHART_CRDS_DIR = CRDS_DIR.parent / "charts" / "agent-mesh" / "crds"
REGENERATE = "run `make crds` (crds/ and charts/agent-mesh/crds/) and commit both"

# Keywords with no place in a structural schema, or that pydantic emits and we must rewrite.
FORBIDDEN_KEYS = {
    "$ref",
    "$defs",
    "anyOf",
    "allOf",
    "oneOf",
    "not",
    "title",
    "nullable",
    "uniqueItems",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "const",
}


def _crd(kind: str) -> dict[str, Any]:
    return next(c for c in crd_objects() if c["spec"]["names"]["kind"] == kind)


def _root(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = _crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _at(kind: str, path: str) -> dict[str, Any]:
    """The schema node at a dotted path such as `spec.agentSelector.agentRef`."""
    node = _root(kind)
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}.*")


def _all_nodes() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for crd in crd_objects():
        kind = crd["spec"]["names"]["kind"]
        for path, node in _walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
            yield kind, path, node


# -- the resource definitions ------------------------------------------------------------


def test_three_crds_in_a_fixed_order() -> None:
    assert [c["metadata"]["name"] for c in crd_objects()] == [
        "meshagents.agentmesh.io",
        "meshtasks.agentmesh.io",
        "aclpolicies.agentmesh.io",
    ]


@pytest.mark.parametrize(
    ("kind", "plural", "short"),
    [
        ("MeshAgent", "meshagents", "ma"),
        ("MeshTask", "meshtasks", "mt"),
        ("ACLPolicy", "aclpolicies", "aclp"),
    ],
)
def test_names_scope_and_category(kind: str, plural: str, short: str) -> None:
    spec = _crd(kind)["spec"]
    assert spec["group"] == "agentmesh.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"] == [short]
    assert spec["names"]["categories"] == ["agentmesh"]
    assert spec["names"]["listKind"] == f"{kind}List"


@pytest.mark.parametrize("kind", ["MeshAgent", "MeshTask", "ACLPolicy"])
def test_one_served_storage_version_with_status_subresource(kind: str) -> None:
    versions = _crd(kind)["spec"]["versions"]
    assert len(versions) == 1
    version = versions[0]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", ["MeshAgent", "MeshTask", "ACLPolicy"])
def test_spec_is_required_and_status_is_an_object(kind: str) -> None:
    root = _root(kind)
    assert root["required"] == ["spec"]
    assert root["properties"]["spec"]["type"] == "object"
    assert root["properties"]["status"]["type"] == "object"


# -- structural schema ----------------------------------------------------------------


def test_every_node_has_a_type_or_preserves_unknown_fields() -> None:
    untyped = [
        f"{kind}{path}"
        for kind, path, node in _all_nodes()
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert untyped == []


def test_every_field_has_a_description_for_kubectl_explain() -> None:
    # Root metadata is the exception the apiserver imposes: it accepts nothing but its type.
    missing = [
        f"{kind}{path}"
        for kind, path, node in _all_nodes()
        if not path.endswith("[]")
        and not path.endswith(".*")
        and path != ".metadata"
        and not node.get("description")
    ]
    assert missing == []


def test_no_json_schema_constructs_the_apiserver_rejects() -> None:
    found = [
        f"{kind}{path}: {key}"
        for kind, path, node in _all_nodes()
        for key in FORBIDDEN_KEYS & node.keys()
    ]
    assert found == []
    closed = [f"{k}{p}" for k, p, n in _all_nodes() if n.get("additionalProperties") is False]
    assert closed == []


def test_root_metadata_carries_only_its_type() -> None:
    for kind in ("MeshAgent", "MeshTask", "ACLPolicy"):
        assert _root(kind)["properties"]["metadata"] == {"type": "object"}


def test_lists_and_strings_checked_by_cel_are_bounded() -> None:
    # Unbounded lists and strings make the apiserver's CEL cost estimate exceed its limit.
    unbounded = [
        f"{k}{p}" for k, p, n in _all_nodes() if n.get("type") == "array" and "maxItems" not in n
    ]
    assert unbounded == []
    cel_strings = [
        f"{k}{p}"
        for k, p, n in _all_nodes()
        if "x-kubernetes-validations" in n and n.get("type") == "string" and "maxLength" not in n
    ]
    assert cel_strings == []


def test_camel_case_field_names() -> None:
    names = [p.rsplit(".", 1)[-1] for _, p, _ in _all_nodes() if p]
    assert not [n for n in names if "_" in n]
    assert {"agentId", "maxConcurrentTasks", "heartbeatIntervalSeconds"} <= set(
        _at("MeshAgent", "spec")["properties"]
    )
    assert "ttlSecondsAfterFinished" in _at("MeshTask", "spec")["properties"]


# -- defaults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path", "default"),
    [
        ("MeshAgent", "spec.port", 8080),
        ("MeshAgent", "spec.maxConcurrentTasks", 10),
        ("MeshAgent", "spec.heartbeatIntervalSeconds", 30),
        ("MeshTask", "spec.priority", "medium"),
        ("MeshTask", "spec.timeoutSeconds", 300),
        ("MeshTask", "spec.retries", 3),
    ],
)
def test_the_apiserver_applies_the_design_defaults(kind: str, path: str, default: object) -> None:
    assert _at(kind, path)["default"] == default


@pytest.mark.parametrize(
    "path", ["spec.agentId", "spec.network", "spec.capabilities", "spec.endpoint"]
)
def test_operator_decided_fields_have_no_crd_default(path: str) -> None:
    assert "default" not in _at("MeshAgent", path)


def test_status_gets_no_defaults() -> None:
    defaulted = [
        f"{k}{p}" for k, p, n in _all_nodes() if p.startswith(".status") and "default" in n
    ]
    assert defaulted == []


# -- validation -----------------------------------------------------------------------

DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("MeshAgent", "spec.agentId"),
        ("MeshAgent", "spec.agentType"),
        ("MeshTask", "spec.strategy"),
        ("MeshTask", "spec.agentSelector.agentType"),
        ("ACLPolicy", "spec.agentType"),
    ],
)
def test_identifiers_are_dns_labels_not_enums(kind: str, path: str) -> None:
    node = _at(kind, path)
    assert node["pattern"] == DNS_LABEL
    assert node["maxLength"] == 63
    assert "enum" not in node  # custom agent types and plug-in strategies must fit


@pytest.mark.parametrize(
    ("kind", "path", "values"),
    [
        ("MeshAgent", "spec.network", ["tailscale", "direct"]),
        ("MeshAgent", "status.healthStatus", ["pending", "healthy", "degraded", "unreachable"]),
        ("MeshTask", "spec.priority", ["low", "medium", "high", "critical"]),
        (
            "MeshTask",
            "status.phase",
            ["Pending", "Assigned", "Running", "Completed", "Failed", "TimedOut"],
        ),
        ("ACLPolicy", "spec.allowedActions.[]", ["read", "write", "execute", "admin", "*"]),
        ("ACLPolicy", "spec.deniedActions.[]", ["read", "write", "execute", "admin", "*"]),
        ("MeshTask", "status.conditions.[].status", ["True", "False", "Unknown"]),
    ],
)
def test_enums(kind: str, path: str, values: list[str]) -> None:
    assert _at(kind, path)["enum"] == values


@pytest.mark.parametrize(
    ("kind", "path", "minimum", "maximum"),
    [
        ("MeshAgent", "spec.port", 1, 65535),
        ("MeshAgent", "spec.maxConcurrentTasks", 1, 10000),
        ("MeshAgent", "spec.heartbeatIntervalSeconds", 1, 3600),
        ("MeshTask", "spec.timeoutSeconds", 1, 86400),
        ("MeshTask", "spec.retries", 0, 20),
        ("MeshTask", "spec.ttlSecondsAfterFinished", 0, None),
    ],
)
def test_numeric_bounds(kind: str, path: str, minimum: int, maximum: int | None) -> None:
    node = _at(kind, path)
    assert node["type"] == "integer"
    assert node["minimum"] == minimum
    assert node.get("maximum") == maximum


def test_capability_names_have_a_pattern_and_are_unique() -> None:
    for kind, path in [
        ("MeshAgent", "spec.capabilities"),
        ("MeshTask", "spec.requiredCapabilities"),
    ]:
        node = _at(kind, path)
        assert node["x-kubernetes-list-type"] == "set"
        assert node["items"]["pattern"] == "^[a-z0-9]([-a-z0-9._/]*[a-z0-9])?$"
        assert node["items"]["maxLength"] == 63


def test_endpoint_must_be_an_http_url() -> None:
    assert _at("MeshAgent", "spec.endpoint")["pattern"].startswith("^https?://")


def test_free_form_json_fields_preserve_unknown_fields() -> None:
    for path in ("spec.payload", "status.result"):
        node = _at("MeshTask", path)
        assert node["x-kubernetes-preserve-unknown-fields"] is True
        assert "type" not in node  # any JSON value: object, list, string, number
    metadata = _at("MeshTask", "spec.metadata")
    assert metadata["type"] == "object"
    assert metadata["x-kubernetes-preserve-unknown-fields"] is True
    pod_spec = _at("MeshAgent", "spec.workload.spec")
    assert pod_spec == pod_spec | {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def test_string_maps_are_typed() -> None:
    labels = _at("MeshTask", "spec.agentSelector.labels")
    assert labels["type"] == "object"
    assert labels["additionalProperties"]["type"] == "string"


def test_conditions_are_a_list_map_keyed_by_type() -> None:
    for kind in ("MeshAgent", "MeshTask", "ACLPolicy"):
        node = _at(kind, "status.conditions")
        assert node["x-kubernetes-list-type"] == "map"
        assert node["x-kubernetes-list-map-keys"] == ["type"]
        assert set(node["items"]["required"]) == {"type", "status", "reason", "lastTransitionTime"}
        assert node["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"


# -- CEL rules ------------------------------------------------------------------------


def test_agent_id_immutability_rule_compares_effective_ids_on_update() -> None:
    rules = _root("MeshAgent")["x-kubernetes-validations"]
    immutable = next(r for r in rules if "oldSelf" in r["rule"])
    # A transition rule: the apiserver runs it only on update, so creates never fail on it.
    assert "self.metadata.name" in immutable["rule"]
    assert "oldSelf.metadata.name" in immutable["rule"]
    assert immutable["message"].startswith("spec.agentId is immutable")
    assert immutable["fieldPath"] == ".spec.agentId"
    assert immutable["reason"] == "FieldValueInvalid"


def test_name_must_be_a_dns_label_when_it_is_the_agent_id() -> None:
    rules = _root("MeshAgent")["x-kubernetes-validations"]
    name_rule = next(r for r in rules if "oldSelf" not in r["rule"])
    assert "has(self.spec.agentId)" in name_rule["rule"]
    assert name_rule["message"].startswith("metadata.name must be a DNS-1123 label")


def test_endpoint_and_workload_exclude_each_other() -> None:
    rule, rotation = _at("MeshAgent", "spec")["x-kubernetes-validations"]
    assert rule["rule"] == "!has(self.endpoint) || !has(self.workload)"
    assert rule["message"].startswith("spec.endpoint and spec.workload are mutually exclusive")
    assert rotation["rule"] == "!has(self.credentialRotation) || has(self.endpoint)"
    assert rotation["message"].startswith("spec.credentialRotation needs spec.endpoint")


def test_agent_ref_is_checked_by_a_cel_rule_naming_the_field() -> None:
    node = _at("MeshTask", "spec.agentSelector.agentRef")
    (rule,) = node["x-kubernetes-validations"]
    assert DNS_LABEL in rule["rule"]
    assert rule["message"].startswith("spec.agentSelector.agentRef must be")
    assert node["maxLength"] == 63


def test_policy_namespaces_are_dns_labels_or_wildcard() -> None:
    (rule,) = _at("ACLPolicy", "spec.namespaces.[]")["x-kubernetes-validations"]
    assert rule["rule"].startswith("self == '*' || ")
    assert "spec.namespaces" in rule["message"]


# -- printer columns and field selectors --------------------------------------------------


def _columns(kind: str) -> list[dict[str, Any]]:
    columns: list[dict[str, Any]] = _crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
    return columns


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        (
            "MeshAgent",
            ["Type", "Health", "Active", "Capabilities", "Last Seen", "Endpoint", "Tailnet", "Age"],
        ),
        ("MeshTask", ["Type", "Priority", "Phase", "Agent", "Attempt", "Age"]),
        ("ACLPolicy", ["Agent Type", "Accepted", "Age"]),
    ],
)
def test_printer_columns(kind: str, names: list[str]) -> None:
    assert [c["name"] for c in _columns(kind)] == names
    assert _columns(kind)[-1]["jsonPath"] == ".metadata.creationTimestamp"
    assert _columns(kind)[-1]["type"] == "date"


def test_endpoint_and_tailnet_columns_show_only_in_wide_output() -> None:
    by_name = {c["name"]: c for c in _columns("MeshAgent")}
    assert by_name["Endpoint"]["priority"] == by_name["Tailnet"]["priority"] == 1
    assert by_name["Tailnet"]["jsonPath"] == ".status.tailscale.dnsName"
    wide = ("Endpoint", "Tailnet")
    assert all("priority" not in c for n, c in by_name.items() if n not in wide)
    assert by_name["Last Seen"]["type"] == "date"


@pytest.mark.parametrize("kind", ["MeshAgent", "MeshTask", "ACLPolicy"])
def test_column_and_selectable_paths_exist_in_the_schema(kind: str) -> None:
    version = _crd(kind)["spec"]["versions"][0]
    paths = [c["jsonPath"] for c in version["additionalPrinterColumns"]]
    paths += [f["jsonPath"] for f in version.get("selectableFields", [])]
    for json_path in paths:
        if json_path == ".metadata.creationTimestamp":
            continue
        field_path = json_path.split("[", 1)[0].lstrip(".")  # conditions[?(...)].status
        assert _at(kind, field_path), json_path


# -- output ---------------------------------------------------------------------------


def test_rendering_is_deterministic_and_round_trips() -> None:
    assert crd_files() == crd_files()
    for crd in crd_objects():
        text = render_yaml(crd)
        assert text.startswith(HEADER)
        assert yaml.safe_load(text) == crd


def test_files_are_named_after_the_crd() -> None:
    assert list(crd_files()) == [
        "meshagents.agentmesh.io.yaml",
        "meshtasks.agentmesh.io.yaml",
        "aclpolicies.agentmesh.io.yaml",
    ]


def test_header_says_generated_and_how_to_regenerate() -> None:
    first_line = HEADER.splitlines()[0]
    assert first_line.startswith("# Generated by `agent-mesh crds`")
    assert "Do not edit by hand" in first_line


@pytest.mark.parametrize("directory", [CRDS_DIR, CHART_CRDS_DIR], ids=["crds", "chart"])
def test_crds_directory_matches_the_models(directory: Path) -> None:
    """THE drift test: crds/*.yaml and the Helm chart's copy must be exactly what the
    models generate now."""
    expected = crd_files()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.yaml"))}
    missing = sorted(expected.keys() - on_disk.keys())
    extra = sorted(on_disk.keys() - expected.keys())
    stale = sorted(n for n in expected.keys() & on_disk.keys() if on_disk[n] != expected[n])
    where = directory.relative_to(CRDS_DIR.parent)
    assert not (missing or extra or stale), (
        f"{where}/ is out of date with agent_mesh.api (missing: {missing}, not generated: "
        f"{extra}, differing: {stale}); {REGENERATE}"
    )


def test_write_crds_writes_every_file(tmp_path: Path) -> None:
    paths = write_crds(tmp_path / "crds")
    assert {p.name: p.read_text(encoding="utf-8") for p in paths} == crd_files()


def test_write_crds_removes_only_stale_generated_files(tmp_path: Path) -> None:
    stale = tmp_path / "oldkinds.agentmesh.io.yaml"
    stale.write_text(HEADER + "kind: CustomResourceDefinition\n", encoding="utf-8")
    foreign = tmp_path / "kustomization.yaml"
    foreign.write_text("resources: []\n", encoding="utf-8")
    write_crds(tmp_path)
    assert not stale.exists()
    assert foreign.exists()


def test_write_crds_leaves_unchanged_files_untouched(tmp_path: Path) -> None:
    (first, *_) = write_crds(tmp_path)
    before = first.stat().st_mtime_ns
    write_crds(tmp_path)
    assert first.stat().st_mtime_ns == before


# -- the generator refuses what it cannot express ------------------------------------------


def test_a_field_without_description_is_refused() -> None:
    class Undocumented(BaseModel):
        count: int = 1

    with pytest.raises(SchemaError, match=r"Undocumented\.count: every field needs a description"):
        structural_schema(Undocumented, keep_defaults=True)


def test_a_union_of_types_is_refused() -> None:
    class Ambiguous(BaseModel):
        value: int | str = Field(0, description="Either.")

    with pytest.raises(SchemaError, match=r"Ambiguous\.value: a union"):
        structural_schema(Ambiguous, keep_defaults=True)


def test_exclusive_bounds_are_refused() -> None:
    class Exclusive(BaseModel):
        value: int = Field(1, gt=0, description="Positive.")

    with pytest.raises(SchemaError, match="exclusiveMinimum"):
        structural_schema(Exclusive, keep_defaults=True)


def test_descriptors_are_exported() -> None:
    assert [d.kind for d in (MESHAGENT, MESHTASK, ACLPOLICY)] == [
        "MeshAgent",
        "MeshTask",
        "ACLPolicy",
    ]
