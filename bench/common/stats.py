"""Percentiles, defined once for every benchmark.

The q-quantile of n values is the linear interpolation between the two closest ranks:
sort the values, take position q * (n - 1) (0-based), and interpolate between the values
below and above it. This is `statistics.quantiles(method="inclusive")`, numpy's default
`percentile` and Excel's PERCENTILE.INC; at q = 0.5 it is `statistics.median`. With few
samples p99 lies between the two largest values rather than on the largest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Iterable[float], q: float, *, empty: float | None = None) -> float:
    """The q-quantile (0 <= q <= 1) of `values`; `empty` is returned when there are none
    (without it, no values is a ValueError)."""
    ordered = sorted(values)
    if not ordered and empty is not None:
        return empty
    return _interpolate(ordered, q)


def percentiles(
    values: Iterable[float], qs: Sequence[float], *, empty: float | None = None
) -> list[float]:
    """The q-quantile of `values` for each q of `qs` (the values sorted once)."""
    ordered = sorted(values)
    if not ordered and empty is not None:
        return [empty for _ in qs]
    return [_interpolate(ordered, q) for q in qs]


def summary(
    values: Iterable[float],
    qs: Sequence[float] = (0.5, 0.99),
    *,
    scale: float = 1.0,
    prefix: str = "",
    suffix: str = "",
    empty: float | None = None,
) -> dict[str, float]:
    """{f"{prefix}p50{suffix}": ..., f"{prefix}p99{suffix}": ...}: each quantile of `qs`
    times `scale` (e.g. seconds to ms: scale=1000, suffix="_ms")."""
    got = percentiles(values, qs, empty=empty)
    return {f"{prefix}p{q * 100:g}{suffix}": v * scale for q, v in zip(qs, got, strict=True)}


def _interpolate(ordered: Sequence[float], q: float) -> float:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile: q must be between 0 and 1, got {q}")
    if not ordered:
        raise ValueError("percentile: no values")
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)
