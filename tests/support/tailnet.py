"""The local tailnet for the tests marked tailscale: built on first use, and skipped with
the reason where it cannot run (it needs root) — except in CI, where that is a failure."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_mesh.devcluster.binaries import ensure_tailnet_binaries
from agent_mesh.devcluster.tailnet import LOOPBACK, LocalTailnet


@contextlib.contextmanager
def local_tailnet(
    directory: Path, *, trace: bool = True, address: str = LOOPBACK
) -> Iterator[LocalTailnet]:
    """headscale (on `address`: the node's bridge address for pods) and its nodes, every
    process traced (nothing may leave the machine)."""
    if os.geteuid() != 0:
        reason = "the local tailnet needs root (a mount namespace per tailscaled)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    binaries = ensure_tailnet_binaries()
    with LocalTailnet(binaries, directory, trace=trace, address=address) as running:
        yield running


@pytest.fixture(scope="module")
def tailnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTailnet]:
    """One local tailnet for a module's tests (import it into the module to use it)."""
    with local_tailnet(tmp_path_factory.mktemp("tailnet")) as running:
        yield running
