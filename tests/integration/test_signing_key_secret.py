"""The signing-key Secret against the real apiserver: two operators writing it at once
never overwrite each other's keys (resourceVersion preconditions, adoption on 409)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig

from agent_mesh.auth.keys import KeyRing
from agent_mesh.kube.keystore import ROTATE_ANNOTATION, SecretKeyStore
from tests.support.cluster import Cluster

OVERLAP = dt.timedelta(minutes=10)


def kids(ring: KeyRing | None) -> tuple[str, list[str]] | None:
    """A ring by its key ids: the active one, and every one that verifies."""
    return None if ring is None else (ring.active.kid, sorted(ring.verifying))


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[aclient.ApiClient]:
    api = await aconfig.new_client_from_config(str(cluster.kubeconfig))
    yield api
    await api.close()


async def test_two_operators_rotating_at_once_keep_one_ring_and_lose_no_key(
    api: aclient.ApiClient, namespace: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    first, second = SecretKeyStore(api, namespace), SecretKeyStore(api, namespace)
    start = await first.save(KeyRing.generate("ES256", now))
    assert kids(await second.load()) == kids(start)  # both operators sign with the same key

    mine = await first.save(start.rotate(now, OVERLAP))  # rotates first
    theirs = await second.save(start.rotate(now, OVERLAP))  # rotates from the old ring

    assert kids(theirs) == kids(
        mine
    )  # the second adopted the first's ring instead of overwriting it
    stored = await SecretKeyStore(api, namespace).load()
    assert kids(stored) == kids(mine)
    assert stored is not None and start.active.kid in stored.verifying


async def test_two_operators_starting_on_a_fresh_cluster_sign_with_one_key(
    api: aclient.ApiClient, namespace: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    first, second = SecretKeyStore(api, namespace), SecretKeyStore(api, namespace)
    assert await first.load() is None and await second.load() is None
    created = await first.save(KeyRing.generate("ES256", now))
    adopted = await second.save(KeyRing.generate("ES256", now))  # its create is refused
    assert kids(adopted) == kids(created)
    assert kids(await SecretKeyStore(api, namespace).load()) == kids(created)


async def test_a_rotation_requested_by_annotation_meanwhile_is_still_written(
    api: aclient.ApiClient, cluster: Cluster, namespace: str
) -> None:
    """A change to the Secret that is not a key change (a user's annotation) is no reason
    to drop this operator's write: it is written on the new version."""
    now = dt.datetime.now(dt.UTC)
    store = SecretKeyStore(api, namespace)
    start = await store.save(KeyRing.generate("ES256", now))
    cluster.kubectl("annotate", "-n", namespace, "secret", store.name, f"{ROTATE_ANNOTATION}=now")
    rotated = await store.save(start.rotate(now, OVERLAP))
    assert kids(rotated) != kids(start)
    assert kids(await SecretKeyStore(api, namespace).load()) == kids(rotated)
