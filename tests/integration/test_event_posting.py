"""Events posted from outside kopf handlers, against the real apiserver: repeats become a
count on one Event, a deleted Event's repeat starts a new one, and an apiserver that
cannot be reached loses the Event without raising."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig

from agent_mesh.kube.events import EventPoster, ObjectRef
from tests.support.cluster import Cluster


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[aclient.ApiClient]:
    api = await aconfig.new_client_from_config(str(cluster.kubeconfig))
    yield api
    await api.close()


async def _events_about(api: aclient.ApiClient, ref: ObjectRef) -> list[Any]:
    found = await aclient.CoreV1Api(api).list_namespaced_event(
        ref.namespace, field_selector=f"involvedObject.uid={ref.uid}"
    )
    return list(found.items)


def _ref(namespace: str) -> ObjectRef:
    return ObjectRef("MeshAgent", namespace, "flaky", str(uuid.uuid4()))


async def test_a_repeated_event_counts_on_one_object_and_a_deleted_one_is_posted_anew(
    api: aclient.ApiClient, namespace: str
) -> None:
    poster = EventPoster(api)
    ref = _ref(namespace)
    for _ in range(3):
        poster.post(ref, "Warning", "AgentDegraded", "heartbeats are late")
        await poster.drain()

    events = await _events_about(api, ref)
    assert [(e.reason, e.count) for e in events] == [("AgentDegraded", 3)]
    first = events[0].metadata.name

    await aclient.CoreV1Api(api).delete_namespaced_event(first, namespace)
    poster.post(ref, "Warning", "AgentDegraded", "heartbeats are late")
    await poster.drain()

    events = await _events_about(api, ref)
    assert [(e.reason, e.count) for e in events] == [("AgentDegraded", 1)]
    assert events[0].metadata.name != first

    poster.post(ref, "Warning", "AgentDegraded", "heartbeats are late")
    await poster.drain()
    events = await _events_about(api, ref)
    assert [(e.metadata.name, e.count) for e in events] == [(events[0].metadata.name, 2)]


async def test_an_event_for_an_unreachable_apiserver_is_logged_and_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agent_mesh.devcluster.ports import free_port

    configuration = aclient.Configuration(host=f"http://127.0.0.1:{free_port()}")
    async with aclient.ApiClient(configuration) as api:
        poster = EventPoster(api)
        ref = _ref("default")
        with caplog.at_level(logging.WARNING, logger="agent_mesh.events"):
            poster.post(ref, "Warning", "AgentUnreachable", "no heartbeat")
            await poster.drain()
    # only the poster's own handler logs this; an escaped error would log nothing here
    assert any(
        "could not post Event AgentUnreachable on default/flaky" in r.getMessage()
        for r in caplog.records
    ), caplog.text
