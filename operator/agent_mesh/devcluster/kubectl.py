"""kubectl: which one to use, and one bound to a kubeconfig."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from agent_mesh.devcluster.cluster import DevClusterError
from agent_mesh.devcluster.versions import cache_root


def kubectl_path() -> str | None:
    """The kubectl built with the control plane if there is one, else the one on PATH."""
    built = sorted((cache_root() / "bin").glob("kubernetes-*/kubectl"), reverse=True)
    return str(built[0]) if built else shutil.which("kubectl")


class Kubectl:
    """kubectl bound to one kubeconfig; failures raise with kubectl's own message."""

    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [self.binary, *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            raise DevClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout
