"""The `agent-mesh` command: operator, CRDs, the local control plane and the demo."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from agent_mesh import __version__

EXIT_FAILURE = 1
EXIT_USAGE = 2
OPERATOR_EXTRA: Final = {
    "kopf": "kopf",
    "kubernetes_asyncio": "kubernetes_asyncio",
    "pydantic-settings": "pydantic_settings",
    "PyYAML": "yaml",
}
"""The `operator` extra's distributions (pyproject.toml) and the module each provides:
every command needs them; the base distribution is only the agent SDK."""


class CliError(Exception):
    """A user-facing error: printed as one line, no traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _setting(
    parser: argparse.ArgumentParser,
    *flags: str,
    env: str,
    help: str,
    type: Callable[[str], Any] = str,
    **kwargs: Any,
) -> argparse.Action:
    """An option whose default comes from the environment variable `env` (named in its
    help): the flag wins, then the variable, then the default. A variable that does not
    parse is refused naming it and its rule, as a bad flag is, when its command runs."""
    action = kwargs.get("action")
    raw = os.environ.get(env, "")
    if raw:
        try:
            kwargs["default"] = _from_environment(env, raw, action, type, kwargs.get("choices"))
        except CliError as error:  # said only when this command runs
            parser.set_defaults(env_error=parser.get_default("env_error") or str(error))
    if action not in ("store_true", "store_false"):
        kwargs["type"] = type
    return parser.add_argument(*flags, help=f"{help} [env {env}]", **kwargs)


