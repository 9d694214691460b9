"""`agent-mesh dev up|down|kubeconfig|status`: a detached local control plane."""

from __future__ import annotations

import re
import shutil
import sys

from agent_mesh.devcluster import ControlPlane, DevClusterError, ensure_binaries
from agent_mesh.devcluster.cluster import LOOPBACK
from agent_mesh.devcluster.ports import check_port_free
from agent_mesh.devcluster.versions import KUBERNETES_VERSIONS, state_root


def run(action: str, *, port: int | None = None, kubernetes_version: str | None = None) -> int:
    directory = state_root() / "dev"
    existing = ControlPlane.load(directory)
    if action == "build":
        binaries = ensure_binaries(_versions(kubernetes_version))
        print(
            f"Kubernetes {binaries.kubernetes_version}, etcd {binaries.etcd_version} "
            f"in {binaries.bin_dir.parent}",
            file=sys.stderr,
        )
        for path in (binaries.etcd, binaries.kube_apiserver, binaries.kubectl):
            print(path)
        return 0
    if action == "up":
        if existing is not None and existing.running():
            print(f"already running at {existing.server}", file=sys.stderr)
            print(existing.kubeconfig)
            return 0
        if existing is not None:
            existing.stop()
        shutil.rmtree(directory, ignore_errors=True)
        if port is not None:
            check_port_free(LOOPBACK, port, "--port")  # before a build, not after
        binaries = ensure_binaries(_versions(kubernetes_version))
        plane = ControlPlane(binaries, directory, api_port=port, detached=True)
        plane.start()
        print(
            f"Kubernetes {binaries.kubernetes_version} (etcd {binaries.etcd_version}) at "
            f"{plane.server}, ready in {plane.startup_seconds:.1f} s",
            file=sys.stderr,
        )
        print(f"kubectl: {binaries.kubectl}", file=sys.stderr)
        print(f"use it:  export KUBECONFIG={plane.kubeconfig}", file=sys.stderr)
        print(plane.kubeconfig)
        return 0
    if action == "down":
        if existing is None:
            print("no local control plane is running", file=sys.stderr)
            return 0
        existing.stop()
        shutil.rmtree(directory, ignore_errors=True)
        print("stopped", file=sys.stderr)
        return 0
    if existing is None or not existing.running():
        raise DevClusterError(
            "no local control plane is running; start one with `agent-mesh dev up`"
        )
    if action == "kubeconfig":
        print(existing.kubeconfig)
        return 0
    print(
        f"running at {existing.server}: Kubernetes {existing.binaries.kubernetes_version}, "
        f"etcd {existing.binaries.etcd_version}; kubeconfig {existing.kubeconfig}"
    )
    return 0


def _versions(kubernetes_version: str | None) -> tuple[str, ...] | None:
    if kubernetes_version is None:
        return None
    if not re.fullmatch(r"1\.\d+\.\d+", kubernetes_version):
        raise ValueError(
            f"--kubernetes-version {kubernetes_version!r}: expected 1.MINOR.PATCH, "
            f"e.g. {KUBERNETES_VERSIONS[0]}"
        )
    return (kubernetes_version,)
