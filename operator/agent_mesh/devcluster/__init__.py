"""A real local Kubernetes control plane (etcd + kube-apiserver) built from Go modules.

Like controller-runtime's envtest: no container engine, no downloads beyond the Go module
proxy. Binaries are cached by version; a running plane is a set of loopback processes.
Beside it, what the CLI and the demo need on a developer's machine: free and busy ports
(`ports`), the kubeconfig check (`kubeconfig`) and kubectl (`kubectl`); `agent-mesh demo`
runs in agent_mesh.testing (it runs an operator and agents). It stands alone: of
agent_mesh it imports only pki.
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
