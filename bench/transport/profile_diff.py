"""Both ends of ours and of raw under cProfile (separate runs, not the measured ones):
own time per message, ours against raw, the functions that differ most."""

from __future__ import annotations

import asyncio
import pstats
from pathlib import Path
from typing import Any

from common.children import Child
from common.harness import Mesh, listen_ports, local_url
from common.load import per_second, sequential
from common.output import result_path
from common.profiling import profiled

from .parts import RECEIVER, Clients, serve_agents, serve_raw


def own_times(path: Path) -> dict[str, tuple[int, float]]:
    """Function → (calls, own time in s) from a cProfile dump; idle waits left out."""
    entries: dict[Any, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    out: dict[str, tuple[int, float]] = {}
    for (filename, line, function), (_, calls, tottime, _, _) in entries.items():
        if "poll' of 'select" in function:
            continue  # the event loop waiting for the other side
        where = "/".join(Path(filename).parts[-2:]) if filename != "~" else ""
        out[f"{where}:{line}({function})"] = (calls, tottime)
    return out


def profile_diff(ours: Path, raw: Path, messages: int, count: int) -> dict[str, Any]:
    """Own time per message under cProfile, ours against raw, largest differences first.
    cProfile inflates small calls: read the ranking and the shares, not the µs."""
    a, b = own_times(ours), own_times(raw)
    rows: list[dict[str, Any]] = []
    for function in set(a) | set(b):
        calls, mine = a.get(function, (0, 0.0))
        base_calls, theirs = b.get(function, (0, 0.0))
        rows.append(
            {
                "function": function,
                "ours_calls_per_msg": calls / messages,
                "raw_calls_per_msg": base_calls / messages,
                "ours_us": mine / messages * 1e6,
                "raw_us": theirs / messages * 1e6,
                "extra_us": (mine - theirs) / messages * 1e6,
            }
        )
    rows.sort(key=lambda r: r["extra_us"], reverse=True)
    return {
        "ours_total_us": sum(t for _, t in a.values()) / messages * 1e6,
        "raw_total_us": sum(t for _, t in b.values()) / messages * 1e6,
        "largest_extra": rows[:count],
    }


async def drive(mesh: Mesh, url: str, name: str, count: int, out: Path) -> None:
    clients = Clients(mesh, url, url)
    await clients.start()
    call = clients.ours if name == "ours" else clients.raw
    try:
        await sequential(call, 200)  # the server's profile includes these; the client's not
        with profiled(out):
            await sequential(call, count // 2)
            await per_second(call, count // 2, 64)
    finally:
        await clients.close()


def run(mesh: Mesh, count: int) -> dict[str, Any]:
    """cProfile dumps bench/results/transport_profile_{ours,raw}_{server,client}.prof."""
    prof = {
        (name, side): result_path(f"transport_profile_{name}_{side}.prof")
        for name in ("ours", "raw")
        for side in ("server", "client")
    }
    for name in ("ours", "raw"):
        (port,) = listen_ports(1)
        server_prof = prof[name, "server"]
        if name == "ours":
            server = Child("profiled agent", serve_agents, mesh, [RECEIVER], [port], server_prof)
        else:
            server = Child("profiled raw", serve_raw, [port], server_prof)
        with server:
            asyncio.run(drive(mesh, local_url(port), name, count, prof[name, "client"]))
    server_messages = count + 200  # the servers' profiles include the warm-up
    return {
        "messages": count,
        "server": profile_diff(prof["ours", "server"], prof["raw", "server"], server_messages, 40),
        "client": profile_diff(prof["ours", "client"], prof["raw", "client"], count, 40),
    }


def report(prof: dict[str, Any]) -> None:
    for side, title in (("client", "caller (Transport)"), ("server", "agent (SDK Agent)")):
        diff = prof[side]
        print(
            f"profile, {title}: own time per message under cProfile, ours"
            f" {diff['ours_total_us']:.0f} µs, raw {diff['raw_total_us']:.0f} µs;"
            " largest differences:"
        )
        print(f"  {'extra µs':>8} {'calls':>6}  function")
        for row in diff["largest_extra"][:15]:
            extra, calls = row["extra_us"], row["ours_calls_per_msg"]
            print(f"  {extra:>8.1f} {calls:>6.1f}  {row['function']}")
        print()
