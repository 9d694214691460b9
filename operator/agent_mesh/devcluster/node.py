"""A node beside the local control plane, so pods really run.

One node per machine (port 10250, the bridge, fixed paths): a lock serialises starting and
stopping, and a record on disk (written before the first change to the host) lists what
the node runs and what it changes — its processes, the sysctls as they were, the paths and
netfilter chains that existed before. Taking a node down works from that record alone, so
the leftovers of a node whose processes were killed hard are reclaimed the same way, and
so is a test run's node whose owner died while its processes live on: each recorded
process is stopped by pid only while it is the one recorded (pid, start time, binary).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_mesh.devcluster import components, containerd, hoststate, network, processes
from agent_mesh.devcluster.binaries import Binaries, NodeBinaries
from agent_mesh.devcluster.cluster import ControlPlane, DevClusterError
from agent_mesh.devcluster.images import Image
from agent_mesh.devcluster.ports import free_port

Say = Callable[[str], None]

NODE_NAME = components.NODE_NAME
_RECORD = "node.json"
# Debian packages the node needs besides the Go-built binaries, and what each provides.
REQUIRED_TOOLS = {
    "runc": "runc",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "ip": "iproute2",
    "buildah": "buildah",
    "mmdebstrap": "mmdebstrap",
}
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
_CNI_PLUGINS = ("bridge", "host-local")


class NodeUnsupported(DevClusterError):
    """This machine cannot run a node; the message says plainly why."""


class NodeBusy(DevClusterError):
    """A node is already running (or starting) on this machine."""


def _stderr_say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def node_dir() -> Path:
    """Fixed per machine (one node per machine): $AGENT_MESH_NODE_DIR overrides it."""
    return Path(os.environ.get("AGENT_MESH_NODE_DIR", "/var/lib/agent-mesh/node"))


def lock_path() -> Path:
    run_lock = Path("/run/lock")
    return (run_lock if run_lock.is_dir() else Path("/tmp")) / "agent-mesh-node.lock"  # noqa: S108


def cni_bin_dir() -> str | None:
    for directory in CNI_BIN_DIRS:
        if all(Path(directory, p).is_file() for p in _CNI_PLUGINS):
            return directory
    return None


def unsupported_reason() -> str | None:
    """Why this machine cannot run a node, or None when it can."""
    if sys.platform != "linux":
        return f"a node needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return (
            "a node needs root (it mounts container filesystems, creates network namespaces, "
            "a bridge and netfilter rules, and cgroups); run as root or use --no-node"
        )
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None})
    if cni_bin_dir() is None:
        missing.append("containernetworking-plugins")
    if missing:
        return (
            f"missing Debian packages: {' '.join(missing)} "
            f"(apt-get install {' '.join(missing)}; `make test` and .ci/run install them)"
        )
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem (containerd's snapshotter needs it)"
    if not Path("/proc/sys/net/bridge").is_dir():
        return (
            "the kernel's bridge netfilter (br_netfilter) is not loaded: modprobe br_netfilter "
            "(Services between pods on one bridge need it)"
        )
    if not hoststate.cgroup_roots():
        return "no cgroup filesystem is mounted"
    conflicts = network.conflicting_routes()
    if conflicts:
        return (
            f"the host already routes the node's ranges ({network.POD_CIDR}, "
            f"{network.SERVICE_CIDR}): {'; '.join(conflicts)}"
        )
    return None


# -- the record --------------------------------------------------------------------------


@dataclass
class Record:
    """What a node runs and changed; on disk before the first change to the host."""

    directory: Path
    started_at: str
    owner_pid: int
    sysctls: dict[str, str]
    preexisting_paths: list[str]
    preexisting_kube_chains: list[str]
    binaries: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    plane: dict[str, Any] = field(default_factory=dict)
    detached: bool = False
    owner_start_time: int | None = None
    start_times: dict[str, int] = field(default_factory=dict)
    """component → when its process started (processes.start_time): with the pid, it tells
    the recorded process from a later one that reuses the pid."""

    @property
    def path(self) -> Path:
        return self.directory / _RECORD

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {
            "startedAt": self.started_at,
            "ownerPid": self.owner_pid,
            "ownerStartTime": self.owner_start_time,
            "detached": self.detached,
            "sysctls": self.sysctls,
            "preexistingPaths": self.preexisting_paths,
            "preexistingKubeChains": self.preexisting_kube_chains,
            "binaries": self.binaries,
            "pids": self.pids,
            "startTimes": self.start_times,
            "plane": self.plane,
        }
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(data, indent=2))
        partial.rename(self.path)

    @classmethod
    def load(cls, directory: Path) -> Record | None:
        try:
            data = json.loads((directory / _RECORD).read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise DevClusterError(f"{directory / _RECORD} is unreadable: {exc}") from exc
        return cls(
            directory=directory,
            started_at=data["startedAt"],
            owner_pid=int(data["ownerPid"]),
            sysctls=data["sysctls"],
            preexisting_paths=data["preexistingPaths"],
            preexisting_kube_chains=data["preexistingKubeChains"],
            binaries=data.get("binaries", {}),
            pids={k: int(v) for k, v in data.get("pids", {}).items()},
            plane=data.get("plane", {}),
            detached=bool(data.get("detached", False)),
            owner_start_time=(
                None if data.get("ownerStartTime") is None else int(data["ownerStartTime"])
            ),
            start_times={k: int(v) for k, v in data.get("startTimes", {}).items()},
        )

    def note_started(self, component: str, pid: int) -> None:
        """Record `component`'s process (pid and start time)."""
        self.pids[component] = pid
        started = processes.start_time(pid)
        if started is not None:
            self.start_times[component] = started

    def running(self, component: str) -> bool:
        """Whether the recorded process of `component` still runs: its binary, and its
        start time where recorded (a record without one is checked by binary alone)."""
        pid, binary = self.pids.get(component), self.binaries.get(component)
        if not pid or not binary or not processes.runs_binary(pid, Path(binary)):
            return False
        started = self.start_times.get(component)
        return started is None or processes.start_time(pid) == started

    def live_components(self) -> list[str]:
        """Recorded processes still running their binary."""
        return [f"{c} (pid {pid})" for c, pid in self.pids.items() if self.running(c)]

    def owner_alive(self) -> bool:
        """Whether the process that started the node still runs (by pid and start time; a
        record without the start time counts a live pid as the owner: never reclaimed)."""
        if not processes.alive(self.owner_pid):
            return False
        started = self.owner_start_time
        return started is None or processes.start_time(self.owner_pid) == started

    def verifiable(self) -> bool:
        """Whether every live recorded process has its start time recorded, so it can be
        told from a pid reused since (records of older versions have none)."""
        return all(c in self.start_times for c in self.pids if self.running(c))

    def orphaned(self) -> bool:
        """A node a test run started (not `dev up`) whose owner died while its processes
        live on: the harness may stop them (judge → ORPHANED)."""
        live = bool(self.live_components())
        return (
            judge(
                live=live,
                owned=False,
                detached=self.detached,
                owner_alive=self.owner_alive(),
                verifiable=self.verifiable(),
            )
            is Reclaim.ORPHANED
        )


