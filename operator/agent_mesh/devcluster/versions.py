"""Pinned component versions and the cache layout they are stored under."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

# Newest first: when the machine's Go refuses a release, the builder falls back in order.
KUBERNETES_VERSIONS: tuple[str, ...] = ("1.36.3", "1.35.4", "1.34.4")
DEFAULT_KUBERNETES_VERSION = KUBERNETES_VERSIONS[0]
DEFAULT_ETCD_VERSION = "3.6.16"
# Kubernetes 1.36 refuses containerd 1.x (Debian's is 1.6): containerd 2.x from its module.
CONTAINERD_VERSION = "2.4.2"
COREDNS_VERSION = "1.15.0"
# The tailnet in the tests: the tailscale.com release headscale v0.27.1 itself depends on
# (v1.104.x needs dependency versions the module proxy refuses).
TAILSCALE_VERSION = "1.86.5"
HEADSCALE_VERSION = "0.27.1"


def cache_root() -> Path:
    """Where built binaries live: $AGENT_MESH_CACHE_DIR, else the XDG cache dir."""
    override = os.environ.get("AGENT_MESH_CACHE_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "agent-mesh"


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """One builder per cache entry: a second caller waits, then finds it built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def state_root() -> Path:
    """Where `agent-mesh dev up` keeps a running plane's data, certs and pids."""
    override = os.environ.get("AGENT_MESH_STATE_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "agent-mesh"


def staging_version(kubernetes_version: str) -> str:
    """k8s.io staging modules are tagged v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>."""
    major, minor, patch = kubernetes_version.split(".")
    if major != "1":
        raise ValueError(f"unsupported Kubernetes major version in {kubernetes_version!r}")
    return f"v0.{minor}.{patch}"
