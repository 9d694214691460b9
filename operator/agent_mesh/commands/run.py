"""Run `agent-mesh submit`, `agents` or `tasks` from parsed arguments."""

from __future__ import annotations

import argparse
import asyncio

from agent_mesh.commands import listing, submit


def run(args: argparse.Namespace) -> int:
    """Run the command `args` names; CommandError for the user."""
    if args.command == "submit":
        request = submit.TaskRequest(
            task_type=args.task_type,
            capabilities=args.capabilities or (),
            payload=args.payload,
            payload_file=args.payload_file,
            manifest=args.manifest,
            name=args.name,
            namespace=args.namespace,
            priority=args.priority,
            timeout_seconds=args.timeout_seconds,
            retries=args.retries,
            agent=args.agent,
            labels=dict(args.labels or ()),
        )
        return asyncio.run(
            submit.submit(
                request,
                kubeconfig=args.kubeconfig,
                wait=args.wait,
                wait_timeout=args.wait_timeout,
                quiet=args.quiet,
            )
        )
    if args.command == "agents":
        return asyncio.run(
            listing.agents(
                kubeconfig=args.kubeconfig,
                namespace=args.namespace,
                all_namespaces=args.all_namespaces,
                capabilities=args.capabilities or (),
                agent_type=args.agent_type,
                health=args.health,
                output=args.output,
            )
        )
    return asyncio.run(
        listing.tasks(
            kubeconfig=args.kubeconfig,
            namespace=args.namespace,
            all_namespaces=args.all_namespaces,
            phase=args.phase,
            task_type=args.task_type,
            output=args.output,
        )
    )
