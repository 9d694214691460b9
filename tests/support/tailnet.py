"""The local tailnet for the tests marked tailscale: built on first use, and skipped with
the reason where it cannot run (it needs root) — except in CI, where that is a failure."""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from agent_mesh.devcluster.binaries import ensure_tailnet_binaries
from agent_mesh.devcluster.tailnet import LOOPBACK, LocalTailnet
from tests.support.cluster import Cluster


@contextlib.contextmanager
def local_tailnet(
    directory: Path, *, trace: bool = True, address: str = LOOPBACK
) -> Iterator[LocalTailnet]:
    """headscale (on `address`: the node's bridge address for pods) and its nodes, every
    process traced (nothing may leave the machine)."""
    if os.geteuid() != 0:
        reason = "the local tailnet needs root (a mount namespace per tailscaled)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    binaries = ensure_tailnet_binaries()
    with LocalTailnet(binaries, directory, trace=trace, address=address) as running:
        yield running


@pytest.fixture(scope="module")
def tailnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTailnet]:
    """One local tailnet for a module's tests (import it into the module to use it)."""
    with local_tailnet(tmp_path_factory.mktemp("tailnet")) as running:
        yield running


def service_account_dir(cluster: Cluster, namespace: str, account: str, into: Path) -> Path:
    """What a pod running as `account` finds at /var/run/secrets/kubernetes.io/serviceaccount
    (a fresh token, the cluster's CA, the namespace), written into `into`: a sidecar run as
    a process authenticates exactly as in its pod."""
    request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
    token = client.CoreV1Api(cluster.api).create_namespaced_service_account_token(
        account, namespace, request
    )
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    ca = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
    into.mkdir()
    (into / "token").write_text(token.status.token)
    (into / "ca.crt").write_bytes(ca)
    (into / "namespace").write_text(namespace)
    return into


def resolved_env(container: dict[str, Any], authkey: str, pod: str) -> dict[str, str]:
    """A container's environment as the kubelet would give it: secret references are the
    auth key, field references the pod's name and a fresh uid."""
    refs = {"metadata.name": pod, "metadata.uid": str(uuid.uuid4())}
    env: dict[str, str] = {}
    for item in container["env"]:
        source = item.get("valueFrom")
        if source is None:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in source:
            env[item["name"]] = authkey
        else:
            env[item["name"]] = refs[source["fieldRef"]["fieldPath"]]
    return env


def report_containers(core: client.CoreV1Api, namespace: str, pod: str, **sidecar: Any) -> None:
    """Write what the kubelet would report for an agent pod's containers (there is no
    kubelet on the control plane alone): the agent running and ready, the `tailscale`
    sidecar as `sidecar` says (its `state`, `ready`, ...)."""
    statuses = [
        {
            "name": "agent",
            "ready": True,
            "restartCount": 0,
            "image": "a",
            "imageID": "",
            "state": {"running": {}},
        },
        {"name": "tailscale", "restartCount": 0, "image": "t", "imageID": "", **sidecar},
    ]
    core.patch_namespaced_pod_status(pod, namespace, {"status": {"containerStatuses": statuses}})
