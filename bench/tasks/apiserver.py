"""Reaching the apiserver from any process of the tasks bench (its URL and the admin
client certificate), and the objects the bench writes to it."""

from __future__ import annotations

import collections
import datetime as dt
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.harness import wait_until

GROUP, VERSION, PLURAL = "agentmesh.io", "v1alpha1", "meshtasks"


@dataclass(frozen=True)
class ApiServer:
    """How a process reaches the apiserver: its URL and the admin client certificate."""

    server: str
    pki: str

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(Path(self.pki) / "ca.crt"))
        ctx.load_cert_chain(Path(self.pki) / "admin.crt", Path(self.pki) / "admin.key")
        return ctx

    def tasks_url(self, namespace: str) -> str:
        return f"{self.server}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        content = "application/merge-patch+json" if method == "PATCH" else "application/json"
        req = urllib.request.Request(
            f"{self.server}{path}", data=data, method=method, headers={"Content-Type": content}
        )
        with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as r:
            return json.loads(r.read() or b"null")

    def ensure(self, path: str, body: dict[str, Any]) -> None:
        """POST `body` to `path`; an object that exists already is fine."""
        try:
            self.request("POST", path, body)
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise

    # agent_mesh.testing.Kube: what the harness reads and writes, by this client

    def _read(self, path: str) -> Any:
        try:
            return self.request("GET", path)
        except OSError:  # HTTPError (404: not there yet) or no answer
            return None

    def read_meshagent(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/meshagents/{name}")  # type: ignore[no-any-return]

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self._read(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        return None if found is None else found.get("data") or {}

    def read_config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self._read(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        return None if found is None else found.get("data") or {}

    def write_meshagent(self, manifest: dict[str, Any]) -> None:
        namespace = manifest["metadata"]["namespace"]
        self.ensure(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/meshagents", manifest)


def apply_crds(api: ApiServer) -> None:
    from agent_mesh.api.crdgen import crd_objects

    crds = crd_objects()
    for crd in crds:
        api.ensure("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    for crd in crds:
        name, plural = crd["metadata"]["name"], crd["spec"]["names"]["plural"]

        def established(n: str = name) -> bool:
            got = api.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{n}")
            conds = (got.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        def serves(p: str = plural) -> bool:  # Established comes before lists are served
            try:
                api.request("GET", f"/apis/{GROUP}/{VERSION}/{p}?limit=1")
            except urllib.error.HTTPError:
                return False
            return True

        wait_until(f"CRD {name} Established", established, 60)
        wait_until(f"CRD {name} served", serves, 60)


def create_namespace(api: ApiServer, name: str) -> str:
    """Namespace `name` (it may exist already)."""
    api.ensure("/api/v1/namespaces", {"metadata": {"name": name}})
    return name


def events_by_reason(api: ApiServer, namespace: str) -> dict[str, int]:
    """Kubernetes Events about MeshTasks in `namespace`, by reason."""
    got = api.request("GET", f"/api/v1/namespaces/{namespace}/events?limit=100000")
    reasons: collections.Counter[str] = collections.Counter()
    for item in got.get("items") or ():
        if (item.get("involvedObject") or {}).get("kind") == "MeshTask":
            reasons[str(item.get("reason"))] += 1
    return dict(reasons)


def delete_tasks(api: ApiServer, namespace: str) -> None:
    """Every MeshTask of `namespace`."""
    api.request("DELETE", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}", timeout=120)


def completed_status(i: int) -> dict[str, Any]:
    """A MeshTask status like the operator's final write (shape and size)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
            "observedGeneration": 1,
        }

    done = "Completed by agent echo-0 on attempt 1."
    return {
        "phase": "Completed",
        "attempt": 1,
        "attempts": [
            {
                "attempt": 1,
                "agentId": "echo-0",
                "startedAt": now,
                "finishedAt": now,
                "outcome": "Succeeded",
            }
        ],
        "agentId": "echo-0",
        "assignedAt": now,
        "startedAt": now,
        "completedAt": now,
        "result": {"i": i},
        "observedGeneration": 1,
        "conditions": [
            cond("Assigned", "True", "AgentSelected", "Assigned to agent echo-0 (attempt 1)."),
            cond("Running", "False", "AttemptFinished", done),
            cond("Succeeded", "True", "ResultReceived", done),
            cond("Ready", "True", "ResultReceived", "status.result holds the result."),
        ],
    }


def event_body(namespace: str, name: str, i: int) -> dict[str, Any]:
    """A Kubernetes Event like the operator's TaskCompleted (kube/events.py)."""
    now = dt.datetime.now(dt.UTC).isoformat()
    return {
        "metadata": {"name": f"{name}.{i:012x}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MeshTask",
            "namespace": namespace,
            "name": name,
            "uid": f"{i:08d}-0000-4000-8000-{i:012d}",
        },
        "type": "Normal",
        "reason": "TaskCompleted",
        "message": "Completed by agent echo-0 on attempt 1.",
        "source": {"component": "agent-mesh-operator"},
        "reportingComponent": "agent-mesh-operator",
        "reportingInstance": "agent-mesh-operator",
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
    }
