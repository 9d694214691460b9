"""containerd 2.x for the node: its configuration, its process and image import.

Everything it keeps (content, snapshots, state, sockets, network namespaces, runc's state)
lives in the node's directory; only the shims' sockets go to /run/containerd/s, which
containerd does not let one move. The traps met on this kind of machine are set here:
`restrict_oom_score_adj` (the bounding set lacks CAP_SYS_RESOURCE, so runc cannot write a
negative oom_score_adj), the socket under the grpc plugin (a top-level [grpc] section is
ignored in config version 4), and a sandbox image pinned by name (never pulled).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from agent_mesh.devcluster.images import Image

# Plugins the node does not use: no NRI socket, no /opt/containerd, no other snapshotters.
_DISABLED_PLUGINS = (
    "io.containerd.nri.v1.nri",
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.blockfile",
    "io.containerd.snapshotter.v1.erofs",
    "io.containerd.differ.v1.erofs",
    "io.containerd.mount-handler.v1.erofs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)
NAMESPACE = "k8s.io"


class ContainerdError(RuntimeError):
    """containerd did not start, or an image did not import."""


def _toml_list(values: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def config(directory: Path, *, sandbox_image: str, runc: str, cni_bin: str, cni_conf: Path) -> str:
    """containerd's config.toml (version 4, containerd 2.x)."""
    return f"""version = 4
root = '{directory / "root"}'
state = '{directory / "state"}'
imports = []
disabled_plugins = {_toml_list(_DISABLED_PLUGINS)}

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = '{socket(directory)}'
  [plugins.'io.containerd.server.v1.ttrpc']
    address = '{socket(directory)}.ttrpc'
  [plugins.'io.containerd.server.v1.debug']
    address = ''
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{sandbox_image}'
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          Root = '{directory / "runc"}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{cni_bin}']
      conf_dir = '{cni_conf}'
      max_conf_num = 1
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
"""


def socket(directory: Path) -> Path:
    return directory / "containerd.sock"


def environment(bin_dir: Path) -> dict[str, str]:
    """containerd finds its shim on PATH: ours first."""
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def wait_ready(ctr: Path, directory: Path, alive: object, deadline: float) -> None:
    """Until `ctr version` answers on the socket (`alive()` raises if containerd died)."""
    last = ""
    while True:
        if callable(alive):
            alive()
        proc = _ctr(ctr, directory, "version", timeout=10)
        if proc.returncode == 0:
            return
        last = proc.stderr.strip()
        if time.monotonic() > deadline:
            raise ContainerdError(f"containerd did not answer on {socket(directory)}: {last}")
        time.sleep(0.1)


def import_image(ctr: Path, directory: Path, image: Image) -> None:
    """Import an image archive into the CRI namespace, unpacked for the overlay snapshotter."""
    images = ("--namespace", NAMESPACE, "images")
    archive = str(image.archive)
    proc = _ctr(
        ctr, directory, *images, "import", "--snapshotter", "overlayfs", archive, timeout=600
    )
    if proc.returncode != 0:
        raise ContainerdError(f"importing {image.name} from {image.archive} failed: {proc.stderr}")
    listed = _ctr(ctr, directory, *images, "ls", "--quiet", timeout=60).stdout.split()
    if image.name not in listed:
        raise ContainerdError(
            f"{image.archive} was imported but containerd lists no {image.name} "
            f"(it has: {', '.join(listed) or 'nothing'})"
        )


def ctr(ctr: Path, directory: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`ctr` in the CRI namespace (the kubelet's containers and images)."""
    return _ctr(ctr, directory, "--namespace", NAMESPACE, *args, timeout=timeout)


def _ctr(
    ctr: Path, directory: Path, *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`ctr` on this containerd's socket, its output captured; the caller judges the code."""
    return subprocess.run(
        [str(ctr), "--address", str(socket(directory)), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
