"""The egress policy, pure: how hosts are read, what each class of URL may reach, which
reported endpoints are used, and the settings that shape it. No address here is ever
dialled (tests/integration/test_egress_connections.py proves the connections)."""

from __future__ import annotations

import ipaddress

import pytest

from agent_mesh.config import OperatorConfig
from agent_mesh.domain.egress import (
    EgressClass,
    EgressPolicy,
    forms,
    parse_ip_host,
    reported_endpoint_refusal,
)
from agent_mesh.domain.errors import EgressRefusedError

CALLER, DECLARED, DERIVED = EgressClass.CALLER, EgressClass.DECLARED, EgressClass.DERIVED
CLUSTER = EgressPolicy.from_settings(
    service_ranges=["10.96.0.0/12"], apiserver=[("192.168.1.10", 6443)]
)


def refusal(policy: EgressPolicy, egress: EgressClass, url: str) -> str | None:
    try:
        policy.check_literal(egress, url, "callbackUrl")
    except EgressRefusedError as error:
        refused = error
    else:
        return None
    assert refused.code == "EgressRefused" and refused.status == 400
    return refused.message


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("http://2852039166/", "169.254.169.254"),
        ("http://0xa9fea9fe/", "169.254.169.254"),
        ("http://0XA9FEA9FE/latest/meta-data", "169.254.169.254"),
        ("http://0251.0376.0251.0376/", "169.254.169.254"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254"),
        ("http://169.254.43518/", "169.254.169.254"),
        ("http://169.254.169.254./", "169.254.169.254"),
        ("http://127.1/", "127.0.0.1"),
        ("http://0/", "0.0.0.0"),
    ],
)
def test_numeric_shorthand_hosts_are_refused_naming_the_address_they_mean(
    url: str, meant: str
) -> None:
    for egress in (CALLER, DECLARED):
        message = refusal(EgressPolicy(allow_loopback=True), egress, url)
        assert message is not None and f"numeric shorthand for {meant}" in message, message
        assert "four decimal octets" in message


@pytest.mark.parametrize(
    ("host", "inside"),
    [
        ("::ffff:169.254.169.254", "169.254.169.254"),  # IPv4-mapped
        ("::ffff:a9fe:a9fe", "169.254.169.254"),
        ("::169.254.169.254", "169.254.169.254"),  # IPv4-compatible
        ("::ffff:0:a9fe:a9fe", "169.254.169.254"),  # IPv4-translated (SIIT)
        ("2002:a9fe:a9fe::1", "169.254.169.254"),  # 6to4
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
    ],
)
def test_ipv6_forms_embedding_an_ipv4_address_are_judged_by_it_too(host: str, inside: str) -> None:
    address = parse_ip_host(host)
    assert address is not None
    assert ipaddress.ip_address(inside) in forms(address)
    message = refusal(EgressPolicy(), CALLER, f"http://[{host}]:8080/")
    assert message is not None and f"(that is {inside})" in message


def test_metadata_addresses_are_refused_in_every_checked_class_whatever_the_allow_list() -> None:
    open_door = EgressPolicy.from_settings(allow=["0.0.0.0/0", "::/0"], allow_loopback=True)
    for url in ("http://169.254.169.254/", "http://[fd00:ec2::254]/", "http://100.100.100.200/"):
        for egress in (CALLER, DECLARED):
            message = refusal(open_door, egress, url)
            assert message is not None and "cloud metadata service" in message, message
        assert refusal(open_door, DERIVED, url) is None


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://10.1.2.3/", "private (RFC 1918)"),
        ("http://172.16.0.1/", "private (RFC 1918)"),
        ("http://192.168.0.10/", "private (RFC 1918)"),
        ("http://100.64.1.1/", "shared (CGNAT, tailnet)"),
        ("http://[fd12:3456::1]/", "unique local (IPv6 ULA)"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://255.255.255.255/", "reserved"),
        ("http://10.96.0.1/", "Kubernetes Service range"),
        ("http://192.168.1.10:6443/", "Kubernetes API server"),
    ],
)
def test_caller_urls_may_not_reach_inside_addresses(url: str, kind: str) -> None:
    message = refusal(CLUSTER, CALLER, url)
    assert message is not None and kind in message, message
    assert "AGENT_MESH_EGRESS_ALLOW" in message  # says how to admit one on purpose


def test_caller_urls_reach_public_addresses_and_names_wait_for_resolution() -> None:
    assert refusal(CLUSTER, CALLER, "https://93.184.216.34/hook") is None
    assert refusal(CLUSTER, CALLER, "https://[2606:4700::1111]/hook") is None
    target = CLUSTER.check_literal(CALLER, "https://hooks.example.com:8443/x")
    assert (target.host, target.port, target.address) == ("hooks.example.com", 8443, None)


