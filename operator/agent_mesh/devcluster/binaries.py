"""Build the local cluster's binaries from Go modules, cached by version.

The control plane: etcd, kube-apiserver and kubectl. The node (`NodeBinaries`):
kube-controller-manager, kube-scheduler, kubelet and kube-proxy from the same Kubernetes
module; containerd 2.x, its runc shim and `ctr`; CoreDNS (a build of its own module with
only the plugins a cluster DNS needs); and a tiny static pause program for pod sandboxes.

Each component is built in a throwaway wrapper module with the machine's Go. The
k8s.io/kubernetes module only builds when every k8s.io staging module it lists under
`replace` is pinned to its published v0.<minor>.<patch> tag, and its `godebug` line is
copied, so the wrapper's go.mod is derived from the real one rather than hard-coded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent_mesh.devcluster.versions import (
    CONTAINERD_VERSION,
    COREDNS_VERSION,
    DEFAULT_ETCD_VERSION,
    HEADSCALE_VERSION,
    HELM_VERSION,
    KUBERNETES_VERSIONS,
    TAILSCALE_VERSION,
    cache_lock,
    cache_root,
    staging_version,
)

Say = Callable[[str], None]

# What a cold build took on a 2-core machine, told to the user before it starts.
_EXPECTED_COLD_BUILD = "about 8-12 minutes on 2 cores, once; later starts reuse the cache"
_EXPECTED_NODE_BUILD = "about 4-7 minutes on 2 cores after the control plane's build, once"
_EXPECTED_HELM_BUILD = "about 2-4 minutes on 2 cores, once"
_KUBE_COMMANDS = ("kube-apiserver", "kubectl")
_NODE_KUBE_COMMANDS = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
_CONTAINERD_COMMANDS = ("containerd", "containerd-shim-runc-v2", "ctr")
_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", re.MULTILINE)
_GODEBUG = re.compile(r"^godebug\s.*$", re.MULTILINE)
_GO_DIRECTIVE = re.compile(r"^go\s+(\S+)\s*$", re.MULTILINE)


class BuildError(RuntimeError):
    """A component could not be built; the message says which and why."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the built binaries and the versions they report."""

    etcd: Path
    kube_apiserver: Path
    kubectl: Path
    kubernetes_version: str
    etcd_version: str

    @property
    def bin_dir(self) -> Path:
        return self.kubectl.parent


def _stderr_say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is not on PATH: the local control plane is built from Go modules. "
            "Install Go 1.22 or newer (newer toolchains are then fetched through the Go module "
            "proxy as needed), or set KUBECONFIG to use an existing cluster."
        )
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    env.setdefault("GOTOOLCHAIN", "auto")  # a too-old local Go fetches the one go.mod asks for
    env["GOFLAGS"] = "-buildvcs=false -mod=mod"
    return env


