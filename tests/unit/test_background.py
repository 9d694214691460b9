"""The one holder of fire-and-forget tasks: held while they run, cancelled on close."""

from __future__ import annotations

import asyncio

from agent_mesh.domain.background import Background


async def test_close_cancels_tasks_still_running_and_waits_for_them() -> None:
    group = Background()
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    task = group.spawn(forever())
    await started.wait()
    assert len(group) == 1
    await group.close()
    assert task.cancelled() and cleaned_up.is_set()
    assert len(group) == 0


async def test_a_finished_task_is_let_go_and_its_failure_does_not_reach_close() -> None:
    group = Background()

    async def fails() -> None:
        raise RuntimeError("boom")

    task = group.spawn(fails())
    await group.wait()
    assert isinstance(task.exception(), RuntimeError)
    assert len(group) == 0
    await group.close()


async def test_wait_lets_running_tasks_finish_instead_of_cancelling_them() -> None:
    group = Background()
    task = group.spawn(asyncio.sleep(0, result="done"))
    await group.wait()
    assert task.result() == "done"
