"""The Kubernetes API client of the user commands: the kubeconfig (or the pod's own
account), the namespace its context names, and API errors as one line."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION
from agent_mesh.commands import EXIT_USAGE, CommandError

__all__ = ["GROUP", "VERSION", "Connection", "api_error", "connect", "failures", "unreachable"]


@dataclass
class Connection:
    api: client.ApiClient
    namespace: str
    """The namespace the kubeconfig's context names (`default` when it names none)."""

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)


async def connect(kubeconfig: str | None) -> Connection:
    """A client for the cluster of `kubeconfig` (default: $KUBECONFIG, ~/.kube/config,
    then in-cluster)."""
    path = kubeconfig_path(kubeconfig)
    if path is None:
        if "KUBERNETES_SERVICE_HOST" in os.environ:
            settings = client.Configuration()
            config.load_incluster_config(client_configuration=settings)  # type: ignore[no-untyped-call]
            return Connection(client.ApiClient(settings), _pod_namespace())
        raise CommandError(
            "no cluster: set KUBECONFIG or --kubeconfig (try `agent-mesh dev up`)", EXIT_USAGE
        )
    settings = client.Configuration()
    try:
        _, active = config.list_kube_config_contexts(path)
        await config.load_kube_config(
            config_file=path, client_configuration=settings, persist_config=False
        )
    except (OSError, config.ConfigException, ValueError, TypeError) as exc:
        raise CommandError(f"kubeconfig {path}: {exc}", EXIT_USAGE) from exc
    namespace = ((active or {}).get("context") or {}).get("namespace") or "default"
    return Connection(client.ApiClient(settings), namespace)


def kubeconfig_path(flag: str | None) -> str | None:
    """--kubeconfig, else the first file of $KUBECONFIG, else ~/.kube/config if it exists."""
    path = flag or (os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None)
    if path is not None:
        return os.path.expanduser(path)
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.is_file() else None


def _pod_namespace() -> str:
    try:
        return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    except OSError:
        return "default"


def api_error(doing: str, error: ApiException) -> CommandError:
    """`doing`, and the apiserver's own message (it names the field and the rule)."""
    try:
        message = json.loads(error.body or "")["message"]
    except (TypeError, ValueError, KeyError):
        message = error.reason or str(error.status)
    return CommandError(f"{doing}: {message}")


def unreachable(doing: str, error: Exception) -> CommandError:
    return CommandError(f"{doing}: cannot reach the apiserver ({error})")


@contextlib.contextmanager
def failures(doing: str, where: str) -> Iterator[None]:
    """The apiserver refusing `doing` (`where`: in which namespaces) or out of reach, as
    the CommandError the user reads."""
    try:
        yield
    except ApiException as error:
        raise api_error(f"{doing} in {where}", error) from None
    except aiohttp.ClientError as error:
        raise unreachable(doing, error) from None
