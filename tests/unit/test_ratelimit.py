"""Token buckets by key: bursts, refill, separate keys, bounded memory."""

from __future__ import annotations

import pytest

from agent_mesh.domain.ratelimit import Rate, TokenBuckets, retry_after_seconds
from tests.support.clocks import Ticks


def test_a_key_gets_its_burst_then_is_told_how_long_to_wait() -> None:
    buckets = TokenBuckets(Rate(3, 2), clock=Ticks(1000.0))
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token at 2 per second


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Ticks(1000.0)
    buckets = TokenBuckets(Rate(2, 1), clock=clock)
    buckets.take("a")
    buckets.take("a")
    clock.now += 1
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    clock.now += 3600  # a long pause refills to the burst, not beyond
    assert [buckets.take("a") == 0.0 for _ in range(3)] == [True, True, False]


def test_keys_do_not_share_a_bucket() -> None:
    buckets = TokenBuckets(Rate(1, 1), clock=Ticks(1000.0))
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0


def test_wait_neither_takes_nor_remembers_a_key() -> None:
    buckets = TokenBuckets(Rate(1, 1), clock=Ticks(1000.0))
    assert buckets.wait("a") == 0.0
    assert len(buckets) == 0
    buckets.take("a")
    assert buckets.wait("a") == pytest.approx(1.0)
    assert buckets.wait("a") == pytest.approx(1.0)  # nothing taken by asking


def test_a_flood_of_new_keys_keeps_memory_bounded_and_forgets_the_stalest_first() -> None:
    clock = Ticks(1000.0)
    buckets = TokenBuckets(Rate(2, 0.001), max_keys=100, clock=clock)
    buckets.take("busy")
    buckets.take("busy")
    for i in range(10_000):
        buckets.take(f"flood-{i}")
        if i % 50 == 0:
            buckets.wait("busy")  # asking does not refresh; only use does
            clock.now += 0.0001
    assert len(buckets) == 100
    assert buckets.wait("flood-9999") == 0.0  # one token left of two


def test_a_recently_used_key_survives_the_flood() -> None:
    buckets = TokenBuckets(Rate(1, 0.001), max_keys=10, clock=Ticks(1000.0))
    buckets.take("busy")
    for i in range(100):
        buckets.take(f"flood-{i}")
        assert buckets.take("busy") > 0  # still empty: never forgotten while in use


def test_a_burst_of_zero_is_no_limit() -> None:
    buckets = TokenBuckets(Rate(0, 0), clock=Ticks(1000.0))
    assert all(buckets.take("a") == 0.0 for _ in range(10_000))
    assert len(buckets) == 0


def test_a_limited_rate_needs_a_refill_and_room_for_a_key() -> None:
    with pytest.raises(ValueError, match="per_second"):
        TokenBuckets(Rate(5, 0))
    with pytest.raises(ValueError, match="max_keys"):
        TokenBuckets(Rate(5, 1), max_keys=0)


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_seconds(w) for w in (0.01, 1.0, 1.2, 59.9)] == [1, 1, 2, 60]
