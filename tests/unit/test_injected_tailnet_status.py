"""An injected agent's tailnet identity, judged: its pod is found by the label
agentmesh.io/agent=<name> (the newest live one when there are several, and the message says
so), its sidecar's health is that pod's `tailscale` container, a pod admitted without the
sidecar says why, and the MagicDNS endpoint is shown only while connected."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from typing import Any

from agent_mesh.api.meshagent import agent_record
from agent_mesh.api.meshagent_status import tailnet_conditions
from agent_mesh.config import OperatorConfig
from agent_mesh.controllers.tailnet import identity_changes, injected_on_tailnet, observation
from agent_mesh.domain.discovery import resolve_endpoint
from agent_mesh.tailscale.device import Device, SidecarState, device_from_secret
from agent_mesh.tailscale.injected_pod import injected_sidecar_state, judged_pod
from agent_mesh.workloads.tailnet import Observation, observe

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
FQDN = "agent-mesh-prod-worker.tailnet.test"
IPS = ["100.64.0.7", "fd7a:115c:a1e0::7"]
ACCOUNT = "worker-sa"
CONFIG = OperatorConfig(tailscale_tailnet_domain="tailnet.test", tailnet_proxy="http://127.0.0.1:1")
READY: dict[str, Any] = {"ready": True, "state": {"running": {}}}


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


SECRET = {
    "device_id": _b64("nodeid-7"),
    "device_fqdn": _b64(f"{FQDN}."),
    "device_ips": _b64(json.dumps(IPS)),
}


def _pod(
    name: str,
    created: str = "2026-01-01T00:00:00Z",
    *,
    sidecar: dict[str, Any] | None = READY,
    injected: bool = True,
    account: str | None = ACCOUNT,
    deleting: bool = False,
    phase: str = "Running",
) -> dict[str, Any]:
    containers = [{"name": "agent"}, *([{"name": "tailscale"}] if injected else [])]
    statuses = [{"name": "agent", "ready": True, "state": {"running": {}}}]
    if sidecar is not None and injected:
        statuses.append({"name": "tailscale", "restartCount": 0, **sidecar})
    meta: dict[str, Any] = {"name": name, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    spec: dict[str, Any] = {"containers": containers}
    if account:
        spec["serviceAccountName"] = account
    return {
        "metadata": meta,
        "spec": spec,
        "status": {"phase": phase, "containerStatuses": statuses},
    }


def _state(pods: list[dict[str, Any]]) -> tuple[SidecarState, str]:
    return injected_sidecar_state(
        pods, agent_name="worker", namespace="prod", service_account=ACCOUNT
    )


def test_no_labelled_pod_says_which_label_and_account_are_missing() -> None:
    state, said = _state([])
    assert state is SidecarState.NO_POD
    assert "agentmesh.io/agent=worker" in said and "prod" in said and ACCOUNT in said
    seen = observe(FQDN, None, (state, said), fallback="F.")
    assert (seen.connected, seen.reason) == (False, "AgentPodMissing")


def test_the_labelled_pods_sidecar_is_judged_like_a_managed_one() -> None:
    assert _state([_pod("w-1")])[0] is SidecarState.READY
    assert _state([_pod("w-1", sidecar={"ready": False, "state": {"running": {}}})])[0] is (
        SidecarState.NOT_READY
    )
    dead = {"ready": False, "state": {"terminated": {"reason": "Error", "exitCode": 1}}}
    state, said = _state([_pod("w-1", sidecar=dead)])
    assert state is SidecarState.NOT_RUNNING and "exit code 1" in said and "w-1" in said


def test_a_pod_created_before_the_webhook_is_not_injected_and_says_why() -> None:
    state, said = _state([_pod("w-1", injected=False)])
    assert state is SidecarState.NOT_INJECTED
    assert "w-1" in said and "no tailscale container" in said
    assert "created before the webhook" in said and f"running as ServiceAccount {ACCOUNT!r}" in said
    seen = observe(FQDN, device_from_secret(SECRET), (state, said))
    assert (seen.connected, seen.reason) == (False, "SidecarNotInjected")


def test_a_pod_without_the_sidecar_running_as_another_account_names_both() -> None:
    state, said = _state([_pod("w-1", injected=False, account=None)])
    assert state is SidecarState.NOT_INJECTED
    assert f"runs as 'default', not as ServiceAccount {ACCOUNT!r}" in said


def test_several_labelled_pods_judge_the_newest_and_say_so() -> None:
    old = _pod("w-old", "2026-01-01T00:00:00Z", sidecar={"ready": False, "state": {"running": {}}})
    new = _pod("w-new", "2026-01-01T00:05:00Z")
    state, said = _state([new, old])
    assert state is SidecarState.READY
    assert "2 pods are labelled agentmesh.io/agent=worker (w-new, w-old)" in said
    assert "pod w-new, the newest, is judged" in said
    assert judged_pod([old, new]) is new


def test_pods_being_deleted_or_finished_count_only_when_nothing_else_is_left() -> None:
    going = _pod("w-going", "2026-01-01T00:09:00Z", deleting=True)
    done = _pod("w-done", "2026-01-01T00:08:00Z", phase="Failed")
    live = _pod("w-live", "2026-01-01T00:00:00Z", sidecar={"ready": False, "state": {}})
    assert judged_pod([going, done, live]) is live
    state, said = _state([going, done, live])
    assert state is SidecarState.NOT_RUNNING and "pods are labelled" not in said
    assert judged_pod([done, going]) is going
    assert judged_pod([]) is None


def test_only_a_tailscale_agent_without_workload_naming_its_account_is_injected() -> None:
    def agent(**spec: Any) -> dict[str, Any]:
        return {"spec": {"agentType": "w", "network": "tailscale", **spec}}

    assert injected_on_tailnet(agent(serviceAccountName=ACCOUNT), CONFIG) is not None
    assert injected_on_tailnet(agent(), CONFIG) is None
    assert injected_on_tailnet(agent(serviceAccountName=ACCOUNT, network="direct"), CONFIG) is None
    with_workload = agent(serviceAccountName=ACCOUNT, workload={"spec": {"containers": []}})
    assert injected_on_tailnet(with_workload, CONFIG) is None


class FakeDevices:
    """The project's DeviceSource Protocol, answering from fixed values."""

    def __init__(self, device: Device | None, pods: list[dict[str, Any]]) -> None:
        self.device, self.pods = device, pods
        self.calls: list[tuple[str, ...]] = []

    async def get(
        self, namespace: str, agent_name: str
    ) -> tuple[Device | None, tuple[SidecarState, str]]:
        self.calls.append(("managed", namespace, agent_name))
        return self.device, (SidecarState.NO_POD, "managed")

    async def get_injected(
        self, namespace: str, agent_name: str, service_account: str | None
    ) -> tuple[Device | None, tuple[SidecarState, str]]:
        self.calls.append(("injected", namespace, agent_name, str(service_account)))
        state = injected_sidecar_state(
            self.pods, agent_name=agent_name, namespace=namespace, service_account=service_account
        )
        return self.device, state


