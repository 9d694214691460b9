"""`make demo` in chart mode: the operator installed by the Helm chart (charts/agent-mesh)
and the example agents as pods of the project's image, managed by the operator
(MeshAgents with `spec.workload`), on the local node or on a cluster that can pull the
image.

Kept apart from the process mode (testing/demo.py): what it runs is the chart and pods, not
processes of this machine, and what it cleans up is a release and namespaces.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from agent_mesh import testing
from agent_mesh.devcluster import DevClusterError
from agent_mesh.devcluster.kubectl import Kubectl

RELEASE = "agent-mesh"  # the chart's fullname is then "agent-mesh" too
MESH_PORT = 8090
AGENT_PORT = 8080
AUDIENCE = "agent-mesh"  # the operator's default service_account_audience
CA_MOUNT = "/var/run/agent-mesh-ca"
TOKEN_MOUNT = "/var/run/secrets/agent-mesh"  # noqa: S105 (a path, not a secret)
# runs an example agent as the image ships it (package data of agent_mesh)
_RUN_EXAMPLE = (
    "import pathlib, runpy, agent_mesh; runpy.run_path(str(pathlib.Path(agent_mesh.__file__)"
    ".parent / 'examples' / {program!r}), run_name='__main__')"
)


def chart_dir() -> Path | None:
    """charts/agent-mesh of a source checkout (a wheel carries no chart)."""
    from agent_mesh.devcluster.images import repository_root

    root = repository_root()
    chart = None if root is None else root / "charts" / "agent-mesh"
    return chart if chart is not None and (chart / "Chart.yaml").is_file() else None


@contextlib.contextmanager
def step(say: Callable[[str], None], what: str) -> Iterator[None]:
    """Say `what` before, and how long it took after when that was over a second."""
    say(what)
    started = time.monotonic()
    yield
    took = time.monotonic() - started
    if took > 1:
        say(f"    done in {took:.1f} s")


def mesh_url(namespace: str) -> str:
    return f"https://{RELEASE}.{namespace}.svc:{MESH_PORT}"


def helm_values(image: str, watch: str, pull_policy: str) -> list[str]:
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        raise DevClusterError(f"--image {image}: needs a tag (repository:tag)")
    return [
        "--set",
        f"image.repository={repository},image.tag={tag},image.pullPolicy={pull_policy}",
        "--set",
        f"watchNamespaces={{{watch}}}",
    ]


def helm(binary: Path, kubeconfig: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [str(binary), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check and proc.returncode != 0:
        raise DevClusterError(f"helm {' '.join(args)}: {(proc.stdout + proc.stderr).strip()}")
    return proc.stdout


def agent_workload(
    program: str, image: str, pull_policy: str, operator_namespace: str
) -> dict[str, Any]:
    """The pod an example agent runs in: it exchanges its projected ServiceAccount token
    at the operator's Service, trusting the operator's CA bundle ConfigMap, and serves
    tasks at its pod IP."""
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "AGENT_MESH_URL", "value": mesh_url(operator_namespace)},
        {"name": "AGENT_MESH_CA_FILE", "value": f"{CA_MOUNT}/ca.crt"},
        {"name": "AGENT_MESH_PORT", "value": str(AGENT_PORT)},
        {"name": "AGENT_MESH_ENDPOINT", "value": f"http://$(POD_IP):{AGENT_PORT}"},
        {"name": "AGENT_MESH_HEARTBEAT_SECONDS", "value": "10"},
        {"name": "AGENT_MESH_DRAIN_SECONDS", "value": "2"},
        {"name": "AGENT_MESH_LOG_FORMAT", "value": "text"},
    ]
    return {
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 3,
            "containers": [
                {
                    "name": "agent",
                    "image": image,
                    "imagePullPolicy": pull_policy,
                    "command": ["python3", "-c", _RUN_EXAMPLE.format(program=program)],
                    "env": env,
                    "volumeMounts": [
                        {"name": "mesh-ca", "mountPath": CA_MOUNT},
                        {"name": "token", "mountPath": TOKEN_MOUNT},
                    ],
                }
            ],
            "volumes": mesh_volumes(),
        }
    }


def mesh_volumes() -> list[dict[str, Any]]:
    """What an agent pod mounts to reach the mesh API: the CA bundle the operator publishes
    in its namespace (at CA_MOUNT), and a projected ServiceAccount token for the mesh's
    audience (at TOKEN_MOUNT) that the SDK exchanges for a mesh token."""
    return [
        {"name": "mesh-ca", "configMap": {"name": "agent-mesh-ca.crt"}},
        {
            "name": "token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": "token",
                            "audience": AUDIENCE,
                            "expirationSeconds": 3600,
                        }
                    }
                ]
            },
        },
    ]


def chart_manifests(
    samples_dir: Path,
    agents: dict[str, str],
    image: str,
    pull_policy: str,
    operator_namespace: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The samples as the chart mode applies them: (everything but the tasks, the tasks).
    The MeshAgents an example plays get `spec.workload` (and lose a sample endpoint: the
    operator runs them, so they are reached in the cluster)."""
    objects: list[dict[str, Any]] = []
    for path in sorted(samples_dir.glob("*.yaml")):
        objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for obj in objects:
        name = obj.get("metadata", {}).get("name")
        if obj.get("kind") == "MeshAgent" and name in agents:
            spec = obj.setdefault("spec", {})
            spec.pop("endpoint", None)
            spec["port"] = AGENT_PORT
            spec["workload"] = agent_workload(agents[name], image, pull_policy, operator_namespace)
    tasks = [o for o in objects if o.get("kind") == "MeshTask"]
    return [o for o in objects if o.get("kind") != "MeshTask"], tasks


def agent_pods(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """Pod name -> phase of the managed agents' pods."""
    listing = json.loads(
        kubectl("get", "pods", "-n", namespace, "-l", "agentmesh.io/agent", "-o", "json")
    )
    return {p["metadata"]["name"]: p.get("status", {}).get("phase", "") for p in listing["items"]}


def apply(kubectl: Kubectl, namespace: str, objects: list[dict[str, Any]]) -> None:
    if objects:
        kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=agent-mesh-demo",
            "-n",
            namespace,
            "-f",
            "-",
            stdin="\n---\n".join(json.dumps(o) for o in objects),
        )


def wait(what: str, ready: Callable[[], object], timeout: float) -> None:
    testing.wait_until(what, ready, timeout, interval=0.5)
