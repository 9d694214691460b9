"""A tailnet on this machine, offline: headscale and userspace tailscaled nodes.

headscale listens on 127.0.0.1, or, for pods on the local node, on the node's bridge
address (`address=devcluster.network.HOST_ADDRESS`): the one host address pods reach, and
one that is on this machine only. Its embedded DERP and STUN listen there too, and the
DERP map it hands out names that address: a pod's sidecar reaches the control server,
DERP and the host's nodes over the bridge, and nothing else.

headscale keeps its state in sqlite and serves its embedded DERP only: no public DERP map
(`derp.urls`/`paths` empty, no auto-update), no update check, no log upload. Every
tailscaled runs in userspace mode (no privilege, no TUN) with log upload, port mapping
and UPnP off, DERP over plain HTTP (headscale's port is HTTP here), and the guard that
panics if Tailscale's own control servers are ever contacted — the same knobs as the
agents' sidecars (`agent_mesh.tailscale.sidecar.environment`).

tailscaled also probes for captive portals when its connectivity looks impaired (no DERP
connection yet), by name at Tailscale's own hosts; in v1.86.5 only a control-server node
attribute turns that off, and headscale sends none. So each tailscaled runs in a mount
namespace of its own whose /etc/resolv.conf names 127.0.0.1 (where nothing answers): the
probe's lookups fail on loopback and nothing leaves the machine. That needs root.

On the host network namespace the nodes find each other through the machine's interface
addresses (learnt from the embedded STUN server). A namespace holding only `lo` counts as
"network down" for tailscaled (it ignores loopback when deciding whether any interface is
up), so do not move a node into one without a second address.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agent_mesh.devcluster.binaries import TailnetBinaries
from agent_mesh.devcluster.network import POD_CIDR, SERVICE_CIDR
from agent_mesh.devcluster.ports import free_port
from agent_mesh.devcluster.processes import spawn, terminate

LOOPBACK: Final = "127.0.0.1"
DEFAULT_DOMAIN: Final = "tailnet.test"
USER: Final = "agents"

TAILSCALED_ENV: Final[dict[str, str]] = {
    "TS_NO_LOGS_NO_SUPPORT": "true",
    "TS_DISABLE_PORTMAPPER": "1",
    "TS_DISABLE_UPNP": "true",
    "TS_DEBUG_USE_DERP_HTTP": "1",
    "TS_PANIC_IF_HIT_MAIN_CONTROL": "1",
}
"""Environment of every tailscaled this harness starts."""


class TailnetError(RuntimeError):
    """A tailnet process did not start or answer in time; the message names it and its log."""


def headscale_config(
    *,
    workdir: Path,
    port: int,
    metrics_port: int,
    grpc_port: int,
    stun_port: int,
    domain: str,
    address: str = LOOPBACK,
) -> dict[str, Any]:
    """headscale's configuration: the control server, DERP and STUN on `address` (a
    local one: loopback, or the node's bridge), metrics and gRPC on loopback, nothing
    public."""
    return {
        "server_url": f"http://{address}:{port}",
        "listen_addr": f"{address}:{port}",
        "metrics_listen_addr": f"{LOOPBACK}:{metrics_port}",
        "grpc_listen_addr": f"{LOOPBACK}:{grpc_port}",
        "grpc_allow_insecure": False,
        "noise": {"private_key_path": str(workdir / "noise_private.key")},
        "prefixes": {
            "v4": "100.64.0.0/10",
            "v6": "fd7a:115c:a1e0::/48",
            "allocation": "sequential",
        },
        "derp": {
            "server": {
                "enabled": True,
                "region_id": 999,
                "region_code": "local",
                "region_name": "agent-mesh local DERP",
                "stun_listen_addr": f"{address}:{stun_port}",
                "private_key_path": str(workdir / "derp_server_private.key"),
                "automatically_add_embedded_derp_region": True,
                "ipv4": address,
            },
            "urls": [],
            "paths": [],
            "auto_update_enabled": False,
        },
        "disable_check_updates": True,
        "ephemeral_node_inactivity_timeout": "30m",
        "database": {"type": "sqlite", "sqlite": {"path": str(workdir / "db.sqlite")}},
        "log": {"level": "info", "format": "text"},
        "policy": {"mode": "file", "path": ""},  # no policy: every node reaches every node
        "dns": {
            "magic_dns": True,
            "base_domain": domain,
            "override_local_dns": False,
            "nameservers": {"global": [], "split": {}},
            "search_domains": [],
            "extra_records": [],
        },
        "unix_socket": str(workdir / "headscale.sock"),
        "unix_socket_permission": "0770",
        "logtail": {"enabled": False},
        "randomize_client_port": False,
    }


@dataclass
class TailnetNode:
    """One userspace tailscaled and the `tailscale` CLI pointed at its socket."""

    hostname: str
    directory: Path
    tailscale: Path
    process: subprocess.Popen[bytes]
    http_proxy: str | None
    """`http://127.0.0.1:<port>`: an outbound HTTP proxy that resolves MagicDNS names."""
    socket: Path
    """The LocalAPI socket, in a short directory of its own (a socket path has at most
    107 bytes, and test directories are long)."""
    traced: bool = False
    """Runs under strace (the process is strace; tailscaled is its child)."""

    @property
    def log(self) -> Path:
        return self.directory / "tailscaled.log"

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        """Run `tailscale --socket=<this node> <args>`; TailnetError with its output on failure."""
        done = subprocess.run(
            [str(self.tailscale), f"--socket={self.socket}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise TailnetError(
                f"tailscale {' '.join(args[:2])} on {self.hostname} failed "
                f"({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
            )
        return done.stdout

    def status(self) -> dict[str, Any]:
        """`tailscale status --json`."""
        result: dict[str, Any] = json.loads(self.cli("status", "--json"))
        return result

    @property
    def fqdn(self) -> str:
        """The node's MagicDNS name, without the trailing dot."""
        return str(self.status()["Self"]["DNSName"]).rstrip(".")

    @property
    def ips(self) -> list[str]:
        return [str(ip) for ip in self.status()["Self"]["TailscaleIPs"]]

    def serve_config(self, config: dict[str, Any]) -> None:
        """Apply a serve configuration as containerboot does (`tailscale serve set-raw`)."""
        self.cli("serve", "set-raw", stdin=json.dumps(config))

    def stop(self) -> None:
        _stop(self.process, self.traced)
        shutil.rmtree(self.socket.parent, ignore_errors=True)


