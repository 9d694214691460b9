"""agent-mesh: a Kubernetes operator that runs a mesh of cooperating AI agents."""

__version__ = "0.1.0"
