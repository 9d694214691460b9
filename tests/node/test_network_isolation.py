"""No pod can send a packet off the machine — proven without sending one: a pod's routes,
the harness's drop rules, every SNAT/MASQUERADE rule of the host, and the cluster DNS."""

from __future__ import annotations

import json
import shlex
import subprocess

from tests.node.conftest import NodeCluster, exec_python, python_pod, wait_pod

BRIDGE = "agentmesh0"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
MARK = "0x4000/0x4000"


def _rules(table: str, chain: str | None = None, tool: str = "iptables") -> list[list[str]]:
    """`-A CHAIN …` lines of `table`, split like a shell would."""
    out = subprocess.run(
        [tool, "-w", "-t", table, "-S", *([chain] if chain else [])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [shlex.split(line)[1:] for line in out.splitlines() if line.startswith("-A ")]


def _target(rule: list[str]) -> str:
    return rule[rule.index("-j") + 1] if "-j" in rule else ""


def _pod_routes(cluster: NodeCluster, namespace: str) -> dict[str, list[str]]:
    python_pod(cluster, namespace, "probe", "import time; time.sleep(3600)", restart="Always")
    wait_pod(cluster, namespace, "probe")
    script = """
import ipaddress, json, socket, struct
def v4(hex_le):
    return str(ipaddress.IPv4Address(struct.unpack("<I", bytes.fromhex(hex_le))[0]))
routes = []
for line in open("/proc/net/route").read().splitlines()[1:]:
    iface, dest, gateway, flags, _, _, _, mask = line.split()[:8]
    routes.append(f"{v4(dest)}/{ipaddress.IPv4Network('0.0.0.0/' + v4(mask)).prefixlen}")
v6 = []
for line in open("/proc/net/ipv6_route").read().splitlines():
    dest, plen, *_rest, iface = line.split()
    if iface != "lo":
        v6.append(f"{ipaddress.IPv6Address(bytes.fromhex(dest))}/{int(plen, 16)}")
try:
    socket.getaddrinfo("example.com", 443)
    outside = "resolved"
except socket.gaierror as error:
    outside = f"failed: {error}"
nameservers = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")]
print(json.dumps({"v4": routes, "v6": v6, "outside": [outside], "nameservers": nameservers}))
"""
    executed = exec_python(cluster, namespace, "probe", script)
    assert executed.returncode == 0, executed.stderr
    return dict(json.loads(executed.stdout))


def test_no_pod_can_send_a_packet_off_the_machine(
    node_cluster: NodeCluster, node_namespace: str
) -> None:
    seen = _pod_routes(node_cluster, node_namespace)
    # 1. A pod's routes cover the pod and Service ranges only: no default route, v4 or v6.
    assert sorted(seen["v4"]) == sorted([POD_CIDR, SERVICE_CIDR]), seen["v4"]
    assert not [r for r in seen["v6"] if r.endswith("/0")], seen["v6"]
    # 2. A name outside the cluster fails inside the pod, at the cluster DNS, which forwards
    #    nothing upstream (it is the pod's only nameserver).
    assert seen["nameservers"] == ["10.96.0.10"]
    assert seen["outside"][0].startswith("failed"), seen["outside"]

    # 3. The harness's FORWARD rules come first (mangle runs before any filter ACCEPT) and
    #    drop whatever is forwarded from the bridge or the pod range to another interface.
    for tool in ("iptables", "ip6tables"):
        forward = _rules("mangle", "FORWARD", tool)
        assert forward and forward[0] == ["FORWARD", "-j", "AGENT-MESH-FORWARD"], (tool, forward)
        own = _rules("mangle", "AGENT-MESH-FORWARD", tool)
        assert ["AGENT-MESH-FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"] in own
    own_v4 = _rules("mangle", "AGENT-MESH-FORWARD")
    assert ["AGENT-MESH-FORWARD", "-s", POD_CIDR, "!", "-o", BRIDGE, "-j", "DROP"] in own_v4

    # 4. No SNAT or MASQUERADE applies to a packet leaving by any interface but the bridge.
    #    The harness's mangle POSTROUTING chain runs before nat and drops, on every other
    #    interface (loopback aside: it never leaves the machine), packets from the pod range
    #    and packets carrying kube-proxy's masquerade mark...
    postrouting = _rules("mangle", "POSTROUTING")
    assert postrouting[0] == ["POSTROUTING", "-j", "AGENT-MESH-POSTROUTING"], postrouting
    assert _rules("mangle", "AGENT-MESH-POSTROUTING") == [
        ["AGENT-MESH-POSTROUTING", "-o", BRIDGE, "-j", "RETURN"],
        ["AGENT-MESH-POSTROUTING", "-o", "lo", "-j", "RETURN"],
        ["AGENT-MESH-POSTROUTING", "-s", POD_CIDR, "-j", "DROP"],
        ["AGENT-MESH-POSTROUTING", "-m", "mark", "--mark", MARK, "-j", "DROP"],
    ]
    # ... and every address-rewriting rule of the nat table either names the bridge as its
    # way out or is kube-proxy's, which rewrites only packets carrying that mark.
    nat = _rules("nat")
    kube_postrouting = [r for r in nat if r[0] == "KUBE-POSTROUTING"]
    for rule in nat:
        if _target(rule) not in ("MASQUERADE", "SNAT"):
            continue
        out = rule.index("-o") if "-o" in rule else None
        if out is not None and rule[out + 1] == BRIDGE and rule[out - 1] != "!":
            continue
        assert rule[0] == "KUBE-POSTROUTING", f"a nat rule rewrites other traffic: {rule}"
        assert kube_postrouting[0] == [
            "KUBE-POSTROUTING",
            "-m",
            "mark",
            "!",
            "--mark",
            MARK,
            "-j",
            "RETURN",
        ], kube_postrouting
    hooks = [r for r in nat if r[0] == "POSTROUTING" and _target(r) == "KUBE-POSTROUTING"]
    assert hooks, "kube-proxy's masquerade chain is not where this test expects it"
