"""An operator that watches a namespace pattern serves a namespace created while kopf
starts observing namespaces. kopf lists the namespaces, then starts a watch that lists
them again; it dropped a namespace created between the two listings, and the operator
never served it (agent_mesh.runtime.namespace_observation). The gap lasts one apiserver
round trip, longer on a loaded machine; here a seam holds it open until the test has
created the namespace."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from tests.support.cluster import Cluster
from tests.support.mesh_api import apply_agent
from tests.support.namespaces import ensure_namespace, family
from tests.support.operators import own_operator
from tests.support.waiting import wait_for

WATCH_FAMILY = family("amw")

GAP_SEAM = '''
"""Hold kopf's namespace watch after its first listing until the test says go (seam)."""
import asyncio
from pathlib import Path
from kopf._core.reactor import queueing

_watcher = queueing.watcher

async def watcher(*, resource, **kwargs):
    if resource.plural == "namespaces":
        Path({marker!r}).write_text("listed")
        go = Path({go!r})
        for _ in range(1200):  # at most a minute, so a broken test cannot hang the operator
            if go.exists():
                break
            await asyncio.sleep(0.05)
    return await _watcher(resource=resource, **kwargs)

queueing.watcher = watcher
'''


def served(cluster: Cluster, namespace: str) -> bool:
    agent = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", "probe"
    )
    return "status" in agent


def test_a_namespace_created_between_kopfs_namespace_listings_is_served(
    cluster: Cluster, crds: object, tmp_path: Path
) -> None:
    site, marker, go = tmp_path / "site", tmp_path / "listed", tmp_path / "go"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GAP_SEAM.format(marker=str(marker), go=str(go)))
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    created: list[str] = []
    try:
        with own_operator(
            cluster, tmp_path / "operator.log", WATCH_FAMILY, extra_env={"PYTHONPATH": path}
        ):
            wait_for("kopf's first namespace listing", marker.exists)
            created.append(ensure_namespace(cluster, f"{WATCH_FAMILY}between"))
            apply_agent(cluster, created[-1], "probe", "worker")
            go.write_text("go")  # the namespace exists: let kopf's watch list again
            wait_for("the MeshAgent registered", lambda: served(cluster, created[-1]), timeout=60)
            # and one created once the watch runs, as any later namespace is
            created.append(ensure_namespace(cluster, f"{WATCH_FAMILY}after"))
            apply_agent(cluster, created[-1], "probe", "worker")
            wait_for("the MeshAgent registered", lambda: served(cluster, created[-1]), timeout=60)
    finally:
        for namespace in created:
            client.CoreV1Api(cluster.api).delete_namespace(
                namespace, propagation_policy="Background"
            )
