"""A test run's node whose owner died while its processes live on: the harness stops the
recorded processes itself (by pid, only while pid, start time and binary still match),
and refuses when the owner lives, when a process cannot be told from a reused pid, and for
the node `dev up` started. Real processes (copies of sleep standing in for the node's
binaries) stand in for a node; the host-wide clean-up after them (teardown: cgroups,
netfilter, bridge) is replaced by a recorder, so no real node is touched."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_mesh.devcluster import node as devnode
from agent_mesh.devcluster import processes
from tests.support.processes import idle_process
from tests.support.waiting import wait_for


class Stand:
    """Processes of stand-in binaries, and a node record of them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def binary(self, component: str) -> Path:
        path = self.directory / "bin" / component
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shutil.which("sleep") or "/bin/sleep", path)
        return path

    def start(self, component: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen([str(self.binary(component)), "600"])
        self.children[component] = child
        return child

    def record(self, *, owner: int, owner_started: int | None, **changes: object) -> devnode.Record:
        record = devnode.Record(
            directory=self.directory / "node",
            started_at="2026-01-01T00:00:00+00:00",
            owner_pid=owner,
            owner_start_time=owner_started,
            sysctls={},
            preexisting_paths=[],
            preexisting_kube_chains=[],
            binaries={c: str(self.binary(c)) for c in self.children},
        )
        for component, child in self.children.items():
            record.note_started(component, child.pid)
        for key, value in changes.items():
            setattr(record, key, value)
        record.save()
        return record

    def running(self) -> list[str]:
        return sorted(c for c, child in self.children.items() if child.poll() is None)


@pytest.fixture
def stand(tmp_path: Path) -> Iterator[Stand]:
    stand = Stand(tmp_path)
    yield stand
    for child in stand.children.values():
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)


@pytest.fixture
def torn_down(monkeypatch: pytest.MonkeyPatch) -> list[devnode.Record]:
    calls: list[devnode.Record] = []
    monkeypatch.setattr(devnode, "teardown", lambda record, say: calls.append(record))
    return calls


def _dead_owner() -> tuple[int, int]:
    with idle_process() as owner:
        started = processes.start_time(owner.pid)
    assert started is not None
    return owner.pid, started


def test_a_node_whose_owner_died_is_reclaimed_by_stopping_its_recorded_processes(
    stand: Stand, torn_down: list[devnode.Record]
) -> None:
    for component in ("kubelet", "containerd", "etcd"):
        stand.start(component)
    owner, started = _dead_owner()
    record = stand.record(owner=owner, owner_started=started)
    assert record.orphaned()
    said: list[str] = []
    devnode.reclaim_or_refuse(record.directory, say=said.append)
    wait_for("the recorded processes to stop", lambda: stand.running() == [], timeout=15)
    assert any("outlived its owner" in line for line in said), said
    assert any("stopped the processes" in line and "kubelet" in line for line in said), said
    assert [r.directory for r in torn_down] == [record.directory]  # then cleaned up


def test_a_reused_pid_is_never_signalled(stand: Stand, torn_down: list[devnode.Record]) -> None:
    kubelet = stand.start("kubelet")
    other = stand.start("containerd")
    owner, started = _dead_owner()
    record = stand.record(owner=owner, owner_started=started)
    # the same pid started later (another process now), and a pid running another binary
    record.start_times["kubelet"] -= 1
    record.binaries["containerd"] = str(stand.binary("kube-proxy"))
    record.save()
    assert record.live_components() == []
    assert devnode.stop_orphaned(record, say=lambda _: None) == []
    devnode.reclaim_or_refuse(record.directory, say=lambda _: None)  # leftovers only
    assert kubelet.poll() is None and other.poll() is None
    assert len(torn_down) == 1


def test_a_node_whose_owner_still_runs_is_refused(
    stand: Stand, torn_down: list[devnode.Record]
) -> None:
    stand.start("kubelet")
    with idle_process() as owner:
        record = stand.record(owner=owner.pid, owner_started=processes.start_time(owner.pid))
        with pytest.raises(devnode.NodeBusy, match=r"not by `dev up`.*stop its owner first"):
            devnode.reclaim_or_refuse(record.directory, say=lambda _: None)
        # a pid the owner had, reused by another process, is not the owner
        record.owner_start_time = (record.owner_start_time or 0) - 1
        assert not record.owner_alive()
    assert stand.running() == ["kubelet"] and torn_down == []


def test_processes_recorded_without_start_times_are_left_to_the_user(
    stand: Stand, torn_down: list[devnode.Record]
) -> None:
    stand.start("kubelet")
    owner, started = _dead_owner()
    record = stand.record(owner=owner, owner_started=started, start_times={})
    with pytest.raises(devnode.NodeBusy, match="stop them by hand"):
        devnode.reclaim_or_refuse(record.directory, say=lambda _: None)
    assert stand.running() == ["kubelet"] and torn_down == []


def test_the_node_dev_up_started_is_not_reclaimed_by_a_start(
    stand: Stand, torn_down: list[devnode.Record]
) -> None:
    stand.start("kubelet")
    owner, started = _dead_owner()  # `dev up` exits once the node is up
    record = stand.record(owner=owner, owner_started=started, detached=True)
    with pytest.raises(devnode.NodeBusy, match="`agent-mesh dev down` stops it"):
        devnode.reclaim_or_refuse(record.directory, say=lambda _: None)
    assert stand.running() == ["kubelet"] and torn_down == []
