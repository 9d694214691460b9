"""Kubernetes I/O that kopf does not do for us, through the async client."""
