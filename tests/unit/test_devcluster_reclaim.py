"""What the harness may do with a recorded node before a start or a `dev down`: clean up
after a dead one, stop the node `dev up` started when `dev down` asks, reclaim a test run's
node whose owner died, and refuse every other live node with what to do about it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from agent_mesh.devcluster import node as devnode
from agent_mesh.devcluster.node import Reclaim, judge


@pytest.mark.parametrize(
    ("live", "owned", "detached", "owner_alive", "verifiable"),
    list(itertools.product([True, False], repeat=5)),
)
def test_the_verdict_for_every_combination(
    live: bool, owned: bool, detached: bool, owner_alive: bool, verifiable: bool
) -> None:
    verdict = judge(
        live=live, owned=owned, detached=detached, owner_alive=owner_alive, verifiable=verifiable
    )
    if not live:
        assert verdict is Reclaim.LEFTOVERS  # nothing runs: always cleaned up
    elif owned:
        assert verdict is Reclaim.OURS  # `dev down` of the node `dev up` started
    elif not detached and not owner_alive and verifiable:
        assert verdict is Reclaim.ORPHANED  # a test run's node, its owner dead
    else:
        assert verdict is Reclaim.BUSY


def test_a_dev_up_node_is_never_an_orphan_although_its_owner_exits_at_once() -> None:
    verdict = judge(live=True, owned=False, detached=True, owner_alive=False, verifiable=True)
    assert verdict is Reclaim.BUSY


def test_processes_recorded_without_start_times_are_never_reclaimed() -> None:
    verdict = judge(live=True, owned=False, detached=False, owner_alive=False, verifiable=False)
    assert verdict is Reclaim.BUSY


def _record(tmp_path: Path, **changes: object) -> devnode.Record:
    fields: dict[str, object] = {
        "directory": tmp_path,
        "started_at": "2026-01-01T00:00:00+00:00",
        "owner_pid": 2**22 + 11,  # above any pid_max: never a live process
        "sysctls": {},
        "preexisting_paths": [],
        "preexisting_kube_chains": [],
        "binaries": {"kubelet": str(tmp_path / "kubelet")},
        "pids": {"kubelet": 2**22 + 7},
    }
    return devnode.Record(**(fields | changes))


def test_start_times_survive_a_round_trip_and_an_older_record_has_none(tmp_path: Path) -> None:
    record = _record(tmp_path, owner_start_time=1234, start_times={"kubelet": 5678})
    record.save()
    loaded = devnode.Record.load(tmp_path)
    assert loaded is not None
    assert (loaded.owner_start_time, loaded.start_times) == (1234, {"kubelet": 5678})
    older = _record(tmp_path)
    older.save()
    loaded = devnode.Record.load(tmp_path)
    assert loaded is not None
    assert (loaded.owner_start_time, loaded.start_times) == (None, {})


def test_a_dead_owner_is_not_alive_and_nothing_live_is_verifiable(tmp_path: Path) -> None:
    record = _record(tmp_path)
    assert not record.owner_alive()
    assert record.live_components() == [] and record.verifiable()
    assert not record.orphaned()  # nothing runs: leftovers, not an orphan


def test_each_refusal_says_what_to_do(tmp_path: Path) -> None:
    live = ["kubelet (pid 42)"]
    detached = devnode.busy_reason(_record(tmp_path, detached=True), live)
    assert "kubelet (pid 42)" in detached and "`agent-mesh dev down` stops it" in detached
    unverifiable = devnode.busy_reason(_record(tmp_path), live)
    assert "is gone" in unverifiable and "without their start times" in unverifiable
    assert "stop them by hand" in unverifiable
