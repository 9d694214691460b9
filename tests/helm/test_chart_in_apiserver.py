"""The rendered chart and config/default against the real apiserver of the test cluster:
a server-side dry run (schemas, defaulting, admission) of every object, and the operator's
pod admitted in a namespace that enforces PodSecurity `restricted`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.helm.conftest import only, render
from tests.helm.test_chart import VALUE_SETS
from tests.support.cluster import Cluster
from tests.support.namespaces import SESSION, temporary_namespace
from tests.support.venvs import ROOT

# Objects of CRDs this cluster does not have (cert-manager, the Prometheus operator):
# their rendering is checked in test_chart.py, not here.
FOREIGN_KINDS = {"Certificate", "Issuer", "ServiceMonitor", "PodMonitor"}


@pytest.fixture
def release_namespace(cluster: Cluster) -> Iterator[str]:
    with temporary_namespace(cluster, f"amh-{SESSION}-{uuid.uuid4().hex[:6]}") as name:
        client.CoreV1Api(cluster.api).patch_namespace(
            name, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
        )
        yield name


def _dry_run(cluster: Cluster, objects: list[dict[str, Any]], tmp_path: Path) -> None:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    applied = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(manifest),
        check=False,
    )
    assert applied.returncode == 0, applied.stderr


@pytest.mark.parametrize("name", ["defaults", "watched-namespaces", "everything", "tailscale"])
def test_every_rendered_object_passes_a_server_side_dry_run(
    cluster: Cluster,
    crds: object,
    helm: Path,
    release_namespace: str,
    name: str,
    tmp_path: Path,
) -> None:
    values = list(VALUE_SETS[name])
    # the namespaces the value set names exist in a real installation
    if name == "watched-namespaces":
        values = ["--set", f"watchNamespaces={{{release_namespace}}}"]
    if name == "everything":
        values = [v.replace("team-a", release_namespace) for v in values]
    objects = render(helm, *values, namespace=release_namespace, release=f"am-{name[:10]}")
    _dry_run(cluster, [o for o in objects if o["kind"] not in FOREIGN_KINDS], tmp_path)


@pytest.mark.parametrize("name", ["defaults", "tailscale"])
def test_the_operator_pod_is_admitted_under_pod_security_restricted(
    cluster: Cluster, helm: Path, release_namespace: str, name: str
) -> None:
    """With the tailscale sidecar too: userspace, no NET_ADMIN, no privilege."""
    objects = render(helm, *VALUE_SETS[name], namespace=release_namespace)
    deployment = only(objects, "Deployment")
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_service_account(release_namespace, only(objects, "ServiceAccount"))
    template = deployment["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator"}, **template}
    pod["metadata"] = {**template["metadata"], "name": "operator"}
    admitted = core.create_namespaced_pod(release_namespace, pod, dry_run="All")
    assert admitted.metadata.name == "operator"

    # and the check is real: a root container in the same namespace is refused
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod(release_namespace, pod, dry_run="All")
    assert refused.value.status == 403
    assert "restricted" in json.loads(refused.value.body)["message"]


def test_config_default_passes_a_server_side_dry_run(cluster: Cluster, crds: object) -> None:
    built = cluster.kubectl("kustomize", str(ROOT / "config" / "default"))
    objects = [o for o in yaml.safe_load_all(built.stdout) if o]
    assert {"Namespace", "CustomResourceDefinition", "Deployment"} <= {o["kind"] for o in objects}
    # a dry run creates no namespace: the one config/default names exists for the test
    with temporary_namespace(cluster, "agent-mesh-system"):
        applied = cluster.kubectl(
            "apply",
            "--dry-run=server",
            "--server-side",
            "--force-conflicts",
            "-k",
            str(ROOT / "config" / "default"),
            check=False,
        )
    assert applied.returncode == 0, applied.stderr
