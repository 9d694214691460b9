"""Certificates for the whole product, made with `cryptography` only: the local control
plane's (devcluster) and the operator's runtime CA, which issues and renews the serving
certificate of the mesh API and the webhooks. Imports nothing of the operator's layers."""

from __future__ import annotations

from typing import Final

CA_SECRET: Final = "agent-mesh-ca"  # noqa: S105  (a Secret name)
"""The operator's CA: a Secret in its namespace with `ca.crt` and `ca.key`."""
CA_BUNDLE_CONFIGMAP: Final = "agent-mesh-ca.crt"
"""The CA bundle clients trust, published as a ConfigMap (as Kubernetes' kube-root-ca.crt)
in the operator's namespace and in every namespace with a MeshAgent."""
CA_BUNDLE_KEY: Final = "ca.crt"
"""The key of the bundle in that ConfigMap (and in the CA Secret)."""
