"""The node's network: a bridge the harness owns, routes, netfilter rules and sysctls.

Pods live on `agentmesh0`, a bridge created before any pod with the harness's own address
(HOST_ADDRESS): the apiserver, the cluster DNS and host processes that pods must reach
(the operator in process mode) listen there, never on the machine's uplink address.

Nothing in a pod may send a packet off the machine:
- pods get routes for the pod and Service ranges only (the CNI config gives no default
  route) and no masquerade (`ipMasq: false`);
- the harness's chains in the `mangle` table — evaluated before any `filter` or `nat`
  rule, so no ACCEPT another component adds (kube-proxy's KUBE-FORWARD) can come first —
  drop whatever is forwarded from the bridge or the pod range toward any other interface,
  and drop, before the `nat` table can rewrite it, any packet leaving by another interface
  that comes from the pod range or carries kube-proxy's masquerade mark.

Every sysctl the node's components change is read before the node starts (the snapshot is
kept on disk with the node's record) and written back on `dev down`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "agentmesh0"
HOST_ADDRESS = "10.244.0.1"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
MASQUERADE_MARK = "0x4000/0x4000"  # kube-proxy's default masqueradeBit 14
FORWARD_CHAIN = "AGENT-MESH-FORWARD"
POSTROUTING_CHAIN = "AGENT-MESH-POSTROUTING"
OWN_CHAINS = (FORWARD_CHAIN, POSTROUTING_CHAIN)
# Chains the node's Kubernetes components create (kube-proxy's, the kubelet's canaries).
KUBE_CHAIN_PREFIX = "KUBE-"
TABLES = ("filter", "nat", "mangle", "raw")

# What the kubelet, kube-proxy and the CNI bridge plugin may change (and the harness sets).
SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
)
# Set by the harness before the node starts: routing between the bridge and the host's
# local addresses (Service DNAT to the apiserver and the DNS), and bridged pod-to-pod
# traffic through netfilter (kube-proxy's ClusterIP replies depend on it).
NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
}


class NetworkError(RuntimeError):
    """The node's network could not be set up or removed; the message says what failed."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if check and proc.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout}")
    return proc


# -- sysctls ---------------------------------------------------------------------------------


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls(keys: Iterable[str] = SYSCTLS) -> dict[str, str]:
    """The current value of every key this kernel has (missing keys are left out)."""
    values: dict[str, str] = {}
    for key in keys:
        try:
            values[key] = _sysctl_path(key).read_text().strip()
        except OSError:
            continue
    return values


def write_sysctl(key: str, value: str) -> None:
    try:
        _sysctl_path(key).write_text(f"{value}\n")
    except OSError as exc:
        raise NetworkError(f"cannot set {key}={value}: {exc.strerror}") from exc


def restore_sysctls(snapshot: dict[str, str]) -> list[str]:
    """Write back every value of `snapshot` that differs now; returns what it changed."""
    changed = []
    for key, value in snapshot.items():
        current = read_sysctls((key,)).get(key)
        if current is not None and current != value:
            write_sysctl(key, value)
            changed.append(f"{key}={value}")
    return changed


# -- interfaces and routes -------------------------------------------------------------------


def link_exists(name: str = BRIDGE) -> bool:
    return _run("ip", "link", "show", "dev", name, check=False).returncode == 0


def conflicting_routes() -> list[str]:
    """Routes of the host (not ours) that overlap the pod or Service range."""
    ours = [ipaddress.ip_network(POD_CIDR), ipaddress.ip_network(SERVICE_CIDR)]
    conflicts = []
    for line in _run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        fields = line.split()
        if not fields or f"dev {BRIDGE}" in line:
            continue
        destination = fields[0]
        if destination in ("default", "local", "broadcast", "multicast", "unreachable"):
            if destination != "local" or len(fields) < 2:
                continue
            destination = fields[1]
        try:
            network = ipaddress.ip_network(destination, strict=False)
        except ValueError:
            continue
        if network.prefixlen == 0:
            continue
        if any(network.overlaps(o) for o in ours) and " lo " not in f" {line} ":
            conflicts.append(line)
    return conflicts