def _run(cmd: list[str], cwd: Path, say: Say, label: str) -> None:
    """Run a Go command, streaming a line of progress every few packages."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_go_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    tail: list[str] = []
    compiled = 0
    last_report = time.monotonic()
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-40:], line]
        if line.startswith("go: downloading"):
            continue
        compiled += 1
        if time.monotonic() - last_report > 15:
            say(f"  [{label}] {compiled} packages built so far (now: {line[:90]})")
            last_report = time.monotonic()
    if proc.wait() != 0:
        output = "\n".join(tail)
        raise BuildError(f"{label}: `{' '.join(cmd[:3])} …` failed:\n{output}")


def _module_file(go: str, module: str, version: str, workdir: Path) -> str:
    """The go.mod of a module version, fetched through the module proxy."""
    out = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        cwd=workdir,
        env=_go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        info = json.loads(out.stdout)
    except json.JSONDecodeError as exc:
        raise BuildError(f"could not fetch {module}@{version}: {out.stderr.strip()}") from exc
    if "Error" in info or "GoMod" not in info:
        raise BuildError(f"could not fetch {module}@{version}: {info.get('Error', out.stderr)}")
    return Path(info["GoMod"]).read_text()


def wrapper_go_mod(kubernetes_go_mod: str, kubernetes_version: str) -> str:
    """The wrapper module's go.mod: k8s.io/kubernetes's go directive, godebug and replaces."""
    staging = sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))
    if not staging:
        raise BuildError(f"k8s.io/kubernetes v{kubernetes_version}: no staging replaces found")
    go_directive = _GO_DIRECTIVE.search(kubernetes_go_mod)
    godebug = _GODEBUG.search(kubernetes_go_mod)
    tag = staging_version(kubernetes_version)
    lines = ["module agentmesh.local/kubebuild", ""]
    if go_directive:
        lines += [f"go {go_directive.group(1)}", ""]
    if godebug:
        lines += [godebug.group(0), ""]
    lines.append("replace (")
    lines += [f"\t{mod} => {mod} {tag}" for mod in staging]
    lines += [")", ""]
    return "\n".join(lines)


def kube_ldflags(version: str) -> str:
    """Version stamps so `kubectl version` and /version report the real release."""
    major, minor, _ = version.split(".")
    stamps = {
        "gitVersion": f"v{version}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{key}={value}" for key, value in stamps.items()]
    return " ".join(flags)


def _build_kubernetes(
    go: str,
    version: str,
    out_dir: Path,
    *,
    say: Say,
    commands: tuple[str, ...] = _KUBE_COMMANDS,
) -> None:
    with tempfile.TemporaryDirectory(prefix="agent-mesh-kubebuild-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module agentmesh.local/probe\n")
        upstream = _module_file(go, "k8s.io/kubernetes", f"v{version}", work)
        (work / "go.mod").write_text(wrapper_go_mod(upstream, version))
        say(f"  [kubernetes {version}] resolving modules")
        packages = [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in commands]
        _run(
            [go, "get", *[f"{p}@v{version}" for p in packages]], work, say, f"kubernetes {version}"
        )
        for cmd in commands:
            say(f"  [kubernetes {version}] compiling {cmd}")
            _run(
                [
                    go,
                    "build",
                    "-v",
                    "-trimpath",
                    f"-ldflags={kube_ldflags(version)}",
                    "-o",
                    str(out_dir / cmd),
                    f"k8s.io/kubernetes/cmd/{cmd}",
                ],
                work,
                say,
                cmd,
            )


def _build_etcd(go: str, version: str, out_dir: Path, say: Say) -> None:
    with tempfile.TemporaryDirectory(prefix="agent-mesh-etcdbuild-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module agentmesh.local/etcdbuild\n\ngo 1.24\n")
        module = "go.etcd.io/etcd/server/v3"
        say(f"  [etcd {version}] resolving modules")
        _run([go, "get", f"{module}@v{version}"], work, say, f"etcd {version}")
        say(f"  [etcd {version}] compiling etcd")
        _run(
            [go, "build", "-v", "-trimpath", "-ldflags=-s -w", "-o", str(out_dir / "etcd"), module],
            work,
            say,
            "etcd",
        )


def _ensure(
    name: str, out_dir: Path, files: tuple[str, ...], build: Callable[[Path], None], say: Say
) -> None:
    if all((out_dir / f).is_file() for f in files):
        return
    with cache_lock(out_dir.parent / f".{name}.lock"):
        if all((out_dir / f).is_file() for f in files):
            return
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir.parent))
        try:
            started = time.monotonic()
            build(staging)
            if out_dir.exists():
                shutil.rmtree(out_dir)
            staging.rename(out_dir)
            say(f"  [{name}] built in {time.monotonic() - started:.0f} s -> {out_dir}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def ensure_binaries(
    kubernetes_versions: tuple[str, ...] | None = None,
    etcd_version: str | None = None,
    *,
    say: Say = _stderr_say,
) -> Binaries:
    """Return cached binaries, building whatever is missing (the first time takes long)."""
    versions = kubernetes_versions or _versions_from_env() or KUBERNETES_VERSIONS
    etcd_version = etcd_version or os.environ.get("AGENT_MESH_ETCD_VERSION") or DEFAULT_ETCD_VERSION
    bin_root = cache_root() / "bin"
    etcd_dir = bin_root / f"etcd-{etcd_version}"
    cached = [v for v in versions if _kube_complete(bin_root / f"kubernetes-{v}")]
    if not cached or not (etcd_dir / "etcd").is_file():
        say(
            "agent-mesh: building the local control plane from Go modules: "
            f"{_EXPECTED_COLD_BUILD}. Cache: {bin_root}"
        )
    go = shutil.which("go") if cached and (etcd_dir / "etcd").is_file() else _go()
    _ensure(
        "etcd-" + etcd_version,
        etcd_dir,
        ("etcd",),
        lambda d: _build_etcd(str(go), etcd_version, d, say),
        say,
    )
    errors: list[str] = []
    for version in cached or versions:
        kube_dir = bin_root / f"kubernetes-{version}"
        try:
            _ensure(
                f"kubernetes-{version}",
                kube_dir,
                _KUBE_COMMANDS,
                functools.partial(_build_kubernetes, str(go), version, say=say),
                say,
            )
        except BuildError as exc:
            errors.append(f"Kubernetes {version}: {exc}")
            say(f"  Kubernetes {version} did not build with this Go; trying an older release")
            continue
        return Binaries(
            etcd=etcd_dir / "etcd",
            kube_apiserver=kube_dir / "kube-apiserver",
            kubectl=kube_dir / "kubectl",
            kubernetes_version=version,
            etcd_version=etcd_version,
        )
    raise BuildError("no Kubernetes release could be built:\n" + "\n\n".join(errors))


def _kube_complete(directory: Path) -> bool:
    return all((directory / cmd).is_file() for cmd in _KUBE_COMMANDS)


def _versions_from_env() -> tuple[str, ...] | None:
    pinned = os.environ.get("AGENT_MESH_KUBERNETES_VERSION")
    return (pinned,) if pinned else None


# -- the node ----------------------------------------------------------------------------

# A pod sandbox's first process: holds the namespaces, reaps orphans, exits on SIGTERM.
PAUSE_SOURCE = """package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 8)
\tsignal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor s := range signals {
\t\tif s != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\tfor {
\t\t\tpid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
\t\t\tif pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""

# CoreDNS's own way to build a server with a chosen plugin set: a main that imports the
# plugins and lists them in CoreDNS's execution order (plugin.cfg). No `forward`: the
# cluster DNS answers cluster names only, and nothing is ever sent upstream.
COREDNS_PLUGINS = ("bind", "ready", "health", "errors", "log", "cache", "kubernetes")
COREDNS_MAIN = (
    "package main\n\nimport (\n"
    '\t"github.com/coredns/coredns/core/dnsserver"\n'
    '\t"github.com/coredns/coredns/coremain"\n'
    + "".join(f'\t_ "github.com/coredns/coredns/plugin/{p}"\n' for p in COREDNS_PLUGINS)
    + ")\n\nfunc init() {\n\tdnsserver.Directives = []string{"
    + ", ".join(f'"{p}"' for p in COREDNS_PLUGINS)
    + "}\n}\n\nfunc main() {\n\tcoremain.Run()\n}\n"
)


@dataclass(frozen=True)
class NodeBinaries:
    """What a node runs beside the control plane, all built from Go modules."""

    kube_controller_manager: Path
    kube_scheduler: Path
    kubelet: Path
    kube_proxy: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    coredns: Path
    pause: Path
    kubernetes_version: str
    containerd_version: str
    coredns_version: str

    def all(self) -> dict[str, Path]:
        """Component name → binary, for process checks and status."""
        return {
            "kube-controller-manager": self.kube_controller_manager,
            "kube-scheduler": self.kube_scheduler,
            "kubelet": self.kubelet,
            "kube-proxy": self.kube_proxy,
            "containerd": self.containerd,
            "containerd-shim-runc-v2": self.containerd_shim,
            "ctr": self.ctr,
            "coredns": self.coredns,
            "pause": self.pause,
        }


def source_digest(source: str) -> str:
    """A short content hash: the cache key of binaries built from source held here."""
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def _build_wrapped(
    go: str,
    label: str,
    out_dir: Path,
    *,
    requires: list[str],
    main: str | None,
    targets: dict[str, str],
    ldflags: str,
    say: Say,
) -> None:
    """Build `targets` (binary name → package, "." for `main`) in a throwaway module."""
    with tempfile.TemporaryDirectory(prefix="agent-mesh-gobuild-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(f"module agentmesh.local/{label.split()[0]}\n\ngo 1.24\n")
        if main is not None:
            (work / "main.go").write_text(main)
        if requires:
            say(f"  [{label}] resolving modules")
            _run([go, "get", *requires], work, say, label)
        if main is not None:
            _run([go, "mod", "tidy"], work, say, label)
        for name, package in targets.items():
            say(f"  [{label}] compiling {name}")
            _run(
                [
                    go,
                    "build",
                    "-v",
                    "-trimpath",
                    f"-ldflags={ldflags}",
                    "-o",
                    str(out_dir / name),
                    package,
                ],
                work,
                say,
                name,
            )


def _build_containerd(go: str, version: str, out_dir: Path, say: Say) -> None:
    module = "github.com/containerd/containerd/v2"
    stamp = f"-s -w -X {module}/version.Version=v{version} -X {module}/version.Revision=module"
    _build_commands(go, "containerd", version, out_dir, module, _CONTAINERD_COMMANDS, stamp, say)


def _build_commands(
    go: str,
    name: str,
    version: str,
    out_dir: Path,
    module: str,
    commands: Sequence[str],
    ldflags: str,
    say: Say,
) -> None:
    """Build the binaries `module`/cmd/<command> of `module` at `version`."""
    _build_wrapped(
        go,
        f"{name} {version}",
        out_dir,
        requires=[f"{module}/cmd/{c}@v{version}" for c in commands],
        main=None,
        targets={c: f"{module}/cmd/{c}" for c in commands},
        ldflags=ldflags,
        say=say,
    )


def _build_coredns(go: str, version: str, out_dir: Path, say: Say) -> None:
    module = "github.com/coredns/coredns"
    _build_wrapped(
        go,
        f"coredns {version}",
        out_dir,
        requires=[f"{module}@v{version}"],
        main=COREDNS_MAIN,
        targets={"coredns": "."},
        ldflags=f"-s -w -X {module}/coremain.GitCommit=v{version}",
        say=say,
    )


def _build_pause(go: str, out_dir: Path, say: Say) -> None:
    _build_wrapped(
        go,
        "pause",
        out_dir,
        requires=[],
        main=PAUSE_SOURCE,
        targets={"pause": "."},
        ldflags="-s -w",
        say=say,
    )


def ensure_node_binaries(kubernetes_version: str, *, say: Say = _stderr_say) -> NodeBinaries:
    """Return the node's cached binaries, building whatever is missing."""
    bin_root = cache_root() / "bin"
    kube_dir = bin_root / f"kubernetes-node-{kubernetes_version}"
    containerd_dir = bin_root / f"containerd-{CONTAINERD_VERSION}"
    coredns_dir = bin_root / f"coredns-{COREDNS_VERSION}-{source_digest(COREDNS_MAIN)[:6]}"
    pause_dir = bin_root / f"pause-{source_digest(PAUSE_SOURCE)}"
    wanted = {
        kube_dir: _NODE_KUBE_COMMANDS,
        containerd_dir: _CONTAINERD_COMMANDS,
        coredns_dir: ("coredns",),
        pause_dir: ("pause",),
    }
    missing = [d for d, files in wanted.items() if not all((d / f).is_file() for f in files)]
    if missing:
        say(
            "agent-mesh: building the node's binaries from Go modules "
            f"({', '.join(d.name for d in missing)}): {_EXPECTED_NODE_BUILD}. Cache: {bin_root}"
        )
        go = _go()
        builders: dict[Path, Callable[[Path], None]] = {
            kube_dir: functools.partial(
                _build_kubernetes,
                go,
                kubernetes_version,
                say=say,
                commands=_NODE_KUBE_COMMANDS,
            ),
            containerd_dir: lambda d: _build_containerd(go, CONTAINERD_VERSION, d, say),
            coredns_dir: lambda d: _build_coredns(go, COREDNS_VERSION, d, say),
            pause_dir: lambda d: _build_pause(go, d, say),
        }
        for directory in missing:  # one Go build at a time: each already uses every core
            _ensure(directory.name, directory, wanted[directory], builders[directory], say)
    return NodeBinaries(
        kube_controller_manager=kube_dir / "kube-controller-manager",
        kube_scheduler=kube_dir / "kube-scheduler",
        kubelet=kube_dir / "kubelet",
        kube_proxy=kube_dir / "kube-proxy",
        containerd=containerd_dir / "containerd",
        containerd_shim=containerd_dir / "containerd-shim-runc-v2",
        ctr=containerd_dir / "ctr",
        coredns=coredns_dir / "coredns",
        pause=pause_dir / "pause",
        kubernetes_version=kubernetes_version,
        containerd_version=CONTAINERD_VERSION,
        coredns_version=COREDNS_VERSION,
    )


def _build_helm(go: str, version: str, out_dir: Path, say: Say) -> None:
    module = "helm.sh/helm/v4"
    stamp = f"-s -w -X {module}/internal/version.version=v{version}"
    _build_wrapped(
        go,
        f"helm {version}",
        out_dir,
        requires=[f"{module}@v{version}"],
        main=None,
        targets={"helm": f"{module}/cmd/helm"},
        ldflags=stamp,
        say=say,
    )


def ensure_helm(version: str | None = None, *, say: Say = _stderr_say) -> Path:
    """Return the cached `helm` binary (Go module helm.sh/helm/v4), building it if missing."""
    version = version or os.environ.get("AGENT_MESH_HELM_VERSION") or HELM_VERSION
    helm_dir = cache_root() / "bin" / f"helm-{version}"
    if not (helm_dir / "helm").is_file():
        say(f"agent-mesh: building helm {version} from its Go module: {_EXPECTED_HELM_BUILD}")
        go = _go()
        _ensure(helm_dir.name, helm_dir, ("helm",), lambda d: _build_helm(go, version, d, say), say)
    return helm_dir / "helm"


def cached_node_binaries() -> list[Path]:
    """Every node binary in the cache, whatever its version (to find stray processes)."""
    bin_root = cache_root() / "bin"
    patterns = ("kubernetes-node-*/*", "containerd-*/*", "coredns-*/coredns", "pause-*/pause")
    return [p for pattern in patterns for p in bin_root.glob(pattern) if p.is_file()]


# -- the tailnet -------------------------------------------------------------------------

_EXPECTED_TAILNET_BUILD = "about 5 minutes on 2 cores, once"
TAILSCALE_COMMANDS = ("tailscaled", "tailscale", "containerboot")


@dataclass(frozen=True)
class TailnetBinaries:
    """A tailnet's processes: Tailscale's daemon, CLI and container entrypoint; headscale."""

    tailscaled: Path
    tailscale: Path
    containerboot: Path
    headscale: Path
    tailscale_version: str
    headscale_version: str

    @property
    def tailscale_dir(self) -> Path:
        """The directory containerboot needs on PATH (it runs tailscaled and tailscale)."""
        return self.tailscaled.parent


def _build_tailscale(go: str, version: str, out_dir: Path, say: Say) -> None:
    stamps = f"-s -w -X tailscale.com/version.longStamp={version}"
    stamps += f" -X tailscale.com/version.shortStamp={version}"
    _build_commands(
        go, "tailscale", version, out_dir, "tailscale.com", TAILSCALE_COMMANDS, stamps, say
    )


def _build_headscale(go: str, version: str, out_dir: Path, say: Say) -> None:
    # `go install …@v<version>` fails (the proxy refuses the module's version list);
    # `go get` of the exact version in a throwaway module works.
    module = "github.com/juanfont/headscale"
    _build_commands(go, "headscale", version, out_dir, module, ["headscale"], "-s -w", say)


def tailnet_binary_dirs() -> tuple[Path, Path]:
    """The cache directories of the pinned tailscale and headscale builds."""
    bin_root = cache_root() / "bin"
    return bin_root / f"tailscale-{TAILSCALE_VERSION}", bin_root / f"headscale-{HEADSCALE_VERSION}"


def cached_tailnet_binaries() -> TailnetBinaries | None:
    """The tailnet's binaries if all are cached, else None (nothing is built)."""
    tailscale_dir, headscale_dir = tailnet_binary_dirs()
    found = _tailnet(tailscale_dir, headscale_dir)
    paths = (found.tailscaled, found.tailscale, found.containerboot, found.headscale)
    return found if all(p.is_file() for p in paths) else None


def ensure_tailnet_binaries(*, say: Say = _stderr_say) -> TailnetBinaries:
    """Return the tailnet's cached binaries, building whatever is missing."""
    tailscale_dir, headscale_dir = tailnet_binary_dirs()
    wanted = {tailscale_dir: TAILSCALE_COMMANDS, headscale_dir: ("headscale",)}
    missing = [d for d, files in wanted.items() if not all((d / f).is_file() for f in files)]
    if missing:
        say(
            "agent-mesh: building the tailnet's binaries from Go modules "
            f"({', '.join(d.name for d in missing)}): {_EXPECTED_TAILNET_BUILD}. "
            f"Cache: {tailscale_dir.parent}"
        )
        go = _go()
        builders: dict[Path, Callable[[Path], None]] = {
            tailscale_dir: lambda d: _build_tailscale(go, TAILSCALE_VERSION, d, say),
            headscale_dir: lambda d: _build_headscale(go, HEADSCALE_VERSION, d, say),
        }
        for directory in missing:  # one Go build at a time: each already uses every core
            _ensure(directory.name, directory, wanted[directory], builders[directory], say)
    return _tailnet(tailscale_dir, headscale_dir)


def _tailnet(tailscale_dir: Path, headscale_dir: Path) -> TailnetBinaries:
    return TailnetBinaries(
        tailscaled=tailscale_dir / "tailscaled",
        tailscale=tailscale_dir / "tailscale",
        containerboot=tailscale_dir / "containerboot",
        headscale=headscale_dir / "headscale",
        tailscale_version=TAILSCALE_VERSION,
        headscale_version=HEADSCALE_VERSION,
    )
