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

    crds = sub.add_parser("crds", help="print the CRDs generated from the API models")
    crds.add_argument("--write", action="store_true", help="write them into --dir instead")
    crds.add_argument("--dir", type=Path, default=Path("crds"), help="default: ./crds")

    dev = sub.add_parser("dev", help="a local cluster: control plane and, as root, a node")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    up = dev_sub.add_parser("up", help="build (first time) and start it in the background")
    up.add_argument("--port", type=int, help="apiserver port (default: a free one)")
    up.add_argument("--kubernetes-version", help="e.g. 1.36.3 (default: newest that builds)")
    up.add_argument(
        "--no-node",
        dest="node",
        action="store_false",
        help="the control plane alone on 127.0.0.1 (about 3 s; no pods run)",
    )
    build = dev_sub.add_parser("build", help="build (first time) and print the binaries' paths")
    build.add_argument("--kubernetes-version", help="e.g. 1.36.3 (default: newest that builds)")
    build.add_argument(
        "--no-node", dest="node", action="store_false", help="the control plane's binaries only"
    )
    build.add_argument(
        "--tailnet",
        action="store_true",
        help="also tailscaled, tailscale, containerboot and headscale (the tailscale tests' "
        "local tailnet; about 10 minutes cold)",
    )
    dev_sub.add_parser("down", help="stop it, delete its data, undo what the node changed")
    dev_sub.add_parser("kubeconfig", help="print the path of its admin kubeconfig")
    dev_sub.add_parser("status", help="say whether it runs, where, and which versions")

    demo = sub.add_parser("demo", help="local mesh: control plane, CRDs, operator, samples")
    demo.add_argument(
        "--once",
        action="store_true",
        help="print the mesh and tear everything down instead of waiting",
    )
    demo.add_argument(
        "--samples", type=Path, help="manifests to apply (default: config/samples, as installed)"
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the agents' status (default 120)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
                tailnet=getattr(args, "tailnet", False),
            )
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
