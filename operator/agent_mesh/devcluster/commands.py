"""`agent-mesh dev up|down|kubeconfig|status|build`: a detached local cluster.

`dev build --tailnet` also builds the local tailnet's binaries (Tailscale and headscale).

`dev up` starts a node beside the control plane where the machine allows it (root, the
kernel features, the Debian packages) and says plainly why not where it does not;
`--no-node` keeps the control-plane-only start (about 3 s) for fast loops.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from agent_mesh.devcluster import ControlPlane, DevClusterError, ensure_binaries, network
from agent_mesh.devcluster import node as devnode
from agent_mesh.devcluster.binaries import ensure_tailnet_binaries
from agent_mesh.devcluster.cluster import LOOPBACK
from agent_mesh.devcluster.ports import check_port_free
from agent_mesh.devcluster.versions import KUBERNETES_VERSIONS, state_root


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(
    action: str,
    *,
    port: int | None = None,
    kubernetes_version: str | None = None,
    node: bool = True,
    tailnet: bool = False,
) -> int:
    directory = state_root() / "dev"
    existing = ControlPlane.load(directory)
    if action == "build":
        if tailnet:
            _build_tailnet()
        return _build(kubernetes_version, node)
    if action == "up":
        return _up(directory, existing, port, kubernetes_version, node)
    if action == "down":
        return _down(directory, existing)
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
    found = devnode.status(existing.binaries.kubectl, existing.kubeconfig)
    if found is None:
        print("no node: control plane only")
    elif found.record.plane.get("directory") != str(directory):
        print(
            "no node: control plane only (the machine's node was started by pid "
            f"{found.record.owner_pid} for another control plane)"
        )
    else:
        print(found.describe())
    return 0


def _build_tailnet() -> None:
    """The local tailnet's binaries: only the tests marked tailscale need them (they build
    them on first use too), so `dev build` makes them only when asked."""
    tailnet = ensure_tailnet_binaries(say=_say)
    _say(f"Tailscale {tailnet.tailscale_version}, headscale {tailnet.headscale_version}")
    for path in (tailnet.tailscaled, tailnet.tailscale, tailnet.containerboot, tailnet.headscale):
        print(path)


def _build(kubernetes_version: str | None, node: bool) -> int:
    binaries = ensure_binaries(_versions(kubernetes_version))
    _say(
        f"Kubernetes {binaries.kubernetes_version}, etcd {binaries.etcd_version} "
        f"in {binaries.bin_dir.parent}"
    )
    for path in (binaries.etcd, binaries.kube_apiserver, binaries.kubectl):
        print(path)
    if not node:
        return 0
    reason = devnode.unsupported_reason()
    if reason:
        _say(f"no node on this machine: {reason}")
        return 0
    prepared = devnode.prepare(binaries, state_root() / "dev", say=_say)
    for path in prepared.node_binaries.all().values():
        print(path)
    for image in [prepared.pause_image, *prepared.images]:
        print(f"{image.name} {image.archive}")
    return 0


def _up(
    directory: Path,
    existing: ControlPlane | None,
    port: int | None,
    kubernetes_version: str | None,
    node: bool,
) -> int:
    if existing is not None and existing.running():
        found = devnode.status(existing.binaries.kubectl, existing.kubeconfig)
        with_node = " with a node" if found is not None and found.live else ""
        _say(f"already running{with_node} at {existing.server}")
        print(existing.kubeconfig)
        return 0
    if existing is not None:
        existing.stop()
    if node:
        reason = devnode.unsupported_reason()
        if reason:
            _say(f"agent-mesh: starting the control plane only, without a node: {reason}")
            node = False
    if port is not None:
        check_port_free(LOOPBACK, port, "--port")  # before a build, not after
    binaries = ensure_binaries(_versions(kubernetes_version))
    if node:
        # A leftover dev node (its record says so) goes with the rest of the old plane.
        devnode.down(only_owned_by=directory, say=_say)
    shutil.rmtree(directory, ignore_errors=True)
    if not node:
        plane = ControlPlane(binaries, directory, api_port=port, detached=True)
        plane.start()
        _say(
            f"Kubernetes {binaries.kubernetes_version} (etcd {binaries.etcd_version}) at "
            f"{plane.server}, ready in {plane.startup_seconds:.1f} s (control plane only)"
        )
        kubeconfig = plane.kubeconfig
    else:
        started = devnode.prepare(binaries, directory, detached=True, api_port=port, say=_say)
        started.start()
        _say(
            f"Kubernetes {binaries.kubernetes_version} at {started.plane.server} with node "
            f"{devnode.NODE_NAME} Ready in {started.startup_seconds:.1f} s "
            f"(pods on {network.BRIDGE}, {network.POD_CIDR}; "
            f"images: {', '.join(i.name for i in started.images) or 'pause only'})"
        )
        kubeconfig = started.kubeconfig
    _say(f"kubectl: {binaries.kubectl}")
    _say(f"use it:  export KUBECONFIG={kubeconfig}")
    print(kubeconfig)
    return 0


def _down(directory: Path, existing: ControlPlane | None) -> int:
    try:
        had_node = devnode.down(only_owned_by=directory, say=_say)
    except devnode.NodeBusy as busy:
        _say(f"agent-mesh: {busy}")
        had_node = False
    if existing is None and not had_node:
        _say("no local control plane is running")
        return 0
    if existing is not None:
        existing.stop()
    shutil.rmtree(directory, ignore_errors=True)
    _say("stopped" + (" (node removed, host restored)" if had_node else ""))
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
