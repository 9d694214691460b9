"""What a benchmark shows: tables on stdout, and its figures as JSON in
bench/results/{name}.json (the one writer: every file says which benchmark, on what
machine, when, and how its percentiles are defined)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results"
PERCENTILES = (
    "linear interpolation between closest ranks, position q*(n-1) of the sorted sample "
    '(statistics.quantiles(method="inclusive"); p50 is the median)'
)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(),
    }


def result_path(name: str) -> Path:
    """bench/results/`name` (the folder created): for a file beside the JSON (profiles)."""
    RESULTS.mkdir(exist_ok=True)
    return RESULTS / name


def write_result(benchmark: str, figures: dict[str, Any]) -> Path:
    """`figures` as bench/results/{benchmark}.json, with the benchmark's name, the
    machine (with what `figures` says of it under "machine"), the time and the percentile
    definition in front; says where it wrote."""
    rest = {k: v for k, v in figures.items() if k != "machine"}
    out = {
        "benchmark": benchmark,
        "machine": {**machine(), **figures.get("machine", {})},
        "when": dt.datetime.now(dt.UTC).isoformat(),
        "percentiles": PERCENTILES,
        **rest,
    }
    path = result_path(f"{benchmark}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return path


@dataclass(frozen=True)
class Column:
    """A table column: its title, its width, how its values are formatted (a format
    spec such as ",.0f"; None shows as "-") and aligned, and where a row (a mapping)
    holds its value: a key, or a function of the row."""

    title: str
    width: int
    spec: str = ""
    key: str | Callable[[Mapping[str, Any]], object] | None = None
    align: str = ">"

    def value(self, row: Mapping[str, Any]) -> object:
        if self.key is None:
            return None
        return self.key(row) if callable(self.key) else row.get(self.key)

    def cell(self, value: object) -> str:
        text = "-" if value is None else format(value, self.spec)
        return format(text, f"{self.align}{self.width}")

    def head(self) -> str:
        return format(self.title, f"{self.align}{self.width}")


def table(
    columns: Sequence[Column],
    rows: Iterable[Mapping[str, Any] | Sequence[object]],
    title: str = "",
) -> str:
    """A title line (if any), the column titles, then a line a row: a mapping (each
    column takes its value by its key) or a sequence of values (in column order)."""
    lines = [title] if title else []
    lines.append(" ".join(c.head() for c in columns).rstrip())
    for row in rows:
        if isinstance(row, Mapping):
            values: Sequence[object] = [c.value(row) for c in columns]
        else:
            values = row
        lines.append(" ".join(c.cell(v) for c, v in zip(columns, values, strict=True)).rstrip())
    return "\n".join(lines)


def label(
    width: int, title: str = "", key: str | Callable[[Mapping[str, Any]], object] | None = None
) -> Column:
    """The first column: a row's name, left-aligned."""
    return Column(title, width, key=key, align="<")


def fleet_label(title: str, then: str | None = None, width: int = 34) -> Column:
    """The first column of a row per fleet size: "  1,000 agents", then the row's `then`
    field if given."""

    def name(row: Mapping[str, Any]) -> str:
        size = f"{row['agents']:>7,} agents"
        return size if then is None else f"{size} {row[then]}"

    return label(width, title, name)
