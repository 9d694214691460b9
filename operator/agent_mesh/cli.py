"""The `agent-mesh` command: operator, CRDs, the local control plane and the demo."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from agent_mesh import __version__
from agent_mesh.commands.options import positive, setting

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
    setting(
        crds,
        "--write",
        action="store_true",
        env="AGENT_MESH_CRDS_WRITE",
        help="write them into --dir instead",
    )
    setting(
        crds,
        "--dir",
        type=Path,
        default=Path("crds"),
        env="AGENT_MESH_CRDS_DIR",
        help="default: ./crds",
    )

    from agent_mesh.commands.parsers import add_user_commands

    add_user_commands(sub)

    manifests = sub.add_parser(
        "manifests", help="render the Helm chart into kustomize bases (config/crd, rbac, ...)"
    )
    setting(
        manifests,
        "--write",
        action="store_true",
        env="AGENT_MESH_MANIFESTS_WRITE",
        help="write them into --dir",
    )
    setting(
        manifests,
        "--dir",
        type=Path,
        default=Path("config"),
        env="AGENT_MESH_MANIFESTS_DIR",
        help="default: ./config",
    )
    setting(
        manifests,
        "--chart",
        type=Path,
        default=Path("charts/agent-mesh"),
        env="AGENT_MESH_MANIFESTS_CHART",
        help="default: ./charts/agent-mesh",
    )
    setting(
        manifests,
        "--values-doc",
        type=Path,
        default=Path("docs/helm.md"),
        env="AGENT_MESH_MANIFESTS_VALUES_DOC",
        help="the doc whose marked values table --write regenerates from the chart's "
        "values.schema.json and values.yaml (default: ./docs/helm.md)",
    )

    dev = sub.add_parser("dev", help="a local cluster: control plane and, as root, a node")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    up = dev_sub.add_parser("up", help="build (first time) and start it in the background")
    setting(
        up,
        "--port",
        type=int,
        env="AGENT_MESH_DEV_PORT",
        help="apiserver port (default: a free one)",
    )
    setting(
        up,
        "--kubernetes-version",
        env="AGENT_MESH_KUBERNETES_VERSION",
        help="e.g. 1.36.3 (default: newest that builds)",
    )
    setting(
        up,
        "--no-node",
        dest="node",
        action="store_false",
        env="AGENT_MESH_DEV_NODE",
        help="the control plane alone on 127.0.0.1 (about 3 s; no pods run); the variable "
        "says whether to run the node (false: no node)",
    )
    build = dev_sub.add_parser("build", help="build (first time) and print the binaries' paths")
    setting(
        build,
        "--kubernetes-version",
        env="AGENT_MESH_KUBERNETES_VERSION",
        help="e.g. 1.36.3 (default: newest that builds)",
    )
    setting(
        build,
        "--no-node",
        dest="node",
        action="store_false",
        env="AGENT_MESH_DEV_NODE",
        help="the control plane's binaries only; the variable says whether to build the "
        "node's (false: not)",
    )
    setting(
        build,
        "--tailnet",
        action="store_true",
        env="AGENT_MESH_DEV_TAILNET",
        help="also tailscaled, tailscale, containerboot and headscale (the tailscale tests' "
        "local tailnet; about 10 minutes cold)",
    )
    dev_sub.add_parser("down", help="stop it, delete its data, undo what the node changed")
    dev_sub.add_parser("kubeconfig", help="print the path of its admin kubeconfig")
    dev_sub.add_parser("status", help="say whether it runs, where, and which versions")

    demo = sub.add_parser("demo", help="local mesh: control plane, CRDs, operator, samples")
    setting(
        demo,
        "--once",
        action="store_true",
        env="AGENT_MESH_DEMO_ONCE",
        help="print the mesh and tear everything down instead of waiting",
    )
    setting(
        demo,
        "--samples",
        type=Path,
        env="AGENT_MESH_DEMO_SAMPLES",
        help="manifests to apply (default: config/samples, as installed)",
    )
    setting(
        demo,
        "--timeout",
        type=positive,
        default=120.0,
        env="AGENT_MESH_DEMO_TIMEOUT",
        help="seconds to wait for each step: the agents' status, the task (default 120)",
    )
    setting(
        demo,
        "--processes",
        action="store_true",
        env="AGENT_MESH_DEMO_PROCESSES",
        help="the quick process mode: the operator and the example agents as processes of "
        "this machine, even where the chart mode (Helm chart, agents as pods) could run",
    )
    setting(
        demo,
        "--image",
        env="AGENT_MESH_DEMO_IMAGE",
        help="the project's image (repository:tag) the cluster in KUBECONFIG can pull: the "
        "chart mode there (the local node uses its own)",
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
    from agent_mesh.devcluster.manifests import ManifestError
    from agent_mesh.devcluster.ports import PortInUseError

    try:
        if args.command == "operator":
            return _operator(args)
        if args.command == "crds":
            return _crds(args)
        if args.command == "manifests":
            return _manifests(args)
        if args.command == "dev":
            from agent_mesh.devcluster import commands as devcli

            return devcli.run(
                args.dev_command,
                port=getattr(args, "port", None),
                kubernetes_version=getattr(args, "kubernetes_version", None),
                node=getattr(args, "node", True),
                tailnet=getattr(args, "tailnet", False),
            )
        if args.command in ("submit", "agents", "tasks"):
            return _user_command(args)
        if args.command == "demo":
            from agent_mesh.api.crdgen import crd_files
            from agent_mesh.testing import demo

            crds = list(crd_files().values())
            return demo.run(
                once=args.once,
                samples=args.samples,
                timeout=args.timeout,
                crds=crds,
                processes=args.processes,
                image=args.image,
            )
    except (KubeconfigError, PortInUseError, ValueError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    except (BuildError, DevClusterError, ManifestError) as exc:
        raise CliError(str(exc)) from exc
    raise CliError(f"unknown command {args.command!r}", EXIT_USAGE)


def _user_command(args: argparse.Namespace) -> int:
    from agent_mesh.commands import CommandError
    from agent_mesh.commands.run import run
    from agent_mesh.devcluster.kubeconfig import check_kubeconfig

    if args.kubeconfig:
        check_kubeconfig(args.kubeconfig, "--kubeconfig")
    try:
        return run(args)
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


def _manifests(args: argparse.Namespace) -> int:
    from agent_mesh.devcluster import manifests, values_doc
    from agent_mesh.devcluster.binaries import ensure_helm

    if not (args.chart / "Chart.yaml").is_file():
        raise CliError(f"--chart {args.chart}: no Chart.yaml there", EXIT_USAGE)
    if args.write:  # the doc first: a refusal changes nothing
        if not args.values_doc.is_file():
            raise CliError(f"--values-doc {args.values_doc}: no such file", EXIT_USAGE)
        try:
            values_doc.write(args.chart, args.values_doc)
        except values_doc.ValuesDocError as exc:
            raise CliError(f"--values-doc {exc}", EXIT_USAGE) from exc
    files = manifests.kustomize_files(manifests.render_chart(ensure_helm(), args.chart))
    if args.write:
        for path in manifests.write_kustomize(files, args.dir):
            print(path)
        print(args.values_doc)
        return 0
    sys.stdout.write("".join(f"# {name}\n{text}" for name, text in sorted(files.items())))
    return 0


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
