"""Run a mesh on one machine, as the tests, the benchmarks and `agent-mesh demo` do (as
kopf ships `kopf.testing`): an operator process, agent processes, external agents
registered with the operator.

    kube = ...  # a Kube: the few reads and writes the harness needs, by your client
    operator = start_operator(kube, kubeconfig, log, watch="team-*",
                              operator_namespace="agent-mesh-system")
    agent = register_external_agent(kube, "team-a", "echo", "worker", capabilities=["echo"])
    process = launch_agent("echo_worker.py", mesh_url=operator.mesh_url,
                           ca_file=operator.ca_file, namespace="team-a", agent_id="echo",
                           credential=agent.credential, url=agent.url, log=log_dir / "echo.log")
    process.wait_ready()
    ...
    process.stop(); operator.stop()

Everything listens on 127.0.0.1, and every process dies with the one that started it.
The operator's runtime and the SDK never import this package (an import-linter
contract); the example agents and sample manifests it runs are package data, so an
installed wheel has them.
"""

from agent_mesh.testing.kube import (
    ExternalAgent,
    Kube,
    credential_of,
    manifest,
    mesh_ca_bundle,
    meshagent_manifest,
    register_external_agent,
)
from agent_mesh.testing.processes import (
    AgentProcess,
    OperatorProcess,
    launch_agent,
    start_operator,
)
from agent_mesh.testing.programs import example_program, sample_manifests
from agent_mesh.testing.waiting import HarnessError, answers, wait_until

__all__ = [
    "AgentProcess",
    "ExternalAgent",
    "HarnessError",
    "Kube",
    "OperatorProcess",
    "answers",
    "credential_of",
    "example_program",
    "launch_agent",
    "manifest",
    "mesh_ca_bundle",
    "meshagent_manifest",
    "register_external_agent",
    "sample_manifests",
    "start_operator",
    "wait_until",
]