@dataclass
class LocalTailnet:
    """headscale with a user and a reusable pre-auth key, and its nodes."""

    binaries: TailnetBinaries
    directory: Path
    domain: str = DEFAULT_DOMAIN
    address: str = LOOPBACK
    """Where headscale (its control server, DERP and STUN) listens: 127.0.0.1, or the
    node's bridge address for pods (it must exist first: the node's up)."""
    url: str = ""
    auth_key: str = ""
    trace: bool = False
    """Run every process under strace, recording where it connects and sends, and whom
    it accepts connections from (`destinations()`, `accepted()`): the proof that nothing
    leaves the machine, and of the path a call took."""
    nodes: list[TailnetNode] = field(default_factory=list)
    _headscale: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.directory / "headscale.json"

    @property
    def log(self) -> Path:
        return self.directory / "headscale.log"

    def start(self, timeout: float = 30) -> LocalTailnet:
        """Start headscale, wait until it answers, make the user and its pre-auth key."""
        self.directory.mkdir(parents=True, exist_ok=True)
        port = free_port(self.address)
        config = headscale_config(
            workdir=self.directory,
            port=port,
            metrics_port=free_port(LOOPBACK),
            grpc_port=free_port(LOOPBACK),
            stun_port=free_port(self.address),
            domain=self.domain,
            address=self.address,
        )
        self.config_file.write_text(json.dumps(config, indent=2))
        self.url = str(config["server_url"])
        self._headscale = spawn(
            [
                *self._tracer("headscale"),
                str(self.binaries.headscale),
                "-c",
                str(self.config_file),
                "serve",
            ],
            self.log,
            detached=False,
        )
        _wait(
            f"headscale at {self.url} (log {self.log})",
            lambda: self._check_running() and _answers(f"{self.url}/health"),
            timeout,
        )
        self.headscale("users", "create", USER)
        users = json.loads(self.headscale("users", "list", "--output", "json"))
        user_id = next(str(u["id"]) for u in users if u["name"] == USER)
        key = json.loads(
            self.headscale(
                "preauthkeys",
                "create",
                "--user",
                user_id,
                "--reusable",
                "--expiration",
                "24h",
                "--output",
                "json",
            )
        )
        self.auth_key = str(key["key"])
        return self

    def headscale(self, *args: str) -> str:
        """Run the headscale CLI against this server (over its unix socket)."""
        done = subprocess.run(
            [str(self.binaries.headscale), "-c", str(self.config_file), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise TailnetError(f"headscale {' '.join(args[:2])} failed: {done.stderr.strip()}")
        return done.stdout

    def join(self, hostname: str, *, http_proxy: bool = False, timeout: float = 60) -> TailnetNode:
        """A new userspace tailscaled, logged in as `hostname` and Running."""
        directory = Path(tempfile.mkdtemp(prefix=f"{hostname[:20]}-", dir=self.directory))
        proxy = f"{LOOPBACK}:{free_port(LOOPBACK)}" if http_proxy else None
        socket = _socket_path()
        argv = [
            str(self.binaries.tailscaled),
            "--tun=userspace-networking",
            f"--statedir={directory}",
            f"--socket={socket}",
            "--port=0",
            "--no-logs-no-support",
        ]
        if proxy:
            argv.append(f"--outbound-http-proxy-listen={proxy}")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(directory),
            "TS_LOGS_DIR": str(directory),  # else it writes /var/lib/tailscale
            **TAILSCALED_ENV,
        }
        resolv = directory / "resolv.conf"
        resolv.write_text(f"nameserver {LOOPBACK}\n")
        argv = [*local_resolver(resolv), *self._tracer(directory.name), *argv]
        node = self._start(
            f"tailscaled {hostname}",
            argv,
            env,
            hostname=hostname,
            directory=directory,
            socket=socket,
            http_proxy=f"http://{proxy}" if proxy else None,
            timeout=timeout,
        )
        node.cli(
            "up",
            f"--login-server={self.url}",
            f"--authkey={self.auth_key}",
            f"--hostname={hostname}",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )
        return node

    def _tracer(self, name: str) -> list[str]:
        if not self.trace:
            return []
        syscalls = "trace=connect,sendto,sendmsg,sendmmsg,accept,accept4"
        output = self.directory / f"{name}.strace"
        return ["strace", "-f", "-qq", "-e", syscalls, "-o", str(output)]

    def accepted(self, node: TailnetNode) -> int:
        """With `trace`: how many TCP connections `node`'s tailscaled has accepted from
        loopback (its outbound HTTP proxy's callers: its LocalAPI is a unix socket)."""
        trace = self.directory / f"{node.directory.name}.strace"
        text = trace.read_text(errors="replace") if trace.exists() else ""
        return len(_ACCEPTED.findall(text))

    def destinations(self) -> dict[str, set[str]]:
        """With `trace`: every IP address each process connected or sent to or accepted
        a connection from, by process (`headscale`, or a node's directory name)."""
        return {
            path.name.removesuffix(".strace"): traced_addresses(path.read_text(errors="replace"))
            for path in sorted(self.directory.glob("*.strace"))
        }

    def containerboot(
        self, name: str, env: dict[str, str], service_account: Path, *, timeout: float = 30
    ) -> TailnetNode:
        """Tailscale's containerboot as a pod's sidecar would run it, as a process: the
        Kubernetes mode reads the pod's ServiceAccount (`token`, `ca.crt`, `namespace`)
        from the path tailscaled's kube state store hard-codes, so `service_account` is
        mounted there in the process's own mount namespace (over a private /run). `env`
        is the container's environment with its references resolved (the auth key, the
        pod's name); PATH finds tailscaled and tailscale, and the socket goes to a
        directory of its own."""
        directory = Path(tempfile.mkdtemp(prefix=f"{name[:20]}-", dir=self.directory))
        resolv = directory / "resolv.conf"
        resolv.write_text(f"nameserver {LOOPBACK}\n")
        socket = _socket_path()
        full_env = {
            **env,
            "PATH": f"{self.binaries.tailscale_dir}:{os.environ.get('PATH', '')}",
            "HOME": str(directory),
            "TS_SOCKET": str(socket),
            "TS_LOGS_DIR": str(directory),
        }
        argv = [
            *local_resolver(resolv, service_account=service_account),
            *self._tracer(directory.name),
            str(self.binaries.containerboot),
        ]
        return self._start(
            f"containerboot {name}",
            argv,
            full_env,
            hostname=env.get("TS_HOSTNAME", name),
            directory=directory,
            socket=socket,
            http_proxy=None,
            timeout=timeout,
        )

    def _start(
        self,
        what: str,
        argv: list[str],
        env: dict[str, str],
        *,
        hostname: str,
        directory: Path,
        socket: Path,
        http_proxy: str | None,
        timeout: float,
    ) -> TailnetNode:
        """Spawn `argv` (a tailscaled, or what runs one) as a node of this tailnet; back
        once its process runs and its socket is there."""
        process = spawn(argv, directory / "tailscaled.log", detached=False, env=env)
        node = TailnetNode(
            hostname=hostname,
            directory=directory,
            tailscale=self.binaries.tailscale,
            process=process,
            http_proxy=http_proxy,
            socket=socket,
            traced=self.trace,
        )
        self.nodes.append(node)
        _wait(
            f"{what} (log {node.log})",
            lambda: _running(process, node.log) and node.socket.exists(),
            timeout,
        )
        return node

    def beyond_this_machine(self) -> dict[str, list[str]]:
        """With `trace`: per process, the addresses it connected or sent to that are
        neither loopback, nor one of this machine's interface addresses, nor in the local
        node's pod and Service ranges (a node brought up or down while the tailnet ran
        changes the interfaces, not what is on this machine); empty lists: none."""
        own = machine_addresses()
        return {
            process: sorted(a for a in addresses if a not in own and not _on_this_machine(a))
            for process, addresses in self.destinations().items()
        }

    def _check_running(self) -> bool:
        assert self._headscale is not None
        return _running(self._headscale, self.log)

    def stop(self) -> None:
        """Stop every node, then headscale."""
        for node in self.nodes:
            node.stop()
        if self._headscale is not None:
            _stop(self._headscale, self.trace)

    def __enter__(self) -> LocalTailnet:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


_ADDRESS: Final = re.compile(r'inet_addr\("([0-9.]+)"\)|inet_pton\(AF_INET6, "([0-9a-fA-F:.]+)"')


_ACCEPTED: Final = re.compile(r'accept4?\(\d+, \{sa_family=AF_INET, [^}]*inet_addr\("127\.')


def traced_addresses(strace_output: str) -> set[str]:
    """The IPv4 and IPv6 addresses in strace's lines for connect and send calls."""
    return {v4 or v6 for v4, v6 in _ADDRESS.findall(strace_output)}


def _stop(process: subprocess.Popen[bytes], traced: bool) -> None:
    """Stop a process; under strace, stop the traced program (strace's child), then strace,
    which leaves its tracee running if it is stopped first."""
    if traced and process.poll() is None:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                terminate(int(pid), grace=10)
    terminate(process.pid, grace=10, child=process)


SERVICE_ACCOUNT_DIR: Final = "/run/secrets/kubernetes.io/serviceaccount"
"""Where a pod's ServiceAccount is mounted (/var/run is /run)."""


def local_resolver(resolv_conf: Path, *, service_account: Path | None = None) -> list[str]:
    """A command prefix that runs the command in a mount namespace of its own with
    `resolv_conf` as its /etc/resolv.conf and, if given, `service_account` where a pod's
    ServiceAccount is mounted, on a /run of its own (the host's is neither seen nor
    changed). The pid stays the command's: both exec."""
    if os.geteuid() != 0:
        raise TailnetError(
            "the local tailnet needs root: each tailscaled gets a mount namespace whose "
            "/etc/resolv.conf keeps its DNS lookups on loopback"
        )
    script = 'mount --bind "$0" /etc/resolv.conf && '
    arguments = [str(resolv_conf)]
    if service_account is not None:
        script += (
            "mount -t tmpfs -o mode=0755 agent-mesh-run /run && "
            f'mkdir -p {SERVICE_ACCOUNT_DIR} && mount --bind "$1" {SERVICE_ACCOUNT_DIR} && '
            "shift && "
        )
        arguments.append(str(service_account))
    script += 'exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, *arguments]


def machine_addresses() -> set[str]:
    """Every address of this machine's interfaces (loopback, the uplink, the node bridge)."""
    shown = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, check=True)
    return {a["local"] for i in json.loads(shown.stdout) for a in i.get("addr_info", [])}


_NODE_NETWORKS: Final = (ipaddress.ip_network(POD_CIDR), ipaddress.ip_network(SERVICE_CIDR))


def _on_this_machine(address: str) -> bool:
    """Loopback, or the local node's bridge, pods and Services (devcluster.network)."""
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or any(ip in network for network in _NODE_NETWORKS)


def _socket_path() -> Path:
    return Path(tempfile.mkdtemp(prefix="amts-")) / "tailscaled.sock"


def _running(process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise TailnetError(f"the process logging to {log} exited ({process.returncode}):\n{tail}")
    return True


def _answers(url: str) -> bool:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no env proxies
    try:
        with direct.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TailnetError(f"{what} not ready after {timeout:.0f} s")


def cleanup(directory: Path) -> None:
    """Remove a tailnet's directory (state, keys, logs)."""
    shutil.rmtree(directory, ignore_errors=True)