def _from_environment(
    env: str,
    raw: str,
    action: str | None,
    type: Callable[[str], Any],
    choices: Sequence[Any] | None,
) -> Any:
    if action in ("store_true", "store_false"):
        value = raw.strip().lower()
        if value not in _TRUE | _FALSE:
            raise CliError(f"{env}={raw}: must be true or false (or 1/0, yes/no, on/off)")
        return value in _TRUE  # the variable states the setting (dest)
    try:
        if action == "append":
            return [type(v.strip()) for v in raw.split(",") if v.strip()]
        parsed = type(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise CliError(f"{env}={raw}: {exc}") from exc
    if choices is not None and parsed not in choices:
        raise CliError(f"{env}={raw}: must be one of {', '.join(map(str, choices))}")
    return parsed


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, not {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agent-mesh", description="A Kubernetes operator for a mesh of AI agents."
    )
    parser.add_argument("--version", action="version", version=f"agent-mesh {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    op = sub.add_parser("operator", help="run the operator against the current cluster")
    op.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    op.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or in-cluster)")
    op.add_argument("--liveness-host")
    op.add_argument("--liveness-port", type=int)
    op.add_argument("--webhook-host")
    op.add_argument("--webhook-port", type=int)
    op.add_argument(
        "--no-webhooks",
        action="store_false",
        dest="webhooks",
        default=None,
        help="do not serve the admission webhook",
    )
    op.add_argument("--mesh-host", help="address of the mesh API (default 127.0.0.1)")
    op.add_argument("--mesh-port", type=int, help="port of the mesh API (default 8090)")
    op.add_argument(
        "--no-mesh-tls",
        action="store_false",
        dest="mesh_tls",
        default=None,
        help="serve the mesh API over plain http (only on a network that encrypts, e.g. the "
        "tailnet; docs/security.md)",
    )
    op.add_argument(
        "--operator-namespace",
        help="namespace of the signing keys and revocations (default agent-mesh-system)",
    )
    op.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    op.add_argument("--log-format", choices=["json", "text"])
    _name_operator_variables(op)

    crds = sub.add_parser("crds", help="print the CRDs generated from the API models")
    _setting(
        crds,
        "--write",
        action="store_true",
        env="AGENT_MESH_CRDS_WRITE",
        help="write them into --dir instead",
    )
    _setting(
        crds,
        "--dir",
        type=Path,
        default=Path("crds"),
        env="AGENT_MESH_CRDS_DIR",
        help="default: ./crds",
    )

    _user_commands(sub)

    dev = sub.add_parser("dev", help="a local cluster: control plane and, as root, a node")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    up = dev_sub.add_parser("up", help="build (first time) and start it in the background")
    _setting(
        up,
        "--port",
        type=int,
        env="AGENT_MESH_DEV_PORT",
        help="apiserver port (default: a free one)",
    )
    _setting(
        up,
        "--kubernetes-version",
        env="AGENT_MESH_KUBERNETES_VERSION",
        help="e.g. 1.36.3 (default: newest that builds)",
    )
    _setting(
        up,
        "--no-node",
        dest="node",
        action="store_false",
        env="AGENT_MESH_DEV_NODE",
        help="the control plane alone on 127.0.0.1 (about 3 s; no pods run); the variable "
        "says whether to run the node (false: no node)",
    )
    build = dev_sub.add_parser("build", help="build (first time) and print the binaries' paths")
    _setting(
        build,
        "--kubernetes-version",
        env="AGENT_MESH_KUBERNETES_VERSION",
        help="e.g. 1.36.3 (default: newest that builds)",
    )
    _setting(
        build,
        "--no-node",
        dest="node",
        action="store_false",
        env="AGENT_MESH_DEV_NODE",
        help="the control plane's binaries only; the variable says whether to build the "
        "node's (false: not)",
    )
    dev_sub.add_parser("down", help="stop it, delete its data, undo what the node changed")
    dev_sub.add_parser("kubeconfig", help="print the path of its admin kubeconfig")
    dev_sub.add_parser("status", help="say whether it runs, where, and which versions")

    demo = sub.add_parser("demo", help="local mesh: control plane, CRDs, operator, samples")
    _setting(
        demo,
        "--once",
        action="store_true",
        env="AGENT_MESH_DEMO_ONCE",
        help="print the mesh and tear everything down instead of waiting",
    )
    _setting(
        demo,
        "--samples",
        type=Path,
        env="AGENT_MESH_DEMO_SAMPLES",
        help="manifests to apply (default: config/samples, as installed)",
    )
    _setting(
        demo,
        "--timeout",
        type=_positive,
        default=120.0,
        env="AGENT_MESH_DEMO_TIMEOUT",
        help="seconds to wait for the agents' status (default 120)",
    )
    return parser


def _name_operator_variables(op: argparse.ArgumentParser) -> None:
    """The operator's settings are read by OperatorConfig (pydantic-settings) from
    AGENT_MESH_<FIELD>; say so in each flag's help."""
    for action in op._actions:
        if not action.option_strings or action.dest == "help":
            continue
        env = "KUBECONFIG" if action.dest == "kubeconfig" else f"AGENT_MESH_{action.dest.upper()}"
        action.help = f"{action.help or _flag_of(action.dest)} [env {env}]"


def _flag_of(dest: str) -> str:
    return _FLAG_OF.get(dest, "--" + dest.replace("_", "-"))


def _connection_settings(parser: argparse.ArgumentParser, *, all_namespaces: bool) -> None:
    _setting(
        parser,
        "--kubeconfig",
        env="KUBECONFIG",
        help="kubeconfig file (default: ~/.kube/config, else in-cluster)",
    )
    _setting(
        parser,
        "--namespace",
        "-n",
        env="AGENT_MESH_NAMESPACE",
        help="namespace (default: the kubeconfig context's, else default)",
    )
    if all_namespaces:
        _setting(
            parser,
            "--all-namespaces",
            "-A",
            action="store_true",
            env="AGENT_MESH_ALL_NAMESPACES",
            help="list every namespace (overrides --namespace)",
        )


def _user_commands(sub: Any) -> None:
    """submit, agents, tasks: the mesh as its users drive it, through the apiserver."""
    from agent_mesh.commands import EXIT_FAILED, EXIT_STILL_RUNNING, EXIT_TIMED_OUT

    submit = sub.add_parser(
        "submit",
        help="create a MeshTask, follow it, print its result",
        description="Create a MeshTask and wait for it. Exit code: 0 Completed, "
        f"{EXIT_FAILED} Failed, {EXIT_TIMED_OUT} TimedOut, {EXIT_STILL_RUNNING} still "
        f"running at --wait-timeout, {EXIT_USAGE} bad input, {EXIT_FAILURE} an API error, "
        "130 interrupted (the task keeps running).",
    )
    _connection_settings(submit, all_namespaces=False)
    _setting(
        submit,
        "--type",
        "-t",
        dest="task_type",
        env="AGENT_MESH_TASK_TYPE",
        help="spec.taskType (required unless --file sets it)",
    )
    _setting(
        submit,
        "--capability",
        "-c",
        action="append",
        dest="capabilities",
        env="AGENT_MESH_TASK_CAPABILITIES",
        help="a required capability (repeatable; the variable: comma-separated)",
    )
    _setting(submit, "--payload", "-p", env="AGENT_MESH_TASK_PAYLOAD", help="spec.payload as JSON")
    _setting(
        submit,
        "--payload-file",
        env="AGENT_MESH_TASK_PAYLOAD_FILE",
        help="spec.payload from a JSON or YAML file (- reads stdin)",
    )
    _setting(
        submit,
        "--file",
        "-f",
        dest="manifest",
        env="AGENT_MESH_TASK_FILE",
        help="a MeshTask manifest (YAML or JSON; - reads stdin); the flags override it",
    )
    _setting(
        submit,
        "--name",
        env="AGENT_MESH_TASK_NAME",
        help="metadata.name (default: generated from the type)",
    )
    _setting(
        submit,
        "--priority",
        choices=["low", "medium", "high", "critical"],
        env="AGENT_MESH_TASK_PRIORITY",
        help="spec.priority (default medium)",
    )
    _setting(
        submit,
        "--timeout-seconds",
        type=_whole,
        env="AGENT_MESH_TASK_TIMEOUT_SECONDS",
        help="spec.timeoutSeconds: limit of each attempt (default 300)",
    )
    _setting(
        submit,
        "--retries",
        type=_whole,
        env="AGENT_MESH_TASK_RETRIES",
        help="spec.retries (default 3)",
    )
    _setting(
        submit,
        "--agent",
        env="AGENT_MESH_TASK_AGENT",
        help="spec.agentSelector.agentRef: pin the task to this MeshAgent",
    )
    _setting(
        submit,
        "--label",
        "-l",
        action="append",
        dest="labels",
        type=_label,
        env="AGENT_MESH_TASK_LABELS",
        help="KEY=VALUE label on the MeshTask (repeatable; the variable: comma-separated)",
    )
    _setting(
        submit,
        "--no-wait",
        dest="wait",
        action="store_false",
        env="AGENT_MESH_WAIT",
        help="print the task's name and return once it is created; the variable says "
        "whether to wait (false: do not)",
    )
    _setting(
        submit,
        "--wait-timeout",
        type=_positive,
        default=600.0,
        env="AGENT_MESH_WAIT_TIMEOUT",
        help=f"seconds to wait for the end (default 600), then exit {EXIT_STILL_RUNNING}",
    )
    _setting(
        submit,
        "--quiet",
        "-q",
        action="store_true",
        env="AGENT_MESH_QUIET",
        help="no progress lines on stderr, only the result",
    )

    agents = sub.add_parser(
        "agents", help="discovery query: the agents, their type, health and capabilities"
    )
    _connection_settings(agents, all_namespaces=True)
    _setting(
        agents,
        "--capability",
        "-c",
        action="append",
        dest="capabilities",
        env="AGENT_MESH_AGENTS_CAPABILITIES",
        help="only agents holding this capability (repeatable: all of them; the variable: "
        "comma-separated)",
    )
    _setting(
        agents,
        "--type",
        "-t",
        dest="agent_type",
        env="AGENT_MESH_AGENTS_TYPE",
        help="only agents of this spec.agentType",
    )
    _setting(
        agents,
        "--health",
        choices=["pending", "healthy", "degraded", "unreachable"],
        env="AGENT_MESH_AGENTS_HEALTH",
        help="only agents in this health",
    )
    _output_setting(agents)

    tasks = sub.add_parser("tasks", help="the MeshTasks and their phases")
    _connection_settings(tasks, all_namespaces=True)
    _setting(
        tasks,
        "--phase",
        choices=["Pending", "Assigned", "Running", "Completed", "Failed", "TimedOut"],
        env="AGENT_MESH_TASKS_PHASE",
        help="only tasks in this phase",
    )
    _setting(
        tasks,
        "--type",
        "-t",
        dest="task_type",
        env="AGENT_MESH_TASKS_TYPE",
        help="only tasks of this spec.taskType",
    )
    _output_setting(tasks)


def _output_setting(parser: argparse.ArgumentParser) -> None:
    _setting(
        parser,
        "--output",
        "-o",
        choices=["table", "json"],
        default="table",
        env="AGENT_MESH_OUTPUT",
        help="table (default) or json (the objects as the apiserver returns them)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "env_error", None):  # an environment variable that does not parse
        print(f"agent-mesh: error: {args.env_error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        _require_operator_extra()
        return _dispatch(args)
    except CliError as exc:
        print(f"agent-mesh: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


def _require_operator_extra() -> None:
    """Say what to install, rather than fail on an import deep inside a command, when
    only the SDK is installed."""
    missing = [dist for dist, module in OPERATOR_EXTRA.items() if not _importable(module)]
    if missing:
        raise CliError(
            "the agent-mesh command runs the operator and its tools, which need "
            f"{', '.join(missing)} (not installed: this environment has only the agent "
            "SDK). Install them with: pip install 'agent-mesh[operator]'"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def _dispatch(args: argparse.Namespace) -> int:
    from agent_mesh.devcluster import BuildError, DevClusterError
    from agent_mesh.devcluster.kubeconfig import KubeconfigError
    from agent_mesh.devcluster.ports import PortInUseError

    try:
        if args.command == "operator":
            return _operator(args)
        if args.command == "crds":
            return _crds(args)
        if args.command == "dev":
            from agent_mesh.devcluster import commands as devcli

            return devcli.run(
                args.dev_command,
                port=getattr(args, "port", None),
                kubernetes_version=getattr(args, "kubernetes_version", None),
                node=getattr(args, "node", True),
            )
        if args.command in ("submit", "agents", "tasks"):
            return _user_command(args)
        if args.command == "demo":
            from agent_mesh.api.crdgen import crd_files
            from agent_mesh.testing import demo

            crds = list(crd_files().values())
            return demo.run(once=args.once, samples=args.samples, timeout=args.timeout, crds=crds)
    except (KubeconfigError, PortInUseError, ValueError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    except (BuildError, DevClusterError) as exc:
        raise CliError(str(exc)) from exc
    raise CliError(f"unknown command {args.command!r}", EXIT_USAGE)


def _user_command(args: argparse.Namespace) -> int:
    import asyncio

    from agent_mesh.commands import CommandError, listing, submit

    if args.kubeconfig:
        from agent_mesh.devcluster.kubeconfig import check_kubeconfig

        check_kubeconfig(args.kubeconfig, "--kubeconfig")
    try:
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
    except CommandError as exc:
        raise CliError(str(exc), exc.code) from exc


def _operator(args: argparse.Namespace) -> int:
    from pydantic_settings import SettingsError

    from agent_mesh.config import OperatorConfig
    from agent_mesh.devcluster.kubeconfig import check_kubeconfig, configured_kubeconfig
    from agent_mesh.devcluster.ports import check_port_free
    from agent_mesh.observability.logging import configure_logging

    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in OperatorConfig.model_fields and value is not None
    }
    flags = vars(args)

    def named(field: str) -> str:
        return _setting_name(field, flags, overrides)

    try:
        config = OperatorConfig(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = f"{named(str(first['loc'][0]))}: " if first["loc"] else ""
        raise CliError(f"{where}{first['msg']} (got {first.get('input')!r})", EXIT_USAGE) from exc
    except SettingsError as exc:  # an environment variable that does not parse at all
        found = re.search(r'field "(\w+)"', str(exc))
        where = named(found.group(1)) if found else "the environment"
        raise CliError(
            f"{where}: not JSON ({exc.__cause__ or exc}); a list is written as JSON, "
            'for example ["a", "b"]',
            EXIT_USAGE,
        ) from exc
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = str(check_kubeconfig(args.kubeconfig, "--kubeconfig"))
    elif (path := configured_kubeconfig()) is not None:
        check_kubeconfig(path, "KUBECONFIG")
    elif (
        "KUBERNETES_SERVICE_HOST" not in os.environ
        and not Path("~/.kube/config").expanduser().is_file()
    ):
        raise CliError(
            "no cluster: set KUBECONFIG or --kubeconfig (try `agent-mesh dev up`)", EXIT_USAGE
        )
    check_port_free(config.liveness_host, config.liveness_port, named("liveness_port"))
    if config.webhooks:
        check_port_free(config.webhook_host, config.webhook_port, named("webhook_port"))
    check_port_free(config.mesh_host, config.mesh_port, named("mesh_port"))
    configure_logging(config.log_level, config.log_format)
    from agent_mesh.runtime import manager  # kopf is heavy: import it only to actually run

    manager.run(config)
    return 0


_FLAG_OF: Final = {
    "namespaces": "--namespace",
    "webhooks": "--no-webhooks",
    "mesh_tls": "--no-mesh-tls",
}
"""Operator settings whose flag is not `--` + the field name with dashes."""


def _setting_name(field: str, flags: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    """What the user calls setting `field`: its flag when given on the command line (or
    when it has a flag and the environment does not set it either), otherwise its
    environment variable, e.g. AGENT_MESH_TLS_EXTRA_SANS, which has no flag."""
    flag = _FLAG_OF.get(field, "--" + field.replace("_", "-"))
    env = f"AGENT_MESH_{field.upper()}"
    if field in given or (field in flags and env not in os.environ):
        return flag
    return env


def _crds(args: argparse.Namespace) -> int:
    from agent_mesh.api.crdgen import crd_files, write_crds

    if args.write:
        if args.dir.exists() and not args.dir.is_dir():
            raise CliError(f"--dir {args.dir}: exists and is not a directory", EXIT_USAGE)
        for path in write_crds(args.dir):
            print(path)
        return 0
    files = crd_files()
    sys.stdout.write("---\n".join(files[name] for name in sorted(files)))
    return 0
