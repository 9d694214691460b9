"""The pending-task queue: priority first, arrival order within a priority."""

from __future__ import annotations

import random

from agent_mesh.domain.task_queue import Priority, QueueEntry, TaskQueue

LOW, MEDIUM, HIGH, CRITICAL = Priority.LOW, Priority.MEDIUM, Priority.HIGH, Priority.CRITICAL


def drain(queue: TaskQueue[str]) -> list[str]:
    out = []
    while (entry := queue.pop()) is not None:
        out.append(entry.key)
    return out


def test_higher_priorities_go_first_and_each_priority_is_fifo() -> None:
    queue: TaskQueue[str] = TaskQueue()
    for key, priority in [
        ("low-1", LOW),
        ("med-1", MEDIUM),
        ("crit-1", CRITICAL),
        ("high-1", HIGH),
        ("med-2", MEDIUM),
        ("crit-2", CRITICAL),
        ("low-2", LOW),
    ]:
        queue.push(key, key, priority)
    assert drain(queue) == ["crit-1", "crit-2", "high-1", "med-1", "med-2", "low-1", "low-2"]


def test_priority_defaults_to_medium() -> None:
    queue: TaskQueue[None] = TaskQueue()
    queue.push("a", None)
    entry = queue.pop()
    assert entry is not None and entry.priority is MEDIUM


def test_pop_and_peek_on_an_empty_queue_return_none() -> None:
    queue: TaskQueue[str] = TaskQueue()
    assert queue.pop() is None
    assert queue.peek() is None
    assert len(queue) == 0


def test_peek_shows_the_next_task_without_taking_it() -> None:
    queue: TaskQueue[str] = TaskQueue()
    queue.push("a", "A", LOW)
    queue.push("b", "B", HIGH)
    first = queue.peek()
    assert first is not None and (first.key, first.item) == ("b", "B")
    assert len(queue) == 2
    assert queue.pop() is first


def test_a_deleted_task_leaves_the_queue() -> None:
    queue: TaskQueue[str] = TaskQueue()
    for key in "abc":
        queue.push(key, key)
    removed = queue.remove("b")
    assert removed is not None and removed.key == "b"
    assert "b" not in queue and len(queue) == 2
    assert queue.remove("b") is None
    assert queue.remove("never-queued") is None
    assert drain(queue) == ["a", "c"]


def test_removing_the_head_makes_peek_show_the_next() -> None:
    queue: TaskQueue[str] = TaskQueue()
    queue.push("a", "a", CRITICAL)
    queue.push("b", "b", LOW)
    queue.remove("a")
    head = queue.peek()
    assert head is not None and head.key == "b"


def test_a_task_that_could_not_be_placed_keeps_its_turn() -> None:
    queue: TaskQueue[str] = TaskQueue()
    for key in ["first", "second", "third"]:
        queue.push(key, key, HIGH)
    entry = queue.pop()
    assert entry is not None
    queue.push("later", "later", HIGH)
    assert queue.requeue(entry)
    assert drain(queue) == ["first", "second", "third", "later"]


def test_several_requeued_tasks_return_in_their_original_order() -> None:
    queue: TaskQueue[str] = TaskQueue()
    for key in "abcde":
        queue.push(key, key)
    a, b, c = queue.pop(), queue.pop(), queue.pop()
    assert a is not None and b is not None and c is not None
    queue.push("f", "f")
    for entry in (c, a, b):  # put back in any order
        queue.requeue(entry)
    assert drain(queue) == ["a", "b", "c", "d", "e", "f"]


def test_requeue_is_refused_when_the_task_was_queued_again_meanwhile() -> None:
    queue: TaskQueue[str] = TaskQueue()
    queue.push("a", "old")
    entry = queue.pop()
    assert entry is not None
    queue.push("a", "new")
    assert not queue.requeue(entry)
    assert drain(queue) == ["a"]


def test_pushing_a_queued_task_again_updates_it_in_place() -> None:
    queue: TaskQueue[str] = TaskQueue()
    assert queue.push("a", "v1")
    queue.push("b", "b")
    assert not queue.push("a", "v2")
    assert len(queue) == 2
    head = queue.pop()
    assert head is not None and (head.key, head.item) == ("a", "v2")


def test_changing_priority_moves_the_task_but_keeps_its_age() -> None:
    queue: TaskQueue[str] = TaskQueue()
    queue.push("old-low", "x", LOW)
    queue.push("new-high", "x", HIGH)
    queue.push("other-low", "x", LOW)
    queue.push("old-low", "x", HIGH)  # raised: it waited longer than new-high
    assert len(queue) == 3
    assert drain(queue) == ["old-low", "new-high", "other-low"]


def test_iteration_lists_pending_tasks_in_pop_order() -> None:
    queue: TaskQueue[str] = TaskQueue()
    for key, priority in [("a", LOW), ("b", CRITICAL), ("c", LOW), ("d", MEDIUM)]:
        queue.push(key, key, priority)
    queue.remove("c")
    assert [e.key for e in queue] == ["b", "d", "a"]
    assert len(queue) == 3  # iterating takes nothing


def test_get_and_contains_see_only_live_tasks() -> None:
    queue: TaskQueue[int] = TaskQueue()
    queue.push("a", 1)
    entry = queue.get("a")
    assert isinstance(entry, QueueEntry) and entry.item == 1
    queue.remove("a")
    assert queue.get("a") is None and "a" not in queue


def test_many_removals_are_swept_without_changing_the_order() -> None:
    queue: TaskQueue[int] = TaskQueue()
    for i in range(5000):
        queue.push(f"t{i}", i, LOW if i % 2 else HIGH)
    for i in range(0, 5000, 3):
        queue.remove(f"t{i}")
    expected = [f"t{i}" for i in range(0, 5000, 2) if i % 3] + [
        f"t{i}" for i in range(1, 5000, 2) if i % 3
    ]
    assert [e.key for e in queue] == expected
    assert len(queue) == len(expected)
    assert [e.key for e in iter(queue.pop, None)] == expected


def test_random_operations_match_a_sorted_reference() -> None:
    rng = random.Random(7)
    queue: TaskQueue[int] = TaskQueue()
    reference: dict[str, tuple[int, int]] = {}  # key -> (rank, arrival)
    rank = {CRITICAL: 0, HIGH: 1, MEDIUM: 2, LOW: 3}
    arrivals = 0
    held: list[QueueEntry[int]] = []
    for _ in range(5000):
        op = rng.random()
        key = f"k{rng.randrange(300)}"
        if op < 0.45:
            priority = rng.choice(list(Priority))
            queue.push(key, 0, priority)
            if key in reference:
                reference[key] = (rank[priority], reference[key][1])
            else:
                reference[key] = (rank[priority], arrivals)
                arrivals += 1
        elif op < 0.6:
            assert (queue.remove(key) is not None) == (reference.pop(key, None) is not None)
        elif op < 0.85:
            entry = queue.pop()
            expected = min(reference, key=reference.__getitem__) if reference else None
            assert (entry.key if entry else None) == expected
            if entry is not None:
                del reference[entry.key]
                held.append(entry)
        elif held:
            entry = held.pop(rng.randrange(len(held)))
            if queue.requeue(entry):
                reference[entry.key] = (rank[entry.priority], entry.seq)
        assert len(queue) == len(reference)
    assert [e.key for e in queue] == sorted(reference, key=reference.__getitem__)
