"""Baseline: MeshTasks created in a namespace no operator watches, then one status merge
patch (shaped like the operator's final write) and one Event per task: what each request
costs the apiserver and etcd, so that a CR-path task can be priced."""

from __future__ import annotations

import json
from typing import Any

from .apiserver import (
    GROUP,
    PLURAL,
    VERSION,
    ApiServer,
    completed_status,
    create_namespace,
    delete_tasks,
    event_body,
)
from .clients import NO_STATUS
from .processes import Fleet
from .runs import Bench, apiserver_cost, echo_spec, run


def baseline_creates(bench: Bench, api: ApiServer, fleet: Fleet) -> dict[str, Any]:
    """MeshTasks created in a namespace no operator watches: the apiserver alone."""
    namespace = create_namespace(api, "bench-baseline")
    count = min(bench.args.tasks, 1000)
    run(  # warm-up: connections, the CRD's schema and storage
        api,
        fleet,
        namespace,
        "basewarm-",
        50,
        spec=echo_spec(),
        concurrency=bench.args.creators,
        done_phases=frozenset({NO_STATUS}),
        timeout=120,
        linger=0.2,
    )
    figures = run(
        api,
        fleet,
        namespace,
        "base-",
        count,
        spec=echo_spec(),
        concurrency=bench.args.creators,
        done_phases=frozenset({NO_STATUS}),  # seen ADDED, without status
        timeout=bench.args.timeout,
        linger=0.5,
    )
    tasks_path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    concurrency = bench.args.creators
    patches = apiserver_cost(
        api,
        fleet,
        [
            (
                "PATCH",
                f"{tasks_path}/base-{i:06d}/status",
                json.dumps({"status": completed_status(i)}),
            )
            for i in range(count)
        ],
        concurrency,
    )
    small = apiserver_cost(  # the same objects again, one field: is it the size?
        api,
        fleet,
        [
            ("PATCH", f"{tasks_path}/base-{i:06d}/status", '{"status": {"phase": "Running"}}')
            for i in range(count)
        ],
        concurrency,
    )
    events = apiserver_cost(
        api,
        fleet,
        [
            (
                "POST",
                f"/api/v1/namespaces/{namespace}/events",
                json.dumps(event_body(namespace, f"base-{i:06d}", i)),
            )
            for i in range(count)
        ],
        concurrency,
    )
    delete_tasks(api, namespace)
    keep = (
        "tasks",
        "create_rate_per_s",
        "create_call_p50_ms",
        "create_call_p99_ms",
        "create_to_watch_added_p50_ms",
        "create_to_watch_added_p99_ms",
        "cpu_ms_per_task",
        "create_errors",
    )
    return {
        **{k: figures[k] for k in keep},
        "status_patch": patches,
        "status_patch_phase_only": small,
        "event_create": events,
    }
