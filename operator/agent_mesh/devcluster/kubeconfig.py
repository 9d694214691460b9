"""Which cluster to talk to, checked up front so a bad kubeconfig is one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


class KubeconfigError(ValueError):
    """The kubeconfig named by a flag or KUBECONFIG cannot be used."""


def check_kubeconfig(path: str, source: str) -> Path:
    """Return `path` if it is a readable kubeconfig with a current context, else raise.

    `source` names where the path came from (`--kubeconfig`, `KUBECONFIG`) for the message.
    """
    candidate = Path(path).expanduser()
    try:
        text = candidate.read_text()
    except OSError as exc:
        raise KubeconfigError(f"{source}={path}: cannot read it: {exc.strerror}") from exc
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"{source}={path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict) or not config.get("clusters"):
        raise KubeconfigError(f"{source}={path}: not a kubeconfig (no `clusters` list)")
    if not config.get("current-context"):
        raise KubeconfigError(f"{source}={path}: no `current-context` is set")
    return candidate


def configured_kubeconfig() -> str | None:
    """The first file in $KUBECONFIG, if it is set (a user's existing cluster)."""
    value = os.environ.get("KUBECONFIG", "")
    first = value.split(os.pathsep)[0].strip()
    return first or None
