"""Webhook configurations of an operator of a test's own: a name of their own (so the
session operator's stay untouched), and nothing left behind, whatever the test did (a
leftover configuration with failurePolicy Fail would block writes for every later test)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from kubernetes import client

from tests.support.cluster import Cluster
from tests.support.namespaces import SESSION


@contextlib.contextmanager
def own_webhook_configuration(cluster: Cluster, code: str) -> Iterator[str]:
    """A fresh name `<code>-<session>-<random>.agentmesh.io` for the block (give it to the
    operator as AGENT_MESH_WEBHOOK_CONFIGURATION); its validating and mutating
    configurations are deleted when the block ends."""
    name = f"{code}-{SESSION}-{uuid.uuid4().hex[:6]}.agentmesh.io"
    try:
        yield name
    finally:
        admission = client.AdmissionregistrationV1Api(cluster.api)
        for delete in (
            admission.delete_validating_webhook_configuration,
            admission.delete_mutating_webhook_configuration,
        ):
            with contextlib.suppress(client.ApiException):
                delete(name)