class Reclaim(enum.Enum):
    """What may be done with a recorded node before a start or a `dev down`."""

    LEFTOVERS = "leftovers"
    """Nothing of it runs: clean up after it."""
    OURS = "ours"
    """It runs and the caller may stop it (`dev down` of the node `dev up` started)."""
    ORPHANED = "orphaned"
    """It runs, started by a test run that died: stop its recorded processes, clean up."""
    BUSY = "busy"
    """It runs and is someone else's: refuse."""


def judge(
    *, live: bool, owned: bool, detached: bool, owner_alive: bool, verifiable: bool
) -> Reclaim:
    """The decision, from what the record says and what runs. A node `dev up` started is
    meant to outlive its owner (the `dev up` process), so only `dev down` stops it; a test
    run's node whose owner is gone is nobody's, and is reclaimed, but only when each of its
    live processes can be told from a reused pid (its start time is recorded)."""
    if not live:
        return Reclaim.LEFTOVERS
    if owned:
        return Reclaim.OURS
    if detached or owner_alive or not verifiable:
        return Reclaim.BUSY
    return Reclaim.ORPHANED


def busy_reason(record: Record, live: list[str]) -> str:
    """Why a live node is left alone, and what to do about it."""
    since = (
        f"a node is already running on this machine since {record.started_at} ({', '.join(live)})"
    )
    if record.detached:
        return f"{since}; `agent-mesh dev status` shows it, `agent-mesh dev down` stops it"
    if record.owner_alive():
        return (
            f"{since}, started by pid {record.owner_pid} (a test run?), not by `dev up`, "
            "and that process still runs; `agent-mesh dev down` leaves it running: stop its "
            "owner first"
        )
    return (
        f"{since}; its owner, pid {record.owner_pid}, is gone, but these processes were "
        "recorded without their start times (an older agent-mesh), so a reused pid cannot "
        "be ruled out: stop them by hand, then `agent-mesh dev down` cleans up"
    )


