"""The operator under py-spy during one more burst: self and inclusive time by package
and function, from py-spy's collapsed stacks."""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.children import Started, start
from common.harness import ROOT
from common.output import result_path

from .apiserver import ApiServer
from .processes import Fleet
from .runs import Bench, echo_spec, run


def py_spy() -> str | None:
    for candidate in (os.environ.get("PY_SPY"), shutil.which("py-spy"), ROOT / ".venv/bin/py-spy"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def area(frame: str) -> str:
    """Which library or module a py-spy frame ("fn (path:line)") belongs to."""
    m = re.search(r"\((.*?)(?::\d+)?\)$", frame)
    path = m.group(1) if m else frame
    if "agent_mesh/" in path:
        return "agent_mesh." + path.split("agent_mesh/", 1)[1].removesuffix(".py").replace("/", ".")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    m = re.search(r"python3\.\d+/(.+)$", path)
    if m:
        return "stdlib " + m.group(1).split("/", 1)[0].removesuffix(".py")
    return path


def summarize_profile(raw: Path, top: int = 20) -> dict[str, Any]:
    """Self time by area and by function, and inclusive time of agent_mesh functions, from
    py-spy's collapsed stacks (idle samples excluded)."""
    self_area: collections.Counter[str] = collections.Counter()
    self_fn: collections.Counter[str] = collections.Counter()
    incl_fn: collections.Counter[str] = collections.Counter()
    incl_area: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_fn[frames[-1]] += count
        self_area[area(frames[-1])] += count
        for name in set(frames):
            incl_fn[name] += count
        for a in {area(f) for f in frames}:
            incl_area[a] += count

    def share(
        c: collections.Counter[str], keep: Callable[[str], bool] = lambda _: True
    ) -> dict[str, float]:
        return {k: v / max(1, total) for k, v in c.most_common() if keep(k)}

    return {
        "samples": total,
        "self_by_area": dict(list(share(self_area).items())[:top]),
        "self_by_function": dict(list(share(self_fn).items())[:top]),
        "inclusive_by_area": dict(list(share(incl_area).items())[:top]),
        "inclusive_agent_mesh": dict(
            list(share(incl_fn, lambda f: "agent_mesh/" in f).items())[:top]
        ),
    }


def profiled_burst(
    bench: Bench, api: ApiServer, fleet: Fleet, namespace: str, prefix: str
) -> dict[str, Any]:
    """One more burst with py-spy sampling the operator; its collapsed stacks are copied
    to bench/results/tasks_profile_operator{prefix}.txt."""
    tool = py_spy()
    if tool is None or fleet.operator is None:
        return {"skipped": "no py-spy (PATH, .venv/bin or $PY_SPY); see AGENT_MESH_BENCH_CPROFILE"}
    raw = bench.work / f"operator{prefix}.pyspy.txt"
    spies: list[Started] = []
    pid = fleet.operator.pid

    def attach() -> None:
        argv = [tool, "record", "--pid", str(pid), "--rate", "100", "--format", "raw"]
        argv += ["--full-filenames", "--nonblocking", "--output", str(raw)]
        spies.append(start("py-spy", argv, bench.work / "py-spy.log"))
        time.sleep(1.0)  # py-spy attaches

    figures = run(
        api,
        fleet,
        namespace,
        f"{prefix}prof-",
        bench.args.tasks,
        spec=echo_spec(),
        concurrency=bench.args.creators,
        timeout=bench.args.timeout,
        on_start=attach,
    )
    for spy in spies:
        spy.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.process.wait(30)
        except subprocess.TimeoutExpired:
            spy.stop()
    out: dict[str, Any] = {
        "tasks": figures["tasks"],
        "throughput_per_s_while_sampled": figures["throughput_per_s"],
    }
    if raw.exists():
        out.update(summarize_profile(raw))
        shutil.copy(raw, result_path(f"tasks_profile_operator{prefix}.txt"))
    else:
        out["error"] = (bench.work / "py-spy.log").read_text(errors="replace")[-2000:]
    return out
