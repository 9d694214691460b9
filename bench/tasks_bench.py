"""The CR path of tasks (issue 7) on a real control plane: MeshTasks created through the
apiserver as fast as several creators can, dispatched by one operator process to
echo_worker agent processes, watched until Completed; then the operator's memory per
pending task (no agent can take them).

    .venv/bin/python bench/tasks_bench.py [--quick] [--profile] [--webhooks]

Everything runs on this machine over loopback: etcd + kube-apiserver (agent_mesh.devcluster,
TLS and RBAC as the tests run them), the operator (`python -m agent_mesh operator`, one
namespace, admission webhook off unless --webhooks), the agents (examples/echo_worker.py,
registered as external MeshAgents), and the creator and the watcher, each in a process of
its own. Latency is timed on one clock (CLOCK_MONOTONIC, shared by processes): from the
moment a creator sends the POST to the moment the watcher reads the event in which the
task's phase becomes Completed (creationTimestamp has only second resolution).

With --profile the operator is sampled by py-spy (on PATH, in .venv/bin or $PY_SPY) during
an extra burst after the measured ones. AGENT_MESH_BENCH_CPROFILE=FILE instead runs the
operator under cProfile (every figure then carries its overhead).

Prints a table and writes bench/results/tasks.json. Asserts nothing. Every process it
starts is stopped by pid at the end, also on failure; its temporary directory is removed.
The scenarios and what they share are in bench/tasks/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent_mesh.devcluster import Binaries, ControlPlane, ensure_binaries
from common import cli
from common.children import on_stop, stop_all
from common.output import write_result
from tasks.apiserver import ApiServer, apply_crds
from tasks.baseline import baseline_creates
from tasks.cr_path import cr_path
from tasks.pending import pending_memory
from tasks.processes import Fleet, child_running
from tasks.report import report
from tasks.runs import Bench


def source() -> dict[str, Any]:
    """Which agent_mesh was measured: its path, and the git state of its tree if any."""
    import agent_mesh

    path = Path(agent_mesh.__file__).resolve().parent
    out: dict[str, Any] = {"agent_mesh": str(path), "label": os.environ.get("BENCH_SOURCE")}
    git = ["git", "-C", str(path)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        out["git_head"] = head.stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True
        )
        out["uncommitted_files_in_package"] = len(changed.stdout.splitlines())
    return out


def main() -> int:
    parser = cli.BenchParser(__doc__)
    parser.size("--tasks", quick=200, full=2000, help="tasks per burst")
    parser.size("--pending", quick=500, full=5000, help="pending tasks")
    parser.add_argument("--agents", type=int, default=4, help="echo_worker processes (4)")
    parser.add_argument("--slots", type=int, default=10, help="maxConcurrentTasks per agent (10)")
    parser.add_argument("--creators", type=int, default=16, help="creates in flight (16)")
    parser.add_argument(
        "--paced",
        type=float,
        default=0.5,
        help="then offer this fraction of the burst's throughput, open loop (0.5; 0: skip)",
    )
    parser.add_argument("--paced-seconds", type=float, default=20.0, help="length of it (20)")
    parser.add_argument("--webhooks", action="store_true", help="keep the admission webhook on")
    parser.add_argument("--profile", action="store_true", help="an extra burst under py-spy")
    parser.add_argument(
        "--experiment",
        action="store_true",
        help="then the same runs with the operator's Kubernetes client at trust_env=False",
    )
    parser.add_argument("--timeout", type=float, default=900, help="per run, seconds (900)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse()

    binaries: Binaries = ensure_binaries()
    work = Path(tempfile.mkdtemp(prefix="agent-mesh-tasks-bench-"))
    bench = Bench(args, work)
    failed = True
    try:
        plane = ControlPlane(binaries, work / "plane")
        on_stop(plane.stop)
        plane.start()
        api = ApiServer(plane.server, str(plane.pki_dir))
        apiserver = child_running(binaries.kube_apiserver)
        etcd = child_running(binaries.etcd)
        assert apiserver is not None and etcd is not None
        fleet = Fleet(apiserver, etcd)
        apply_crds(api)
        started = time.monotonic()
        out: dict[str, Any] = {
            "machine": {
                "kubernetes": binaries.kubernetes_version,
                "etcd": binaries.etcd_version,
                "load_average_at_start": os.getloadavg(),
            },
            "quick": args.quick,
            "args": {k: v for k, v in vars(args).items() if k != "keep"},
            "cprofile": os.environ.get("AGENT_MESH_BENCH_CPROFILE"),
            "source": source(),
        }
        out["baseline_create"] = baseline_creates(bench, api, fleet)
        out["cr_path"] = cr_path(bench, api, plane, fleet)
        out["pending_memory"] = pending_memory(bench, api, plane, fleet)
        out["seconds"] = time.monotonic() - started
        report(out)
        write_result("tasks", out)
        failed = False
    finally:
        stop_all()  # before the directory they write in goes
        if failed or args.keep:
            print(
                f"logs kept in {work}" if args.keep else f"failed; logs were in {work}",
                file=sys.stderr,
            )
            if failed:
                for log in sorted(work.glob("*.log")):
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                    print(f"--- {log.name}\n{tail}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    cli.run(main)