def stop_orphaned(record: Record, *, say: Say = _stderr_say) -> list[str]:
    """Stop the recorded processes of a node whose owner died, by pid, each only while it
    is the process recorded (pid, start time, binary): the kubelet first (it would
    restart containers), the control plane last. What it stopped."""
    order = sorted(
        record.pids,
        key=lambda c: (c != "kubelet", c in ("kube-apiserver", "etcd"), c == "etcd"),
    )
    stopped = []
    for component in order:
        pid, binary = record.pids[component], record.binaries.get(component)
        started = record.start_times.get(component)
        if binary is None or started is None:
            continue
        if processes.stop_recorded(pid, started, Path(binary), grace=5):
            stopped.append(f"{component} (pid {pid})")
    if stopped:
        say(f"agent-mesh: stopped the processes of a node whose owner died: {', '.join(stopped)}")
    return stopped


def reclaim(record: Record, *, owned: bool, say: Say = _stderr_say) -> None:
    """Take a recorded node down when `judge` allows it, else NodeBusy saying why."""
    live = record.live_components()
    verdict = judge(
        live=bool(live),
        owned=owned,
        detached=record.detached,
        owner_alive=record.owner_alive(),
        verifiable=record.verifiable(),
    )
    if verdict is Reclaim.BUSY:
        raise NodeBusy(busy_reason(record, live))
    if verdict is Reclaim.LEFTOVERS:
        say("agent-mesh: reclaiming the leftovers of a node that was stopped hard")
    if verdict is Reclaim.ORPHANED:
        say(
            f"agent-mesh: the node started at {record.started_at} by pid {record.owner_pid} "
            f"outlived its owner ({', '.join(live)}): reclaiming it"
        )
        stop_orphaned(record, say=say)
    teardown(record, say=say)


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """One start or stop of a node at a time on this machine; a second fails at once."""
    path = lock_path()
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise NodeBusy(
                f"another agent-mesh node is starting or stopping on this machine "
                f"(lock {path} is held)"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- taking a node down (also from a record alone) -----------------------------------------


def _kube_proxy_cleanup(binary: str | None) -> None:
    if binary and Path(binary).is_file():
        subprocess.run([binary, "--cleanup", "--v=0"], capture_output=True, check=False, timeout=60)


def teardown(record: Record, *, say: Say = _stderr_say) -> None:
    """Undo everything the node did: processes, containers, mounts, cgroups, netfilter,
    interfaces, sysctls, paths. Idempotent; needs nothing but the record."""
    binaries = {k: Path(v) for k, v in record.binaries.items()}
    # The kubelet first (it would restart containers), then the pods' processes, the shims
    # and containerd, then the rest.
    for component in ("kubelet",):
        pid = record.pids.get(component)
        if pid and record.running(component):
            processes.terminate(pid, grace=5)
    hoststate.remove_cgroups()
    node_binaries = [b for c, b in binaries.items() if c not in ("etcd", "kube-apiserver")]
    hoststate.kill_processes(node_binaries, timeout=5)
    for component in ("kube-apiserver", "etcd"):  # the plane a node was started with
        pid = record.pids.get(component)
        if pid and record.running(component):  # by start time too: never a reused pid
            processes.terminate(pid, grace=10)
    _kube_proxy_cleanup(record.binaries.get("kube-proxy"))
    network.remove_rules(keep=record.preexisting_kube_chains)
    created = [p for p in hoststate.FIXED_PATHS if p not in record.preexisting_paths]
    hoststate.unmount_under([str(record.directory), *created])
    hoststate.remove_cgroups()
    for veth in network.veths_on_bridge():
        subprocess.run(["ip", "link", "delete", veth], capture_output=True, check=False)
    network.delete_bridge()
    changed = network.restore_sysctls(record.sysctls)
    if changed:
        say(f"  restored sysctls: {', '.join(changed)}")
    hoststate.remove_paths(created)
    plane_dir = record.plane.get("directory")
    if plane_dir and record.plane.get("removeDirectory"):
        shutil.rmtree(plane_dir, ignore_errors=True)
    shutil.rmtree(record.directory, ignore_errors=True)
    parent = record.directory.parent
    if str(parent) not in record.preexisting_paths:
        with contextlib.suppress(OSError):
            parent.rmdir()


def leftovers(directory: Path | None = None, preexisting: list[str] | None = None) -> list[str]:
    """What of a node is on this machine now (empty after a clean `dev down`)."""
    directory = directory or node_dir()
    found = []
    if network.link_exists(network.BRIDGE):
        found.append(f"interface {network.BRIDGE}")
    found += [f"veth {v}" for v in network.veths_on_bridge()]
    found += [f"iptables chain {c}" for c in network.own_chains_present()]
    found += [f"iptables chain {c}" for c in network.kube_chains()]
    found += [f"cgroup {c}" for c in hoststate.node_cgroups()]
    found += [f"mount {m}" for m in hoststate.mounts_under([str(directory)])]
    if directory.exists():
        found.append(f"directory {directory}")
    for path in hoststate.FIXED_PATHS:
        if preexisting is not None and path not in preexisting and os.path.lexists(path):
            found.append(f"path {path}")
    return found


def reclaim_or_refuse(directory: Path, *, say: Say = _stderr_say) -> None:
    """Before a start: fail loudly if a live node is someone's; clean up after a dead one,
    or after one whose owner died (`judge`)."""
    record = Record.load(directory)
    if record is not None:
        reclaim(record, owned=False, say=say)
        return
    strays = [f"{Path(exe).name} (pid {pid})" for pid, exe in _stray_processes()]
    if strays:
        raise NodeBusy(
            f"node processes run on this machine without a record in {directory}: "
            f"{', '.join(strays)}; stop them first"
        )
    if network.link_exists(network.BRIDGE) or network.own_chains_present():
        say("agent-mesh: removing a leftover bridge and netfilter chains of an earlier node")
        network.remove_rules(keep=[])
        network.delete_bridge()


def _stray_processes() -> list[tuple[int, str]]:
    from agent_mesh.devcluster.binaries import cached_node_binaries

    return hoststate.processes_of(cached_node_binaries())


# -- bringing a node up --------------------------------------------------------------------


@dataclass
class Node:
    """A control plane (on the harness's address) with a node beside it.

    `detached=False` ties every process to this Python process (tests); `detached=True`
    lets them outlive it (`agent-mesh dev up`), found again through the record.
    """

    binaries: Binaries
    node_binaries: NodeBinaries
    plane_dir: Path
    images: list[Image]
    pause_image: Image
    api_port: int | None = None
    detached: bool = False
    directory: Path = field(default_factory=node_dir)
    say: Say = _stderr_say
    startup_seconds: float = field(default=0.0, init=False)
    timings: dict[str, float] = field(default_factory=dict, init=False)
    plane: ControlPlane = field(init=False)
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _record: Record | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.plane = ControlPlane(
            self.binaries,
            self.plane_dir,
            api_port=self.api_port,
            detached=self.detached,
            address=network.HOST_ADDRESS,
        )

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    def log_path(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        reason = unsupported_reason()
        if reason:
            raise NodeUnsupported(reason)
        started = time.monotonic()
        with machine_lock():
            reclaim_or_refuse(self.directory, say=self.say)
            self._record = Record(
                directory=self.directory,
                started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                owner_pid=os.getpid(),
                owner_start_time=processes.start_time(os.getpid()),
                sysctls=network.read_sysctls(),
                preexisting_paths=hoststate.existing(
                    [*hoststate.FIXED_PATHS, str(self.directory.parent)]
                ),
                preexisting_kube_chains=network.kube_chains(),
                binaries={
                    **{k: str(v) for k, v in self.node_binaries.all().items()},
                    "etcd": str(self.binaries.etcd),
                    "kube-apiserver": str(self.binaries.kube_apiserver),
                },
                plane={"directory": str(self.plane_dir), "removeDirectory": False},
                detached=self.detached,
            )
            self._record.save()  # before anything changes on the host
            try:
                self._bring_up(started + timeout)
            except BaseException:
                self.say(f"agent-mesh: the node did not come up; logs in {self.logs_dir}")
                self._stop_locked(keep_logs=True)
                raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        with machine_lock():
            self._stop_locked()

    def _stop_locked(self, keep_logs: bool = False) -> None:
        record = self._record or Record.load(self.directory)
        if record is not None:
            if keep_logs and self.logs_dir.is_dir():
                saved = self.plane_dir / "node-logs"
                shutil.rmtree(saved, ignore_errors=True)
                with contextlib.suppress(OSError):
                    shutil.copytree(self.logs_dir, saved)
            teardown(record, say=self.say)
        self.plane.stop()
        for child in self._children.values():  # reap: teardown has stopped them all
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
        self._children.clear()
        self._record = None

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------

    def _mark(self, step: str, since: float) -> float:
        now = time.monotonic()
        self.timings[step] = round(now - since, 2)
        return now

    def _bring_up(self, deadline: float) -> None:
        assert self._record is not None
        t = time.monotonic()
        for key, value in network.NODE_SYSCTLS.items():
            network.write_sysctl(key, value)
        network.create_bridge()
        network.install_rules()
        t = self._mark("network", t)
        self.plane.start(timeout=max(deadline - time.monotonic(), 30))
        for component, pid in self.plane.pids.items():
            self._record.note_started(component, pid)
        self._record.save()
        t = self._mark("control plane", t)
        d = self.directory
        for sub in ("pki", "logs", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "run"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        ca = components.ClusterCA(self.plane.pki_dir)
        kubeconfigs = components.write_credentials(ca, d / "pki", self.plane.server)
        t = self._mark("certificates", t)
        self._start_containerd(d, deadline)
        t = self._mark("containerd", t)
        for image in [self.pause_image, *self.images]:
            containerd.import_image(self.node_binaries.ctr, d / "containerd", image)
        t = self._mark("image import", t)
        self._apply(components.bootstrap_objects())
        self._start_components(d, ca, kubeconfigs)
        self._record.save()
        self._wait_ready(deadline)
        self._mark("node ready", t)

    def _spawn(self, component: str, binary: Path, args: list[str], **kw: Any) -> None:
        child = processes.spawn(
            [str(binary), *args], self.log_path(component), detached=self.detached, **kw
        )
        self._children[component] = child
        assert self._record is not None
        self._record.note_started(component, child.pid)

    def _start_containerd(self, d: Path, deadline: float) -> None:
        runc = shutil.which("runc")
        cni_bin = cni_bin_dir()
        assert runc is not None and cni_bin is not None
        (d / "cni/net.d/10-agent-mesh.conflist").write_text(components.cni_config(d / "cni/ipam"))
        config = d / "containerd.toml"
        config.write_text(
            containerd.config(
                d / "containerd",
                sandbox_image=self.pause_image.name,
                runc=runc,
                cni_bin=cni_bin,
                cni_conf=d / "cni/net.d",
            )
        )
        self._spawn(
            "containerd",
            self.node_binaries.containerd,
            ["--config", str(config)],
            env=containerd.environment(self.node_binaries.containerd.parent),
        )
        assert self._record is not None
        self._record.save()
        containerd.wait_ready(
            self.node_binaries.ctr,
            d / "containerd",
            lambda: self._check_alive("containerd"),
            deadline,
        )

    def _start_components(self, d: Path, ca: components.ClusterCA, kc: dict[str, Path]) -> None:
        b = self.node_binaries
        pki = self.plane.pki_dir
        self._spawn(
            "kube-controller-manager",
            b.kube_controller_manager,
            components.controller_manager_args(kc["kube-controller-manager"], pki),
        )
        scheduler_args = components.scheduler_args(kc["kube-scheduler"])
        self._spawn("kube-scheduler", b.kube_scheduler, scheduler_args)
        self.proxy_healthz = free_port()
        proxy_config = d / "kube-proxy.yaml"
        proxy_config.write_text(
            components.kube_proxy_config(kc["kube-proxy"], self.proxy_healthz, free_port())
        )
        self._spawn("kube-proxy", b.kube_proxy, [f"--config={proxy_config}"])
        self.dns_ready = free_port()
        corefile = d / "Corefile"
        corefile.write_text(components.corefile(kc["coredns"], self.dns_ready, free_port()))
        self._spawn("coredns", b.coredns, ["-conf", str(corefile)])
        kubelet_config = d / "kubelet.yaml"
        self.kubelet_healthz = free_port()
        kubelet_config.write_text(
            components.kubelet_config(
                pki=d / "pki",
                runtime_socket=containerd.socket(d / "containerd"),
                pod_logs=d / "pod-logs",
                healthz_port=self.kubelet_healthz,
                ca_file=ca.cert_file,
            )
        )
        self._spawn(
            "kubelet",
            b.kubelet,
            components.kubelet_args(
                config=kubelet_config,
                kubeconfig=kc["kubelet"],
                root_dir=d / "kubelet",
                cert_dir=d / "kubelet" / "pki",
            ),
            env=containerd.environment(b.containerd.parent),
        )

    def _check_alive(self, component: str) -> None:
        child, log = self._children.get(component), self.log_path(component)
        problem = processes.exit_report(component, child, log, "while the node started")
        if problem is not None:
            raise DevClusterError(problem)

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def add_image(self, image: Image) -> None:
        """Import one more image into the running node (one built after it started, e.g.
        the tailscale image once the tailnet's binaries exist); skipped for one the node
        started with."""
        if image in self.images:
            return
        containerd.import_image(self.node_binaries.ctr, self.directory / "containerd", image)
        self.images.append(image)

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`ctr` on the node's containerd, in the namespace the kubelet's containers live
        in (`k8s.io`); the caller judges the exit code."""
        return containerd.ctr(
            self.node_binaries.ctr, self.directory / "containerd", *args, timeout=60
        )

    def _apply(self, manifest: str) -> None:
        proc = self.kubectl("apply", "--server-side", "-f", "-", stdin=manifest)
        if proc.returncode != 0:
            raise DevClusterError(f"applying the node's bootstrap objects failed: {proc.stderr}")

    def _wait_ready(self, deadline: float) -> None:
        checks: dict[str, Callable[[], bool]] = {
            f"node {NODE_NAME} Ready": self._node_ready,
            "the default ServiceAccount (kube-controller-manager)": self._default_sa,
            "CoreDNS ready": lambda: _http_ok(f"http://127.0.0.1:{self.dns_ready}/ready"),
            "kube-proxy healthy": lambda: _http_ok(
                f"http://127.0.0.1:{self.proxy_healthz}/healthz"
            ),
        }
        pending = dict(checks)
        while pending:
            for component in self._children:
                self._check_alive(component)
            for what, check in list(pending.items()):
                if check():
                    del pending[what]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise DevClusterError(
                    f"the node did not become ready: still waiting for {', '.join(pending)}; "
                    f"logs in {self.logs_dir}"
                )
            time.sleep(0.25)

    def _node_ready(self) -> bool:
        proc = self.kubectl("get", "node", NODE_NAME, "-o", "json")
        if proc.returncode != 0:
            return False
        conditions = json.loads(proc.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _default_sa(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (loopback)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def prepare(
    binaries: Binaries,
    plane_dir: Path,
    *,
    detached: bool = False,
    api_port: int | None = None,
    say: Say = _stderr_say,
) -> Node:
    """A node ready to start: its binaries built and its images in the cache (the
    project's image only from a source checkout, which has the Dockerfile; the tailscale
    image when the tailnet's binaries are cached, which only `dev build --tailnet` and
    the tests marked tailscale build)."""
    from agent_mesh.devcluster.binaries import cached_tailnet_binaries, ensure_node_binaries
    from agent_mesh.devcluster.images import ImageCache, expected_first_build, repository_root

    reason = unsupported_reason()
    if reason:
        raise NodeUnsupported(reason)
    node_binaries = ensure_node_binaries(binaries.kubernetes_version, say=say)
    root = repository_root()
    with ImageCache(say=say) as cache:
        pause = cache.pause(node_binaries.pause)
        if root is not None and not cache.project_cached(root):
            say(f"agent-mesh: building the node's images offline: {expected_first_build()}")
        images = [cache.project(root)] if root is not None else []
        tailnet = cached_tailnet_binaries()
        if tailnet is not None:
            images.append(cache.tailscale(tailnet))
    return Node(
        binaries,
        node_binaries,
        plane_dir,
        images=images,
        pause_image=pause,
        api_port=api_port,
        detached=detached,
        say=say,
    )


@dataclass(frozen=True)
class NodeStatus:
    """What `dev status` says about the machine's node."""

    record: Record
    live: list[str]
    ready: bool | None
    pods: int | None

    def describe(self) -> str:
        if not self.live:
            return (
                f"a node record from {self.record.started_at} is left, but nothing of it runs: "
                "`agent-mesh dev down` (or the next `dev up`) reclaims it"
            )
        state = {True: "Ready", False: "NotReady", None: "unreachable"}[self.ready]
        pods = "" if self.pods is None else f", {self.pods} pods running"
        owner = "dev up" if self.record.detached else f"pid {self.record.owner_pid}"
        return (
            f"node {NODE_NAME} {state}{pods} (started by {owner} at {self.record.started_at}, "
            f"bridge {network.BRIDGE} {network.HOST_ADDRESS}, pods {network.POD_CIDR}, "
            f"Services {network.SERVICE_CIDR})"
        )


def status(kubectl: Path | None, kubeconfig: Path | None) -> NodeStatus | None:
    """The machine's node, if a record of one exists."""
    record = Record.load(node_dir())
    if record is None:
        return None
    live = record.live_components()
    ready: bool | None = None
    pods: int | None = None
    if live and kubectl is not None and kubeconfig is not None:
        base = [str(kubectl), f"--kubeconfig={kubeconfig}"]
        got = subprocess.run(
            [*base, "get", "node", NODE_NAME, "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if got.returncode == 0:
            conditions = json.loads(got.stdout).get("status", {}).get("conditions", [])
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            listed = subprocess.run(
                [*base, "get", "pods", "-A", "--field-selector=status.phase=Running", "-o", "name"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            pods = len(listed.stdout.split()) if listed.returncode == 0 else None
    return NodeStatus(record, live, ready, pods)


def down(*, only_owned_by: Path | None = None, say: Say = _stderr_say) -> bool:
    """Take the machine's node down from its record. With `only_owned_by`, a live node is
    left alone unless its control plane lives in that directory or it is a test run's
    whose owner died (`judge`). True when one was found."""
    if Record.load(node_dir()) is None:
        return False
    with machine_lock():
        record = Record.load(node_dir())
        if record is None:
            return False
        owned = only_owned_by is None or record.plane.get("directory") == str(only_owned_by)
        reclaim(record, owned=owned, say=say)
        return True
