"""The local node's tailscale image (devcluster/images.py): pinned to the Tailscale
release, and a root filesystem the sidecar runs from as uid 65532."""

from __future__ import annotations

import tarfile
from pathlib import Path

from agent_mesh.config import OperatorConfig
from agent_mesh.devcluster.images import tailscale_image_name, tailscale_rootfs
from agent_mesh.tailscale.sidecar import SIDECAR_UID, image_error


def test_the_image_is_tagged_with_the_tailscale_release_and_the_operator_accepts_it() -> None:
    name = tailscale_image_name("1.86.5")
    assert name == "localhost/agent-mesh-tailscale:v1.86.5"
    assert image_error(name) is None
    assert OperatorConfig(tailscale_image=name).tailscale_image == name


def test_rootfs_has_the_binaries_on_path_and_names_the_sidecars_uid(tmp_path: Path) -> None:
    binaries = []
    for name in ("tailscaled", "tailscale", "containerboot"):
        path = tmp_path / name
        path.write_bytes(b"\x7fELF " + name.encode())
        path.chmod(0o700)
        binaries.append(path)
    out = tmp_path / "rootfs.tar"
    tailscale_rootfs(binaries, out)
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name in ("tailscaled", "tailscale", "containerboot"):
            member = members[f"usr/local/bin/{name}"]
            assert (member.mode, member.uid, member.gid) == (0o755, 0, 0)
            extracted = tar.extractfile(member)
            assert extracted is not None and extracted.read() == b"\x7fELF " + name.encode()
        passwd = tar.extractfile("etc/passwd")
        group = tar.extractfile("etc/group")
        assert passwd is not None and group is not None
        assert f"nonroot:x:{SIDECAR_UID}:{SIDECAR_UID}:" in passwd.read().decode()
        assert f"nonroot:x:{SIDECAR_UID}:" in group.read().decode()
        assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