def _meshagent(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "worker", "namespace": "prod", "uid": "u", "generation": 1},
        "spec": {
            "agentType": "worker",
            "network": "tailscale",
            "port": 8081,
            "serviceAccountName": ACCOUNT,
        },
        "status": status or {},
    }


def _observe(devices: FakeDevices, body: dict[str, Any]) -> Observation:
    settings = injected_on_tailnet(body, CONFIG)
    assert settings is not None
    return asyncio.run(observation(devices, settings, body))


def _conditions(seen: Observation) -> list[dict[str, Any]]:
    return tailnet_conditions(
        [],
        tailscale=True,
        managed=False,
        configured=True,
        problem=None,
        generation=1,
        now=NOW,
        observed=seen.condition,
    )


def test_an_injected_agent_is_observed_through_its_labelled_pod() -> None:
    devices = FakeDevices(device_from_secret(SECRET), [_pod("w-1")])
    seen = _observe(devices, _meshagent())
    assert devices.calls == [("injected", "prod", "worker", ACCOUNT)]
    assert (seen.connected, seen.reason) == (True, "TailnetDeviceReady")
    (condition,) = _conditions(seen)
    assert (condition["status"], condition["reason"]) == ("True", "TailnetDeviceReady")


def test_an_injected_agent_not_connected_says_how_the_mesh_reaches_it() -> None:
    seen = _observe(FakeDevices(None, []), _meshagent())
    (condition,) = _conditions(seen)
    assert (condition["status"], condition["reason"]) == ("False", "AgentPodMissing")
    assert "spec.endpoint" in condition["message"] and "its Service" not in condition["message"]


def test_injected_endpoint_is_the_magicdns_url_while_connected_and_cleared_after() -> None:
    up = _observe(FakeDevices(device_from_secret(SECRET), [_pod("w-1")]), _meshagent())
    changes = identity_changes(_meshagent(), up, _conditions(up), CONFIG)
    url = f"http://{FQDN}:8081"
    assert changes["tailscale"] == {
        "hostname": "agent-mesh-prod-worker",
        "dnsName": FQDN,
        "ips": IPS,
        "deviceId": "nodeid-7",
    }
    assert changes["endpoint"] == url
    written = _meshagent({**changes, "conditions": _conditions(up)})
    assert resolve_endpoint(agent_record(written), None) == url

    dead = {"ready": False, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
    down = _observe(FakeDevices(device_from_secret(SECRET), [_pod("w-1", sidecar=dead)]), written)
    after = identity_changes(written, down, _conditions(down), CONFIG)
    assert after == {"endpoint": None}  # the identity stays; the stale URL is not dialled


def test_an_endpoint_the_agent_reported_is_kept_when_it_is_not_the_tailnet_url() -> None:
    down = _observe(FakeDevices(device_from_secret(SECRET), []), _meshagent())
    reported = _meshagent({"endpoint": "http://10.0.0.5:8081"})
    assert "endpoint" not in identity_changes(reported, down, _conditions(down), CONFIG)


def test_without_a_tailnet_proxy_no_magicdns_endpoint_is_written() -> None:
    config = OperatorConfig(tailscale_tailnet_domain="tailnet.test", tailnet_proxy=None)
    up = _observe(FakeDevices(device_from_secret(SECRET), [_pod("w-1")]), _meshagent())
    changes = identity_changes(_meshagent(), up, _conditions(up), config)
    assert changes["tailscale"]["dnsName"] == FQDN and "endpoint" not in changes