def test_declared_endpoints_may_be_on_the_lan_but_not_metadata_services_or_the_cluster() -> None:
    for lan in ("http://10.1.2.3:8080", "http://192.168.1.10:8080", "http://100.101.1.2"):
        assert refusal(CLUSTER, DECLARED, lan) is None, lan
    assert refusal(CLUSTER, DECLARED, "http://[fd12::1]:8080") is None
    for inside, kind in [
        ("http://169.254.169.254/", "cloud metadata service"),
        ("http://169.254.3.4/", "link-local"),
        ("http://10.96.0.10:53/", "Kubernetes Service range"),
        ("http://192.168.1.10:6443/", "Kubernetes API server"),
        ("http://[ff02::1]/", "multicast"),
        ("http://127.0.0.1:8080/", "loopback"),
    ]:
        message = refusal(CLUSTER, DECLARED, inside)
        assert message is not None and kind in message, (inside, message)
        assert message.startswith(f"callbackUrl {inside!r} is refused: ")


def test_loopback_is_reached_only_when_enabled_and_the_api_server_port_never() -> None:
    local = EgressPolicy.from_settings(allow_loopback=True, apiserver=[("127.0.0.1", 6443)])
    for egress in (CALLER, DECLARED):
        assert refusal(local, egress, "http://127.0.0.1:8080/") is None
        assert refusal(local, egress, "http://[::1]:8080/") is None
        message = refusal(local, egress, "http://127.0.0.1:6443/")
        assert message is not None and "Kubernetes API server" in message
        assert refusal(EgressPolicy(), egress, "http://127.0.0.1:8080/") is not None


def test_the_allow_list_admits_an_inside_range_and_the_deny_list_beats_it() -> None:
    policy = EgressPolicy.from_settings(allow=["10.0.0.0/8"], deny=["10.9.0.0/16"])
    assert refusal(policy, CALLER, "http://10.1.2.3/") is None
    assert refusal(policy, CALLER, "http://[::ffff:10.1.2.3]/") is None
    message = refusal(policy, CALLER, "http://10.9.0.1/")
    assert message is not None and "egress deny list" in message
    assert refusal(policy, CALLER, "http://192.168.1.1/") is not None


def test_derived_endpoints_are_not_checked() -> None:
    assert refusal(CLUSTER, DERIVED, "http://10.96.0.10:8080/") is None
    assert refusal(CLUSTER, DERIVED, "http://127.0.0.1:8080/") is None


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "http:///nohost", "file:///etc/passwd", "http://[::1/"]
)
def test_a_url_that_is_not_http_with_a_host_is_refused(url: str) -> None:
    message = refusal(EgressPolicy(), CALLER, url)
    assert message is not None and "callbackUrl" in message


def test_a_reported_endpoint_is_used_only_when_it_is_spec_endpoint_or_the_pods_own_ip() -> None:
    spec = "http://agent.example.com:8080"
    assert reported_endpoint_refusal("http://AGENT.example.com:8080/", spec, None) is None
    assert reported_endpoint_refusal("http://10.1.2.3:8080", None, "10.1.2.3") is None
    assert reported_endpoint_refusal("https://10.1.2.3:9443/", spec, "10.1.2.3") is None
    other = reported_endpoint_refusal("http://169.254.169.254/", spec, "10.1.2.3")
    assert other is not None and "neither the agent's spec.endpoint nor its pod's own IP" in other
    no_pod = reported_endpoint_refusal("http://10.1.2.3:8080", None, None)
    assert no_pod is not None and "not bound to a pod" in no_pod
    by_name = reported_endpoint_refusal("http://pod.example:8080", None, "10.1.2.3")
    assert by_name is not None  # a name could resolve anywhere: the pod's IP only
    shorthand = reported_endpoint_refusal("http://167838211:8080", None, "10.1.2.3")
    assert shorthand is not None and "numeric shorthand for 10.1.2.3" in shorthand


def test_egress_settings_read_comma_separated_cidrs_and_name_a_bad_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_MESH_EGRESS_ALLOW", "10.0.0.0/8, fd00::/8")
    monkeypatch.setenv("AGENT_MESH_EGRESS_SERVICE_CIDRS", "10.96.0.0/12")
    monkeypatch.setenv("AGENT_MESH_EGRESS_ALLOW_LOOPBACK", "true")
    config = OperatorConfig()
    assert config.egress_allow == ["10.0.0.0/8", "fd00::/8"]
    assert config.egress_service_cidrs == ["10.96.0.0/12"]
    assert (
        config.egress_allow_loopback
        and not OperatorConfig(egress_allow_loopback=False).egress_allow_loopback
    )
    monkeypatch.setenv("AGENT_MESH_EGRESS_DENY", "10.0.0.0/8,not-a-range")
    with pytest.raises(ValueError, match="'not-a-range' is not a CIDR"):
        OperatorConfig()
