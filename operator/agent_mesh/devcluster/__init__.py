"""A real local Kubernetes control plane (etcd + kube-apiserver) built from Go modules.

Like controller-runtime's envtest: no container engine, no downloads beyond the Go module
proxy. Binaries are cached by version; a running plane is a set of loopback processes.
"""

from agent_mesh.devcluster.binaries import Binaries, BuildError, ensure_binaries
from agent_mesh.devcluster.cluster import ControlPlane, DevClusterError
from agent_mesh.devcluster.versions import DEFAULT_ETCD_VERSION, DEFAULT_KUBERNETES_VERSION

__all__ = [
    "DEFAULT_ETCD_VERSION",
    "DEFAULT_KUBERNETES_VERSION",
    "Binaries",
    "BuildError",
    "ControlPlane",
    "DevClusterError",
    "ensure_binaries",
]
