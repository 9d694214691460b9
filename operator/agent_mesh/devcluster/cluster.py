"""Start and stop etcd + kube-apiserver with TLS, RBAC and an admin kubeconfig.

The apiserver listens on 127.0.0.1, or, when a node runs beside it, on the address the
harness owns on the node's bridge, so pods reach it through the `kubernetes` Service.
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import yaml

from agent_mesh.devcluster import processes
from agent_mesh.devcluster.binaries import Binaries
from agent_mesh.devcluster.ports import check_port_free, free_port
from agent_mesh.pki import certs

LOOPBACK = "127.0.0.1"
CONTEXT = "agent-mesh-dev"
_STATE_FILE = "plane.json"
# A service CIDR is mandatory; only a node's kube-proxy routes it.
_SERVICE_CIDR = "10.96.0.0/24"
_KUBERNETES_SERVICE_IP = "10.96.0.1"
CLUSTER_DOMAIN = "cluster.local"


class DevClusterError(RuntimeError):
    """The local control plane could not be started, found or stopped."""


@dataclass
class ControlPlane:
    """A local control plane whose files (data, certs, logs, kubeconfig) live in `directory`.

    `detached=False` ties the processes' lives to this Python process (tests, the demo);
    `detached=True` lets them outlive it (`agent-mesh dev up`), found again via `load`.
    """

    binaries: Binaries
    directory: Path
    api_port: int | None = None
    detached: bool = False
    address: str = LOOPBACK
    """Where the apiserver listens and what it advertises: 127.0.0.1, or the harness's own
    address on the node's bridge when pods must reach it (then the `kubernetes` Service's
    endpoint points at it)."""
    startup_seconds: float = field(default=0.0, init=False)
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _pids: dict[str, int] = field(default_factory=dict, init=False)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    @property
    def pki_dir(self) -> Path:
        return self.directory / "pki"

    def log_path(self, component: str) -> Path:
        return self.directory / f"{component}.log"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        """Start etcd, then the apiserver, and return once /readyz answers ok."""
        if self.api_port is not None:
            check_port_free(self.address, self.api_port, "--port")
        else:
            self.api_port = free_port()
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        etcd_port, peer_port = free_port(), free_port()
        try:
            self._spawn("etcd", self._etcd_args(etcd_port, peer_port))
            self._wait_etcd(etcd_port, deadline=started + timeout)
            self._spawn("kube-apiserver", self._apiserver_args(etcd_port))
            self._write_kubeconfig()
            self._wait_ready(deadline=started + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        if self.detached:
            self._save_state()

    def stop(self) -> None:
        """Stop the apiserver first (it holds etcd connections), then etcd."""
        for component in ("kube-apiserver", "etcd"):
            pid = self._pids.pop(component, None)
            child = self._children.pop(component, None)
            if pid is None:
                continue
            binary = self._binary(component)
            if child is not None or processes.runs_binary(pid, binary):
                processes.terminate(pid, child=child)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _STATE_FILE).unlink()

    @property
    def pids(self) -> dict[str, int]:
        """Component → pid of the running processes."""
        return dict(self._pids)

    def running(self) -> bool:
        return bool(self._pids) and all(
            processes.runs_binary(pid, self._binary(c)) for c, pid in self._pids.items()
        )

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state of a detached plane ---------------------------------------------------------

    def _save_state(self) -> None:
        state = {
            "apiPort": self.api_port,
            "address": self.address,
            "pids": self._pids,
            "binaries": {
                "etcd": str(self.binaries.etcd),
                "kubeApiserver": str(self.binaries.kube_apiserver),
                "kubectl": str(self.binaries.kubectl),
                "kubernetesVersion": self.binaries.kubernetes_version,
                "etcdVersion": self.binaries.etcd_version,
            },
        }
        (self.directory / _STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, directory: Path) -> ControlPlane | None:
        """The detached plane recorded in `directory`, or None when there is none."""
        try:
            state = json.loads((directory / _STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise DevClusterError(f"{directory / _STATE_FILE} is unreadable: {exc}") from exc
        b = state["binaries"]
        binaries = Binaries(
            etcd=Path(b["etcd"]),
            kube_apiserver=Path(b["kubeApiserver"]),
            kubectl=Path(b["kubectl"]),
            kubernetes_version=b["kubernetesVersion"],
            etcd_version=b["etcdVersion"],
        )
        plane = cls(
            binaries=binaries,
            directory=directory,
            api_port=state["apiPort"],
            detached=True,
            address=state.get("address", LOOPBACK),
        )
        plane._pids = {k: int(v) for k, v in state["pids"].items()}
        return plane

    # -- internals -------------------------------------------------------------------------

    def _binary(self, component: str) -> Path:
        return self.binaries.etcd if component == "etcd" else self.binaries.kube_apiserver

    def _spawn(self, component: str, args: list[str]) -> None:
        child = processes.spawn(
            [str(self._binary(component)), *args],
            self.log_path(component),
            detached=self.detached,
        )
        self._children[component] = child
        self._pids[component] = child.pid

    def _etcd_args(self, client_port: int, peer_port: int) -> list[str]:
        client = f"http://{LOOPBACK}:{client_port}"
        peer = f"http://{LOOPBACK}:{peer_port}"
        return [
            "--name=agent-mesh-dev",
            f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=agent-mesh-dev={peer}",
            "--unsafe-no-fsync",  # a throwaway store: durability buys nothing here
            "--log-level=warn",
        ]

    def _apiserver_args(self, etcd_port: int) -> list[str]:
        p = self.pki_dir
        # With a node, the `kubernetes` Service's endpoint is the apiserver's own address
        # (the lease reconciler writes it); on loopback there is nothing to point it at.
        reconciler = "none" if self.address == LOOPBACK else "lease"
        return [
            f"--etcd-servers=http://{LOOPBACK}:{etcd_port}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            # Kubelets are authorised as real clusters do it: the Node authorizer and
            # NodeRestriction limit each to its own node and pods; the apiserver presents a
            # client certificate to kubelets and verifies theirs against the cluster CA.
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={p / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={_SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--endpoint-reconciler-type={reconciler}",
        ]

    def _write_pki(self) -> None:
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        ca, ca_key = certs.make_ca()
        serving = certs.issue(
            ca,
            ca_key,
            "kube-apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
            ),
            ip_addresses=tuple(dict.fromkeys((LOOPBACK, self.address, _KUBERNETES_SERVICE_IP))),
            server=True,
        )
        admin = certs.issue(
            ca, ca_key, "agent-mesh-admin", organization="system:masters", client=True
        )
        # Bound to system:kubelet-api-admin when a node runs (kubeadm's arrangement).
        kubelet_client = certs.issue(ca, ca_key, "kube-apiserver-kubelet-client", client=True)
        sa_key, sa_pub = certs.service_account_keys()
        (self.pki_dir / "ca.crt").write_bytes(ca.cert_pem)
        certs.write_private(self.pki_dir / "ca.key", ca.key_pem)
        (self.pki_dir / "apiserver.crt").write_bytes(serving.cert_pem)
        certs.write_private(self.pki_dir / "apiserver.key", serving.key_pem)
        (self.pki_dir / "admin.crt").write_bytes(admin.cert_pem)
        certs.write_private(self.pki_dir / "admin.key", admin.key_pem)
        (self.pki_dir / "apiserver-kubelet-client.crt").write_bytes(kubelet_client.cert_pem)
        certs.write_private(self.pki_dir / "apiserver-kubelet-client.key", kubelet_client.key_pem)
        certs.write_private(self.pki_dir / "sa.key", sa_key)
        (self.pki_dir / "sa.pub").write_bytes(sa_pub)

    def _write_kubeconfig(self) -> None:
        write_kubeconfig(
            self.kubeconfig,
            self.server,
            self.pki_dir / "ca.crt",
            "agent-mesh-admin",
            self.pki_dir / "admin.crt",
            self.pki_dir / "admin.key",
        )

    def _check_alive(self, component: str) -> None:
        child, log = self._children.get(component), self.log_path(component)
        problem = processes.exit_report(component, child, log, "while starting")
        if problem is not None:
            raise DevClusterError(problem)

    def _wait_etcd(self, port: int, deadline: float) -> None:
        url = f"http://{LOOPBACK}:{port}/health"
        while True:
            self._check_alive("etcd")
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(url, timeout=2) as resp,
            ):
                if json.loads(resp.read()).get("health") == "true":
                    return
            if time.monotonic() > deadline:
                raise DevClusterError(f"etcd did not become healthy; see {self.log_path('etcd')}")
            time.sleep(0.1)

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the plane's CA and presents the admin client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return ctx

    def _wait_ready(self, deadline: float) -> None:
        ctx = self.ssl_context()
        last = "no answer yet"
        while True:
            self._check_alive("kube-apiserver")
            try:
                with urllib.request.urlopen(  # noqa: S310 (loopback)
                    f"{self.server}/readyz", timeout=2, context=ctx
                ) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise DevClusterError(
                    f"kube-apiserver did not become ready ({last}); "
                    f"see {self.log_path('kube-apiserver')}"
                )
            time.sleep(0.2)


def write_kubeconfig(
    path: Path, server: str, ca: Path, user: str, cert: Path, key: Path, namespace: str = "default"
) -> None:
    """A kubeconfig with the certificates embedded, readable by its owner only."""

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CONTEXT, "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
        "contexts": [
            {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user, "namespace": namespace}}
        ],
        "current-context": CONTEXT,
    }
    certs.write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
