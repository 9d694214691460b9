"""A managed agent's tailnet identity, judged: the device from its state Secret, the
sidecar from its container status (not from the Secret, which outlives the sidecar), the
MagicDNS endpoint only while connected and only under the expected name."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from agent_mesh.api.meshagent import agent_record
from agent_mesh.api.meshagent_status import tailnet_conditions
from agent_mesh.config import OperatorConfig
from agent_mesh.controllers.tailnet import identity_changes, with_new_ips
from agent_mesh.domain.discovery import endpoint_class, resolve_endpoint
from agent_mesh.domain.egress import EgressClass
from agent_mesh.tailscale.device import Device, SidecarState, device_from_secret, sidecar_state
from agent_mesh.workloads.objects import build
from agent_mesh.workloads.tailnet import observe, tailnet_endpoint, tailscale_status

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
FQDN = "agent-mesh-prod-summ.tailnet.test"
IPS = ["100.64.0.7", "fd7a:115c:a1e0::7"]


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _secret(**over: str) -> dict[str, str]:
    data = {
        "device_id": _b64("nodeid-7"),
        "device_fqdn": _b64(f"{FQDN}."),
        "device_ips": _b64(json.dumps(IPS)),
        "_machinekey": _b64("private"),
    }
    data.update(over)
    return data


def _pod(**container: Any) -> dict[str, Any]:
    status = {"name": "tailscale", "restartCount": 0, **container}
    agent = {"name": "agent", "ready": True, "state": {"running": {}}}
    return {"metadata": {"name": "summ-0"}, "status": {"containerStatuses": [agent, status]}}


RUNNING_READY = _pod(ready=True, state={"running": {"startedAt": "2026-01-01T00:00:00Z"}})


def test_device_is_read_from_what_containerboot_writes() -> None:
    device = device_from_secret(_secret())
    assert device == Device("nodeid-7", FQDN, tuple(IPS))
    assert device is not None and device.hostname == "agent-mesh-prod-summ"
    assert tailscale_status(device) == {
        "hostname": "agent-mesh-prod-summ",
        "dnsName": FQDN,
        "ips": IPS,
        "deviceId": "nodeid-7",
    }


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"device_id": _b64("n"), "device_fqdn": _b64(f"{FQDN}.")},  # no IPs yet
        _secret(device_ips="not base64!"),
        _secret(device_ips=_b64("{not json")),
        _secret(device_ips=_b64('"100.64.0.7"')),
        _secret(device_id=_b64("")),
    ],
)
def test_no_device_until_all_three_keys_are_readable(data: dict[str, str] | None) -> None:
    assert device_from_secret(data) is None


@pytest.mark.parametrize(
    ("pod", "state", "says"),
    [
        (None, SidecarState.NO_POD, "does not exist"),
        ({"metadata": {"name": "summ-0"}, "status": {}}, SidecarState.NOT_RUNNING, "no status"),
        (
            _pod(ready=False, restartCount=3, state={"waiting": {"reason": "CrashLoopBackOff"}}),
            SidecarState.NOT_RUNNING,
            "CrashLoopBackOff; 3 restarts",
        ),
        (
            _pod(ready=False, state={"terminated": {"reason": "Error", "exitCode": 1}}),
            SidecarState.NOT_RUNNING,
            "Error, exit code 1",
        ),
        (_pod(ready=False, state={"running": {}}), SidecarState.NOT_READY, "not ready"),
        (RUNNING_READY, SidecarState.READY, "running and ready"),
    ],
)
def test_sidecar_state_comes_from_its_own_container_status(
    pod: dict[str, Any] | None, state: SidecarState, says: str
) -> None:
    got, message = sidecar_state(pod)
    assert got is state
    assert says in message


def test_connected_only_with_a_ready_sidecar_and_the_expected_name() -> None:
    device = device_from_secret(_secret())
    seen = observe(FQDN, device, sidecar_state(RUNNING_READY))
    assert (seen.connected, seen.reason, seen.device) == (True, "TailnetDeviceReady", device)
    assert FQDN in seen.message and "100.64.0.7" in seen.message


def test_dead_sidecar_is_not_connected_though_the_secret_keeps_its_device() -> None:
    dead = _pod(ready=False, state={"terminated": {"reason": "Error", "exitCode": 137}})
    seen = observe(FQDN, device_from_secret(_secret()), sidecar_state(dead))
    assert (seen.connected, seen.reason) == (False, "SidecarNotRunning")
    assert "exit code 137" in seen.message and "through its Service" in seen.message
    assert seen.device is not None  # the identity stays in status; only the verdict changes


@pytest.mark.parametrize(
    ("device", "pod", "reason"),
    [
        (None, None, "AgentPodMissing"),
        (None, _pod(ready=False, state={"running": {}}), "SidecarNotReady"),
        (None, RUNNING_READY, "WaitingForTailnetDevice"),
    ],
)
def test_not_connected_reasons(device: Device | None, pod: Any, reason: str) -> None:
    seen = observe(FQDN, device, sidecar_state(pod))
    assert (seen.connected, seen.reason) == (False, reason)


def test_a_renamed_device_is_never_dialled() -> None:
    renamed = device_from_secret(_secret(device_fqdn=_b64("agent-mesh-prod-summ-1.tailnet.test.")))
    seen = observe(FQDN, renamed, sidecar_state(RUNNING_READY))
    assert (seen.connected, seen.reason, seen.device) == (False, "TailnetNameMismatch", None)
    assert "agent-mesh-prod-summ-1.tailnet.test" in seen.message


def _conditions(seen: Any, *, generation: int) -> list[dict[str, Any]]:
    """The conditions a managed tailscale agent gets from what the operator observed."""
    return tailnet_conditions(
        [],
        tailscale=True,
        managed=True,
        configured=True,
        problem=None,
        generation=generation,
        now=NOW,
        observed=seen.condition,
    )


def test_observed_verdict_becomes_the_condition() -> None:
    seen = observe(FQDN, device_from_secret(_secret()), sidecar_state(RUNNING_READY))
    (condition,) = _conditions(seen, generation=2)
    assert (condition["status"], condition["reason"]) == ("True", "TailnetDeviceReady")


def _meshagent(
    connected: str | None, dns_name: str | None = FQDN, endpoint: str | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {"endpoint": endpoint or f"http://{FQDN}:8081"}
    if dns_name:
        status["tailscale"] = {"dnsName": dns_name, "ips": IPS}
    if connected:
        status["conditions"] = [
            {
                "type": "TailnetConnected",
                "status": connected,
                "reason": "x",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ]
    return {
        "metadata": {"name": "summ", "namespace": "prod", "uid": "u"},
        "spec": {
            "agentType": "worker",
            "network": "tailscale",
            "port": 8081,
            "workload": {"spec": {"containers": [{"name": "agent", "image": "a:1"}]}},
        },
        "status": status,
    }


def test_endpoint_is_the_magicdns_url_while_connected_else_the_service() -> None:
    connected = agent_record(_meshagent("True"))
    assert resolve_endpoint(connected, None) == f"http://{FQDN}:8081"
    assert tailnet_endpoint(f"{FQDN}.", 8081) == f"http://{FQDN}:8081"
    assert endpoint_class(connected, None) is EgressClass.DERIVED
    service = "http://summ.prod.svc:8081"
    assert resolve_endpoint(agent_record(_meshagent("False")), None) == service
    assert resolve_endpoint(agent_record(_meshagent(None)), None) == service
    assert resolve_endpoint(agent_record(_meshagent("True", dns_name=None)), None) == service
    # the operator wrote the Service as the endpoint (it cannot dial the tailnet)
    assert resolve_endpoint(agent_record(_meshagent("True", endpoint=service)), None) == service


@pytest.mark.parametrize(
    ("proxy", "endpoint"),
    [("http://127.0.0.1:1055", f"http://{FQDN}:8081"), (None, "http://summ.prod.svc:8081")],
)
def test_status_endpoint_is_the_tailnet_url_only_when_the_operator_can_dial_it(
    proxy: str | None, endpoint: str
) -> None:
    config = OperatorConfig(tailscale_tailnet_domain="tailnet.test", tailnet_proxy=proxy)
    seen = observe(FQDN, device_from_secret(_secret()), sidecar_state(RUNNING_READY))
    body = _meshagent(None, dns_name=None, endpoint="http://summ.prod.svc:8081")
    conditions = _conditions(seen, generation=1)
    changes = identity_changes(body, seen, conditions, config)
    assert changes["tailscale"]["dnsName"] == FQDN
    assert changes.get("endpoint", body["status"]["endpoint"]) == endpoint
    dead = observe(FQDN, device_from_secret(_secret()), sidecar_state(None))
    connected_before = {**body, "status": {**body["status"], "endpoint": f"http://{FQDN}:8081"}}
    back = identity_changes(connected_before, dead, [], config)
    assert back["endpoint"] == "http://summ.prod.svc:8081"


def test_children_follow_new_tailnet_ips_and_only_new_ones() -> None:
    """What the serve configuration is built from when the status is about to change: the
    MeshAgent with its new IPs (an entry per IP); nothing when the IPs stay."""
    config = OperatorConfig(tailscale_tailnet_domain="tailnet.test")
    seen = observe(FQDN, device_from_secret(_secret()), sidecar_state(RUNNING_READY))
    first = _meshagent(None, dns_name=None)
    changes = identity_changes(first, seen, _conditions(seen, generation=1), config)
    following = with_new_ips(first, changes)
    assert following is not None
    objects = build(following, default_network="direct", tailscale=config.sidecar_settings())
    assert objects.serve_config is not None
    served = json.loads(objects.serve_config["data"]["serve.json"])["Web"]
    assert f"{IPS[0]}.tailnet.test:8081" in served and f"[{IPS[1]}.tailnet.test]:8081" in served
    assert first["status"].get("tailscale") is None  # the MeshAgent given is left as it was
    unchanged = _meshagent("True")
    assert with_new_ips(unchanged, identity_changes(unchanged, seen, [], config)) is None
    moved = {**changes["tailscale"], "ips": ["100.64.0.8"]}
    assert with_new_ips(unchanged, {"tailscale": moved}) == {
        **unchanged,
        "status": {**unchanged["status"], "tailscale": moved},
    }
