"""The node's configuration as files and flags: what each component is told, checked
without starting anything (the node tests check what they do)."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from agent_mesh.devcluster import components, containerd, hoststate, images, network
from agent_mesh.devcluster import node as devnode
from agent_mesh.devcluster.binaries import COREDNS_MAIN, COREDNS_PLUGINS, Binaries
from agent_mesh.devcluster.cluster import ControlPlane

ROOT = Path(__file__).resolve().parents[2]


def test_kubelet_runs_on_cgroup_v1_authenticates_callers_and_evicts_for_a_small_disk(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load(
        components.kubelet_config(
            pki=tmp_path,
            runtime_socket=tmp_path / "c.sock",
            pod_logs=tmp_path / "logs",
            healthz_port=1234,
            ca_file=tmp_path / "ca.crt",
        )
    )
    assert (config["failCgroupV1"], config["cgroupDriver"]) == (False, "cgroupfs")
    assert config["address"] == network.HOST_ADDRESS  # never the uplink, never 0.0.0.0
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authentication"]["x509"]["clientCAFile"] == str(tmp_path / "ca.crt")
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["evictionHard"]["nodefs.available"] == "512Mi"
    assert config["imageGCHighThresholdPercent"] == 100  # no registry to pull them back
    assert config["clusterDNS"] == [network.DNS_SERVICE_IP]
    assert config["resolvConf"] == ""  # pods never see the host's resolvers


def test_cluster_dns_serves_cluster_names_only_and_forwards_nothing(tmp_path: Path) -> None:
    corefile = components.corefile(tmp_path / "kubeconfig", 1, 2)
    assert "forward" not in corefile and "forward" not in COREDNS_PLUGINS
    assert f"bind {network.HOST_ADDRESS}" in corefile
    assert "kubernetes cluster.local" in corefile
    assert "ready 127.0.0.1:1" in corefile and "health 127.0.0.1:2" in corefile
    # CoreDNS runs plugins in the order of this list: it must follow plugin.cfg.
    listed = re.search(r"Directives = \[\]string\{(.*)\}", COREDNS_MAIN)
    assert listed is not None
    assert [p.strip('" ') for p in listed.group(1).split(",")] == list(COREDNS_PLUGINS)


def test_pod_network_has_no_default_route_and_no_masquerade(tmp_path: Path) -> None:
    conf = json.loads(components.cni_config(tmp_path))
    (bridge,) = conf["plugins"]
    assert bridge["bridge"] == network.BRIDGE
    assert (bridge["ipMasq"], bridge["isDefaultGateway"]) == (False, False)
    assert bridge["ipam"]["routes"] == [{"dst": network.SERVICE_CIDR}]
    assert bridge["ipam"]["ranges"] == [
        [{"subnet": network.POD_CIDR, "gateway": network.HOST_ADDRESS}]
    ]


def test_containerd_config_pins_the_sandbox_and_keeps_its_state_in_the_node_dir(
    tmp_path: Path,
) -> None:
    parsed = tomllib.loads(
        containerd.config(
            tmp_path,
            sandbox_image="localhost/pause:1",
            runc="/usr/sbin/runc",
            cni_bin="/usr/lib/cni",
            cni_conf=tmp_path / "net.d",
        )
    )
    plugins = parsed["plugins"]
    assert parsed["version"] == 4 and parsed["imports"] == []
    assert plugins["io.containerd.server.v1.grpc"]["address"] == str(tmp_path / "containerd.sock")
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE on this kind of VM
    assert runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["Root"] == str(tmp_path / "runc") and runc["SystemdCgroup"] is False
    images_plugin = plugins["io.containerd.cri.v1.images"]
    assert images_plugin["pinned_images"]["sandbox"] == "localhost/pause:1"
    assert "io.containerd.nri.v1.nri" in parsed["disabled_plugins"]
    assert "io.containerd.internal.v1.opt" in parsed["disabled_plugins"]


def test_kube_proxy_leaves_conntrack_sysctls_alone_and_serves_node_ports_on_the_bridge(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load(components.kube_proxy_config(tmp_path / "kc", 1, 2))
    assert config["mode"] == "iptables"
    assert set(config["conntrack"].values()) <= {0, "0s"}
    assert config["nodePortAddresses"] == [f"{network.HOST_ADDRESS}/32"]
    assert config["healthzBindAddress"].startswith("127.0.0.1:")


def _plane(address: str) -> ControlPlane:
    binaries = Binaries(Path("e"), Path("a"), Path("k"), "1.36.3", "3.6.16")
    return ControlPlane(binaries, Path("/nonexistent"), api_port=6443, address=address)


def test_apiserver_for_a_node_authorises_kubelets_and_points_the_kubernetes_service_at_itself() -> (
    None
):
    args = _plane(network.HOST_ADDRESS)._apiserver_args(2379)
    assert f"--bind-address={network.HOST_ADDRESS}" in args
    assert "--authorization-mode=Node,RBAC" in args
    assert "--enable-admission-plugins=NodeRestriction" in args
    assert any(a.startswith("--kubelet-client-certificate=") for a in args)
    assert any(a.startswith("--kubelet-certificate-authority=") for a in args)
    assert "--endpoint-reconciler-type=lease" in args
    assert "--endpoint-reconciler-type=none" in _plane("127.0.0.1")._apiserver_args(2379)


def test_every_component_has_its_own_identity_named_for_default_rbac() -> None:
    users = {i.name: (i.user, i.group) for i in components.IDENTITIES}
    assert users["kubelet"] == (f"system:node:{components.NODE_NAME}", "system:nodes")
    assert users["kube-proxy"] == ("system:kube-proxy", None)
    assert users["kube-scheduler"][0] == "system:kube-scheduler"
    assert users["kube-controller-manager"][0] == "system:kube-controller-manager"


def _repo(tmp_path: Path) -> Path:
    for name in ("Dockerfile", "pyproject.toml", "README.md"):
        (tmp_path / name).write_text(name)
    (tmp_path / "operator" / "pkg").mkdir(parents=True)
    (tmp_path / "operator" / "pkg" / "mod.py").write_text("x = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    return tmp_path


def test_project_image_is_rebuilt_when_the_package_changes_and_only_then(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    key = images.project_key(repo, "base", "wheels")
    (repo / "tests" / "test_x.py").write_text("changed")
    (repo / "operator" / "pkg" / "__pycache__").mkdir()
    (repo / "operator" / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"x")
    assert images.project_key(repo, "base", "wheels") == key
    (repo / "operator" / "pkg" / "mod.py").write_text("x = 2\n")
    assert images.project_key(repo, "base", "wheels") != key
    assert images.project_key(repo, "other-base", "wheels") != images.project_key(
        repo, "base", "wheels"
    )


def test_wheels_are_fetched_for_every_manylinux_the_base_glibc_runs() -> None:
    tags = images.wheel_platforms("2.36")
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_37_x86_64" not in tags


def test_image_build_reads_the_projects_dependencies_and_build_backend() -> None:
    reqs = images.requirements(ROOT / "pyproject.toml")
    assert any(r.startswith("setuptools") for r in reqs)
    assert any(r.startswith("kopf") for r in reqs)


def test_dockerfile_base_is_a_build_argument_defaulting_to_the_public_python_slim() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    froms = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert froms == ["${PYTHON_IMAGE}"] * 3  # build, sdk, operator (the default target)
    assert "ARG PIP_NO_INDEX" in dockerfile and "ARG PIP_FIND_LINKS" in dockerfile


def test_node_record_survives_a_round_trip_and_a_dead_one_is_not_live(tmp_path: Path) -> None:
    record = devnode.Record(
        directory=tmp_path,
        started_at="2026-01-01T00:00:00+00:00",
        owner_pid=1,
        sysctls={"net.ipv4.ip_forward": "0"},
        preexisting_paths=["/var/lib/cni"],
        preexisting_kube_chains=[],
        binaries={"kubelet": str(tmp_path / "kubelet")},
        pids={"kubelet": 2**22 + 7},  # above any pid_max: never a live process
    )
    record.save()
    loaded = devnode.Record.load(tmp_path)
    assert loaded is not None
    assert (loaded.sysctls, loaded.preexisting_paths) == (record.sysctls, ["/var/lib/cni"])
    assert loaded.pids == record.pids
    assert loaded.live_components() == []


def test_unreadable_node_record_is_reported_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text("{not json")
    with pytest.raises(devnode.DevClusterError, match=r"node\.json is unreadable"):
        devnode.Record.load(tmp_path)


def test_a_node_needs_root_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = devnode.unsupported_reason()
    assert reason is not None and reason.startswith("a node needs root")
    assert "--no-node" in reason


def test_missing_debian_packages_are_named_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(devnode.shutil, "which", lambda tool: None if tool == "runc" else tool)
    monkeypatch.setattr(devnode, "cni_bin_dir", lambda: None)
    reason = devnode.unsupported_reason()
    assert reason == (
        "missing Debian packages: runc containernetworking-plugins "
        "(apt-get install runc containernetworking-plugins; `make test` and .ci/run install "
        "them)"
    )


def test_mount_points_with_spaces_are_read_back_from_mountinfo() -> None:
    assert hoststate._unescape("/var/lib/a\\040b") == "/var/lib/a b"
    assert hoststate._unescape("/x\\134y") == "/x\\y"


def test_dev_up_says_why_there_is_no_node_and_starts_the_control_plane_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent_mesh.devcluster import commands as devcli

    started: list[str] = []

    class FakePlane:
        def __init__(self, binaries: Binaries, directory: Path, **kwargs: object) -> None:
            self.kubeconfig = directory / "kubeconfig"
            self.server = "https://127.0.0.1:6443"
            self.startup_seconds = 2.5

        @classmethod
        def load(cls, directory: Path) -> None:
            return None

        def start(self) -> None:
            started.append("plane")

    binaries = Binaries(Path("e"), Path("a"), Path("k"), "1.36.3", "3.6.16")
    monkeypatch.setenv("AGENT_MESH_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(devcli, "ControlPlane", FakePlane)
    monkeypatch.setattr(devcli, "ensure_binaries", lambda versions: binaries)
    monkeypatch.setattr(devnode, "unsupported_reason", lambda: "a node needs root (…)")
    monkeypatch.setattr(devnode, "prepare", lambda *a, **k: pytest.fail("no node here"))
    assert devcli.run("up") == 0
    err = capsys.readouterr().err
    assert "starting the control plane only, without a node: a node needs root" in err
    assert "(control plane only)" in err
    assert started == ["plane"]