def create_bridge() -> None:
    """The bridge with the harness's address, up, and a host route to the Service range
    through it (host processes reach ClusterIPs from HOST_ADDRESS, never the uplink)."""
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    _run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", HOST_ADDRESS)


def delete_bridge() -> None:
    if link_exists(BRIDGE):
        _run("ip", "link", "delete", BRIDGE)


def veths_on_bridge() -> list[str]:
    out = _run("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


# -- netfilter -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One `iptables -S` line of a table."""

    table: str
    chain: str
    spec: str

    @property
    def target(self) -> str:
        match = re.search(r"(?:^|\s)-j\s+(\S+)", self.spec)
        return match.group(1) if match else ""


def _iptables(family: int) -> str:
    return "iptables" if family == 4 else "ip6tables"


def rules(table: str, family: int = 4) -> list[Rule]:
    """Every appended rule of `table` (`-A CHAIN …` lines of `iptables -S`)."""
    out = _run(_iptables(family), "-w", "-t", table, "-S", check=False).stdout
    found = []
    for line in out.splitlines():
        if line.startswith("-A "):
            chain, _, spec = line[3:].partition(" ")
            found.append(Rule(table, chain, spec))
    return found


def chains(table: str, family: int = 4) -> list[str]:
    """User-defined chains of `table`."""
    out = _run(_iptables(family), "-w", "-t", table, "-S", check=False).stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("-N ")]


_FORWARD_RULES = (
    f"-i {BRIDGE} ! -o {BRIDGE} -j DROP",
    f"-s {POD_CIDR} ! -o {BRIDGE} -j DROP",
)
_POSTROUTING_RULES = (
    f"-o {BRIDGE} -j RETURN",
    "-o lo -j RETURN",
    f"-s {POD_CIDR} -j DROP",
    f"-m mark --mark {MASQUERADE_MARK} -j DROP",
)


def install_rules() -> None:
    """The harness's chains in `mangle`, jumped to first from FORWARD and POSTROUTING."""
    for family, forward, postrouting in (
        (4, _FORWARD_RULES, _POSTROUTING_RULES),
        (6, (f"-i {BRIDGE} ! -o {BRIDGE} -j DROP",), ()),
    ):
        tool = _iptables(family)
        for chain, specs, hook in (
            (FORWARD_CHAIN, forward, "FORWARD"),
            (POSTROUTING_CHAIN, postrouting, "POSTROUTING"),
        ):
            if not specs:
                continue
            _run(tool, "-w", "-t", "mangle", "-N", chain)
            for spec in specs:
                _run(tool, "-w", "-t", "mangle", "-A", chain, *shlex.split(spec))
            _run(tool, "-w", "-t", "mangle", "-I", hook, "1", "-j", chain)


def remove_rules(keep: Iterable[str] = ()) -> None:
    """Delete the harness's chains and every KUBE-* chain not in `keep` (those that existed
    before the node started), with the rules that jump to them."""
    kept = set(keep)
    for family in (4, 6):
        tool = _iptables(family)
        for table in TABLES:
            doomed = [
                c
                for c in chains(table, family)
                if c in OWN_CHAINS
                or (c.startswith(KUBE_CHAIN_PREFIX) and f"{family}:{table}/{c}" not in kept)
            ]
            for chain in doomed:  # unhook and flush all first: chains may jump to each other
                for rule in rules(table, family):
                    if rule.target == chain:
                        unhook = [
                            tool,
                            "-w",
                            "-t",
                            table,
                            "-D",
                            rule.chain,
                            *shlex.split(rule.spec),
                        ]
                        _run(*unhook, check=False)
                _run(tool, "-w", "-t", table, "-F", chain, check=False)
            for chain in doomed:
                _run(tool, "-w", "-t", table, "-X", chain, check=False)


def kube_chains() -> list[str]:
    """`family:table/chain` of every KUBE-* chain (to tell ours from another node's)."""
    return [
        f"{family}:{table}/{c}"
        for family in (4, 6)
        for table in TABLES
        for c in chains(table, family)
        if c.startswith(KUBE_CHAIN_PREFIX)
    ]


def own_chains_present() -> list[str]:
    return [
        f"{family}:mangle/{c}"
        for family in (4, 6)
        for c in chains("mangle", family)
        if c in OWN_CHAINS
    ]
