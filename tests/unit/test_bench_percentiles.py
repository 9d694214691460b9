"""The one percentile definition every benchmark publishes (bench/common/stats.py): linear
interpolation between closest ranks, as statistics.quantiles(method="inclusive")."""

from __future__ import annotations

import random
import statistics

import pytest

from bench.common.stats import percentile, percentiles, summary

SAMPLE = [40.0, 15.0, 50.0, 35.0, 20.0]  # sorted: 15, 20, 35, 40, 50


def test_percentile_interpolates_between_the_two_closest_ranks() -> None:
    # position q * (n - 1) of the sorted sample: p40 at 1.6 lies 0.6 of the way 20 -> 35
    assert percentile(SAMPLE, 0.4) == pytest.approx(29.0)
    # p99 at 3.96 lies between the two largest values, not on the largest
    assert percentile(SAMPLE, 0.99) == pytest.approx(49.6)


def test_percentile_ends_are_the_smallest_and_largest_values() -> None:
    assert percentile(SAMPLE, 0.0) == 15.0
    assert percentile(SAMPLE, 1.0) == 50.0


def test_p50_is_the_median_for_odd_and_even_counts() -> None:
    assert percentile(SAMPLE, 0.5) == 35.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == statistics.median([1.0, 2.0, 3.0, 4.0])


def test_percentile_agrees_with_statistics_quantiles_inclusive() -> None:
    rng = random.Random(3)
    values = [rng.expovariate(1.0) for _ in range(301)]
    expected = statistics.quantiles(values, n=100, method="inclusive")
    got = percentiles(values, [k / 100 for k in range(1, 100)])
    assert got == pytest.approx(expected)


def test_a_single_value_is_every_percentile() -> None:
    assert percentiles([7.0], [0.0, 0.5, 0.99, 1.0]) == [7.0, 7.0, 7.0, 7.0]


def test_percentile_of_no_values_is_an_error_unless_a_value_for_empty_is_given() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)
    assert percentile([], 0.99, empty=0.0) == 0.0
    assert summary([], empty=0.0) == {"p50": 0.0, "p99": 0.0}


@pytest.mark.parametrize("q", [-0.01, 1.5, 99])
def test_percentile_outside_zero_to_one_is_refused_naming_q(q: float) -> None:
    with pytest.raises(ValueError, match="q must be between 0 and 1"):
        percentile(SAMPLE, q)


def test_summary_names_each_percentile_and_scales_it() -> None:
    seconds = [0.015, 0.020, 0.035, 0.040, 0.050]
    got = summary(seconds, (0.5, 0.9, 0.99), scale=1000, prefix="latency_", suffix="_ms")
    assert got == pytest.approx(
        {"latency_p50_ms": 35.0, "latency_p90_ms": 46.0, "latency_p99_ms": 49.6}
    )
