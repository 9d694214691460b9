"""The fast path's kept answers: bounded by count, bytes and age, oldest first; and how
callback URLs are split for the transport."""

from __future__ import annotations

from agent_mesh.mesh.callbacks import split_url
from agent_mesh.mesh.task_results import ResultStore
from tests.support.clocks import Ticks


def test_an_answer_is_kept_for_its_ttl_only() -> None:
    clock = Ticks()
    store = ResultStore(ttl_seconds=600, clock=clock)
    store.put("a", "ns", b'{"id":"a"}')
    clock.now = 599
    kept = store.get("a")
    assert kept is not None and kept.namespace == "ns" and kept.answer == b'{"id":"a"}'
    clock.now = 600
    assert store.get("a") is None
    assert len(store) == 0 and store.size_bytes == 0


def test_the_oldest_answers_go_first_past_the_count() -> None:
    store = ResultStore(max_entries=3, clock=Ticks())
    for key in "abcd":
        store.put(key, "ns", b"x")
    assert [k for k in "abcd" if store.get(k)] == ["b", "c", "d"]


def test_the_oldest_answers_go_first_past_the_bytes() -> None:
    store = ResultStore(max_bytes=10, clock=Ticks())
    store.put("a", "ns", b"12345")
    store.put("b", "ns", b"12345")
    assert store.size_bytes == 10
    store.put("c", "ns", b"1")
    assert store.get("a") is None and store.get("b") and store.get("c")
    assert store.size_bytes == 6


def test_expired_answers_are_dropped_when_others_arrive() -> None:
    clock = Ticks()
    store = ResultStore(ttl_seconds=10, clock=clock)
    store.put("old", "ns", b"123")
    clock.now = 11
    store.put("new", "ns", b"4")
    assert len(store) == 1 and store.size_bytes == 1


def test_putting_a_key_again_replaces_its_answer() -> None:
    store = ResultStore(clock=Ticks())
    store.put("a", "ns", b"123")
    store.put("a", "ns", b"45")
    kept = store.get("a")
    assert kept is not None and kept.answer == b"45"
    assert len(store) == 1 and store.size_bytes == 2


def test_callback_urls_split_into_origin_and_path() -> None:
    assert split_url("http://h:8000/done?run=1") == ("http://h:8000", "/done?run=1")
    assert split_url("https://h") == ("https://h", "/")
