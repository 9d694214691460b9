"""The cluster the integration and e2e tests run against: its kubeconfig, kubectl and API
client (agent_mesh.testing's `Kube`, by the Kubernetes client), and the CRDs applied to it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from tests.support.waiting import wait_for


@dataclass
class Cluster:
    """A reachable cluster: its kubeconfig, a kubectl for it and a Python API client."""

    kubeconfig: Path
    kubectl_binary: str
    api: client.ApiClient
    local: bool

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_binary, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    # agent_mesh.testing.Kube: what the harness reads and writes, by this client

    def read_meshagent(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "meshagents", name
            )
        )

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        core = client.CoreV1Api(self.api)
        return self._read(lambda: core.read_namespaced_secret(name, namespace).data or {})

    def read_config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        core = client.CoreV1Api(self.api)
        return self._read(lambda: core.read_namespaced_config_map(name, namespace).data or {})

    def write_meshagent(self, manifest: dict[str, Any]) -> None:
        namespace = manifest["metadata"]["namespace"]
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "meshagents", manifest
        )

    @staticmethod
    def _read(read: Callable[[], Any]) -> Any:
        try:
            return read()
        except client.ApiException:
            return None


def install_crds(cluster: Cluster) -> list[dict[str, Any]]:
    """Apply the CRDs generated from the models; return once they serve lists."""
    from agent_mesh.api.crdgen import crd_objects

    objects = crd_objects()
    ext = client.ApiextensionsV1Api(cluster.api)
    for crd in objects:
        name = crd["metadata"]["name"]
        try:
            current = ext.read_custom_resource_definition(name)
            crd = {
                **crd,
                "metadata": {
                    **crd["metadata"],
                    "resourceVersion": current.metadata.resource_version,
                },
            }
            ext.replace_custom_resource_definition(name, crd)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            ext.create_custom_resource_definition(crd)

    def established(name: str) -> bool:
        conds = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conds)

    def servable(plural: str) -> bool:
        # Established can come before the storage serves lists ("storage is (re)initializing",
        # 429): an operator starting then backs off for seconds. Wait for a real list.
        try:
            cluster.custom.list_cluster_custom_object(GROUP, VERSION, plural, limit=1)
        except client.ApiException:
            return False
        return True

    for crd in objects:
        wait_for(
            f"CRD {crd['metadata']['name']} to be Established",
            lambda n=crd["metadata"]["name"]: established(n),
        )
        wait_for(
            f"CRD {crd['metadata']['name']} to serve lists",
            lambda p=crd["spec"]["names"]["plural"]: servable(p),
        )
    return objects
