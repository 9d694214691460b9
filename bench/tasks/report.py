"""The tasks bench's tables."""

from __future__ import annotations

import os
from typing import Any

from common.output import Column, label, table


def report(out: dict[str, Any]) -> None:
    base, cr, mem = out["baseline_create"], out["cr_path"], out["pending_memory"]
    b = cr["burst"]
    print(
        f"\nCR path: {cr['agents']} echo agents x {cr['slots_per_agent']} slots, webhooks "
        f"{'on' if cr['webhooks'] else 'off'}, {b['creators_in_flight']} creates in flight"
    )
    rows: list[tuple[str, dict[str, Any]]] = [("baseline: creates, no operator", base)]
    runs = [("", cr)]
    if cr.get("experiment_no_trust_env"):
        runs.append(("experiment trust_env=False: ", cr["experiment_no_trust_env"]))
    for name, figures in runs:
        rows.append((f"{name}burst", figures["burst"]))
        if figures["paced"]:
            rate = figures["paced"]["offered_rate_per_s"]
            rows.append((f"{name}paced at {rate:.0f}/s", figures["paced"]))
    seconds = ".3f"
    print(
        table(
            [
                label(36, "run", "name"),
                Column("tasks", 6, ",", "tasks"),
                Column("create/s", 9, ".0f", "create_rate_per_s"),
                Column("done/s", 7, ".1f", "throughput_per_s"),
                Column("p50 s", 7, seconds, "latency_p50_s"),
                Column("p99 s", 7, seconds, "latency_p99_s"),
                Column("max s", 7, seconds, "latency_max_s"),
                Column("writes", 6, ".2f", "status_writes_per_task_mean"),
            ],
            [{"name": name, **r} for name, r in rows],
        )
    )
    print("targets: >= 200 tasks/s, p99 <= 1 s (create POST sent -> watch shows Completed)")
    patch, event = base["status_patch"], base["event_create"]
    create_ms = base["cpu_ms_per_task"]["kube-apiserver"]
    print(
        f"\napiserver CPU per request, no operator: create {create_ms:.2f} ms, status patch "
        f"{patch['apiserver_cpu_ms']:.2f} ms ({patch['per_second']:.0f}/s; phase only "
        f"{base['status_patch_phase_only']['apiserver_cpu_ms']:.2f} ms), Event create "
        f"{event['apiserver_cpu_ms']:.2f} ms ({event['per_second']:.0f}/s)"
    )
    events_per_task = sum(cr["events_per_task"].values())
    expected = (
        create_ms
        + b["status_writes_per_task_mean"] * patch["apiserver_cpu_ms"]
        + events_per_task * event["apiserver_cpu_ms"]
    )
    print(
        f"  a burst task = 1 create + {b['status_writes_per_task_mean']:.2f} status writes + "
        f"{events_per_task:.2f} Events = {expected:.1f} ms if priced so; measured "
        f"{b['cpu_ms_per_task']['kube-apiserver']:.1f} ms (the rest: watches, reads, load)"
    )
    for name, figures in runs:
        burst = figures["burst"]
        cpu = burst["cpu_ms_per_task"]
        print(
            f"\n{name or ''}CPU ms per task in the burst: "
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        )
        for run_name in ("burst", "paced"):
            r = figures.get(run_name)
            if r and r.get("stages_ms"):
                print(
                    f"  {run_name} stages p50 / p99 ms: create -> watch ADDED "
                    f"{r['create_to_watch_added_p50_ms']:.0f} / "
                    f"{r['create_to_watch_added_p99_ms']:.0f}, "
                    + ", ".join(
                        f"{k.replace('_', ' ')} {v['p50']:.0f} / {v['p99']:.0f}"
                        for k, v in r["stages_ms"].items()
                    )
                )
        print(
            f"  dispatches per task {burst['dispatches_per_task']:.2f}, completions counted per "
            f"task {burst['completions_counted_per_task']:.2f} (above 1: done twice)"
        )
        print(
            f"  CPU the run used per second of it: {burst['cpu_share_of_machine']:.0%} of "
            f"{os.cpu_count()} CPUs (other processes: {burst['others_cpu_share_of_machine']:.0%}) "
            f"over "
            f"{burst['window_s']:.1f} s; status writes per task: {burst['status_writes_per_task']}"
        )
    print(f"Kubernetes Events per task: {cr['events_per_task']}")
    print(f"operator log lines per task: {b['operator_log_lines_per_task']:.2f}")
    traced = mem["traced_operator"]
    print(f"\npending tasks (no capable agent), {mem['tasks']:,} tasks; target <= 5 KB per task")
    print(f"  operator RSS growth per task          {mem['rss_bytes_per_task']:>10,.0f} B")
    print(
        f"  of which the second half, per task    {mem['rss_bytes_per_task_second_half']:>10,.0f} B"
    )
    print(
        f"  Python heap kept per task (traced, {traced['tasks']:,} tasks) "
        f"{traced['traced_bytes_per_task']:>8,.0f} B, allocated by:"
    )
    for k, v in list(traced["by_package"].items())[:8]:
        print(f"    {k:<40} {v:>10,.0f} B")
    for k, v in mem["estimated_bytes_per_task"].items():
        print(f"  {k:<52} {v if v is None else f'{v:,.0f} B':>12}")
    print(f"  Assigned reasons on the pending tasks: {mem['assigned_reasons']}")
    for name, figures in runs:
        prof = figures.get("profile")
        if prof and "self_by_area" in prof:
            print(f"\n{name}operator profile (py-spy, {prof['samples']} busy samples), self time:")
            for k, v in list(prof["self_by_area"].items())[:12]:
                print(f"  {v:>6.1%}  {k}")
