"""The chart's tests: helm built from its Go module (cached like the control plane)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.venvs import ROOT

CHART = ROOT / "charts" / "agent-mesh"


@pytest.fixture(scope="session")
def helm() -> Path:
    from agent_mesh.devcluster.binaries import ensure_helm

    return ensure_helm()


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


def render(
    helm: Path, *values: str, namespace: str = "agent-mesh-system", release: str = "agent-mesh"
) -> list[dict[str, Any]]:
    """`helm template` with `--set`/`-f` arguments, as objects; fails the test on an error."""
    proc = run_helm(helm, "template", release, str(CHART), "--namespace", namespace, *values)
    if proc.returncode != 0:
        pytest.fail(f"helm template {' '.join(values)} failed: {proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


TAILNET_DOMAIN = "tailnet.test"
CONTROL_URL = "http://headscale.tailnet.svc:8080"
TAILSCALE_VALUES = [
    "--set",
    f"tailscale.enabled=true,tailscale.tailnetDomain={TAILNET_DOMAIN}",
    "--set",
    f"tailscale.controlURL={CONTROL_URL},tailscale.headscaleApiKeySecret.name=headscale-api",
]
"""The chart with the operator's own tailscale sidecar, against a headscale."""
