"""The chart mode's pure parts: the values for the local image and the samples turned
into managed agents."""

from __future__ import annotations

import pytest

from agent_mesh import testing
from agent_mesh.devcluster import DevClusterError
from agent_mesh.testing import demo, demo_chart


def test_helm_values_name_the_image_and_the_watched_namespace() -> None:
    assert demo_chart.helm_values("localhost/agent-mesh:abc", "agent-mesh-demo", "Never") == [
        "--set",
        "image.repository=localhost/agent-mesh,image.tag=abc,image.pullPolicy=Never",
        "--set",
        "watchNamespaces={agent-mesh-demo}",
    ]


@pytest.mark.parametrize("image", ["agent-mesh", "registry:5000/agent-mesh"])
def test_an_image_without_a_tag_is_refused_naming_the_flag(image: str) -> None:
    with pytest.raises(DevClusterError, match=r"--image .*needs a tag"):
        demo_chart.helm_values(image, "ns", "IfNotPresent")


def test_the_played_samples_become_managed_agents_and_tasks_come_apart() -> None:
    objects, tasks = demo_chart.chart_manifests(
        testing.sample_manifests(), demo.DEMO_AGENTS, "img:1", "Never", "agent-mesh-system"
    )
    agents = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "MeshAgent"}
    for name, program in demo.DEMO_AGENTS.items():
        spec = agents[name]
        assert "endpoint" not in spec  # the sample critic's loopback endpoint goes
        (container,) = spec["workload"]["spec"]["containers"]
        assert container["image"] == "img:1" and program in container["command"][-1]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["AGENT_MESH_URL"] == "https://agent-mesh.agent-mesh-system.svc:8090"
    assert "workload" not in agents["orchestrator"]  # no example plays it
    assert [t["metadata"]["name"] for t in tasks] == ["summarize-release-notes"]
