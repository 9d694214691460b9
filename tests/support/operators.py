"""Operator processes for tests (agent_mesh.testing.start_operator, with the tests'
namespaces): the session's, and operators of a test's own, each watching a namespace
family apart from the session's."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_mesh import testing
from agent_mesh.testing import OperatorProcess
from tests.support.cluster import Cluster
from tests.support.namespaces import TEST_NAMESPACE_PREFIX, ensure_namespace, family


def start_operator(
    cluster: Cluster,
    log: Path,
    *extra: str,
    watch: str = f"{TEST_NAMESPACE_PREFIX}*",
    operator_namespace: str = f"{TEST_NAMESPACE_PREFIX}system",
    mesh_port: int | None = None,
    extra_env: dict[str, str] | None = None,
    mesh_tls: bool = True,
    mesh_host: str = "127.0.0.1",
) -> OperatorProcess:
    """An operator process watching `watch`, with its keys in `operator_namespace`. Its
    mesh API serves https (unless `mesh_tls` is False), verified with the CA bundle the
    operator publishes in `operator_namespace`, as any client would get it."""
    ensure_namespace(cluster, operator_namespace)
    return testing.start_operator(
        cluster,
        cluster.kubeconfig,
        log,
        *extra,
        watch=watch,
        operator_namespace=operator_namespace,
        mesh_port=mesh_port,
        extra_env=extra_env,
        mesh_tls=mesh_tls,
        mesh_host=mesh_host,
    )


def log_records(operator: OperatorProcess) -> list[dict[str, Any]]:
    """The operator's log lines that are JSON records, parsed (the others skipped)."""
    records = []
    for line in operator.logs().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def start_own_operator(
    cluster: Cluster,
    log: Path,
    family: str,
    *,
    system: str | None = None,
    extra_env: dict[str, str] | None = None,
    webhooks: bool = False,
) -> OperatorProcess:
    """An operator of a test's own: it watches the namespace family `family` (a prefix from
    namespaces.family) and keeps its keys and CA in `system` (default `<family>system`).
    No webhooks unless `webhooks` (the cluster's webhook configuration is the session
    operator's; one of a test's own registers under AGENT_MESH_WEBHOOK_CONFIGURATION)."""
    return start_operator(
        cluster,
        log,
        *(() if webhooks else ("--no-webhooks",)),
        watch=f"{family}*",
        operator_namespace=system or f"{family}system",
        extra_env=extra_env,
    )


@contextlib.contextmanager
def own_operator(
    cluster: Cluster,
    log: Path,
    family: str,
    *,
    system: str | None = None,
    extra_env: dict[str, str] | None = None,
    webhooks: bool = False,
    killed: bool = False,
) -> Iterator[OperatorProcess]:
    """start_own_operator for the block; stopped when it ends (SIGTERM, then SIGKILL), or
    with `killed` SIGKILLed (no shutdown code runs: what it keeps must be in the cluster)."""
    operator = start_own_operator(
        cluster, log, family, system=system, extra_env=extra_env, webhooks=webhooks
    )
    try:
        yield operator
    finally:
        if killed:
            operator.kill()
        else:
            operator.stop()


def own_operator_fixture(family: str, extra_env: dict[str, str] | None = None) -> Any:
    """A pytest fixture, for a module to name: an operator of the module's own
    (own_operator, with `extra_env`), shared by the module's tests."""

    @pytest.fixture(scope="module")
    def fixture(
        cluster: Cluster, crds: object, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[OperatorProcess]:
        log = tmp_path_factory.mktemp(family.rstrip("-")) / "operator.log"
        with own_operator(cluster, log, family, extra_env=extra_env) as operator:
            yield operator

    return fixture


KEYS_FAMILY = family("amk")
"""The family of the operators the key and restart tests start, stop and start again
over one system namespace (its keys, revocations and CA)."""
SHORT_WINDOWS = {
    "AGENT_MESH_KEY_CHECK_SECONDS": "0.5",
    "AGENT_MESH_KEY_OVERLAP_SECONDS": "4",
    "AGENT_MESH_HEALTH_DEGRADED_SECONDS": "3",
    "AGENT_MESH_HEALTH_UNREACHABLE_SECONDS": "6",
    "AGENT_MESH_HEALTH_SWEEP_SECONDS": "0.25",
}
"""Short key and health windows: rotations and health changes within seconds."""


def keys_operator(
    cluster: Cluster,
    log: Path,
    system: str,
    *,
    killed: bool = False,
    windows: dict[str, str] | None = None,
) -> contextlib.AbstractContextManager[OperatorProcess]:
    """An operator of KEYS_FAMILY with SHORT_WINDOWS (`windows` overriding some), its keys
    in `system`, for the block (`killed`: SIGKILLed at its end)."""
    return own_operator(
        cluster,
        log,
        KEYS_FAMILY,
        system=system,
        extra_env={**SHORT_WINDOWS, **(windows or {})},
        killed=killed,
    )


def operator_with_namespace(
    cluster: Cluster, log: Path, family: str, *, extra_env: dict[str, str] | None = None
) -> tuple[str, OperatorProcess]:
    """A fresh namespace of `family`, then an operator of the test's own watching it. The
    caller stops the operator and deletes the namespace."""
    namespace = ensure_namespace(cluster, f"{family}{uuid.uuid4().hex[:6]}")
    return namespace, start_own_operator(cluster, log, family, extra_env=extra_env)
