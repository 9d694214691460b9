"""Namespaces of the tests: each test's own, deleted when it ends, named in a family an
operator watches. The session operator watches `amt-<session>-*`; an operator of a test's
own watches a family apart (`family("amk")`), so the two never share objects."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from kubernetes import client

from tests.support.cluster import Cluster

SESSION = uuid.uuid4().hex[:6]
"""This test session's mark, in every namespace it creates (sessions on one cluster stay apart)."""


def family(code: str) -> str:
    """The prefix of a namespace family, `<code>-<session>-`; its operator watches `<prefix>*`."""
    return f"{code}-{SESSION}-"


Scope = Literal["function", "module", "session"]

TEST_NAMESPACE_PREFIX = family("amt")
"""The family the session operator watches."""


@contextlib.contextmanager
def temporary_namespace(cluster: Cluster, name: str) -> Iterator[str]:
    """Namespace `name` (it may exist already), deleted when the block ends."""
    ensure_namespace(cluster, name)
    try:
        yield name
    finally:
        # Without kube-controller-manager a namespace stays Terminating; harmless here.
        client.CoreV1Api(cluster.api).delete_namespace(name, propagation_policy="Background")


def fresh_namespace(
    cluster: Cluster, prefix: str = TEST_NAMESPACE_PREFIX
) -> contextlib.AbstractContextManager[str]:
    """A new namespace `<prefix><random>` for the block (a family's prefix, with a label)."""
    return temporary_namespace(cluster, f"{prefix}{uuid.uuid4().hex[:8]}")


def namespace_fixture(prefix: str, scope: Scope = "function") -> Any:
    """A pytest fixture, for a module to name: a fresh namespace `<prefix><random>` per
    test (or per `scope`), deleted after it."""

    @pytest.fixture(scope=scope)
    def fixture(cluster: Cluster) -> Iterator[str]:
        with fresh_namespace(cluster, prefix) as name:
            yield name

    return fixture


def ensure_namespace(cluster: Cluster, name: str) -> str:
    try:
        client.CoreV1Api(cluster.api).create_namespace({"metadata": {"name": name}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    return name
