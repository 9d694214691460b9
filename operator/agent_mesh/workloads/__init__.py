"""What the operator creates for a managed agent (a MeshAgent with spec.workload): pure
builders of the Kubernetes objects, and nothing that talks to the apiserver."""
