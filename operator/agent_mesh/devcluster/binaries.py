"""Build etcd, kube-apiserver and kubectl from Go modules, cached by version.

Each component is built in a throwaway wrapper module with the machine's Go. The
k8s.io/kubernetes module only builds when every k8s.io staging module it lists under
`replace` is pinned to its published v0.<minor>.<patch> tag, and its `godebug` line is
copied, so the wrapper's go.mod is derived from the real one rather than hard-coded.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent_mesh.devcluster.versions import (
    DEFAULT_ETCD_VERSION,
    KUBERNETES_VERSIONS,
    cache_root,
    staging_version,
)

Say = Callable[[str], None]

# What a cold build took on a 2-core machine, told to the user before it starts.
_EXPECTED_COLD_BUILD = "about 8-12 minutes on 2 cores, once; later starts reuse the cache"
_KUBE_COMMANDS = ("kube-apiserver", "kubectl")
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


def _build_kubernetes(go: str, version: str, out_dir: Path, *, say: Say) -> None:
    with tempfile.TemporaryDirectory(prefix="agent-mesh-kubebuild-") as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text("module agentmesh.local/probe\n")
        upstream = _module_file(go, "k8s.io/kubernetes", f"v{version}", work)
        (work / "go.mod").write_text(wrapper_go_mod(upstream, version))
        say(f"  [kubernetes {version}] resolving modules")
        packages = [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in _KUBE_COMMANDS]
        _run(
            [go, "get", *[f"{p}@v{version}" for p in packages]], work, say, f"kubernetes {version}"
        )
        for cmd in _KUBE_COMMANDS:
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


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder per cache: a second caller waits, then finds the binaries built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure(
    name: str, out_dir: Path, files: tuple[str, ...], build: Callable[[Path], None], say: Say
) -> None:
    if all((out_dir / f).is_file() for f in files):
        return
    with _locked(out_dir.parent / f".{name}.lock"):
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
