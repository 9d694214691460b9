"""The operator CLI, run by the tasks bench for what the plain `python -m agent_mesh`
cannot do from outside (processes.start_operator with `shim`):

    python bench/tasks/operator_shim.py operator --namespace ... (the operator's flags)

$BENCH_TRACEMALLOC_DIR traces allocations and dumps a snapshot there on SIGUSR1;
$BENCH_NO_TRUST_ENV=1 is an experiment (its figures are labelled so): the Kubernetes
client's aiohttp session stops consulting proxy variables and ~/.netrc. The operator's
code is not changed. A script of its own, importing nothing of the bench, so the
operator it runs holds only what an operator does."""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from typing import Any

TRACE_DIR = "BENCH_TRACEMALLOC_DIR"
NO_TRUST_ENV = "BENCH_NO_TRUST_ENV"


def as_operator(argv: list[str]) -> int:
    """The operator CLI with `argv`, under the settings of the environment (above)."""
    if os.environ.get(NO_TRUST_ENV):
        from kubernetes_asyncio.client import rest

        original = rest.RESTClientObject.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            self.pool_manager._trust_env = False

        rest.RESTClientObject.__init__ = init  # type: ignore[method-assign]
    trace_dir = os.environ.get(TRACE_DIR)
    if trace_dir:
        tracemalloc.start(12)

        def dump(*_: Any) -> None:
            gc.collect()
            n = len(list(Path(trace_dir).glob("snap-*.bin")))
            partial = Path(trace_dir) / f"snap-{n}.part"
            tracemalloc.take_snapshot().dump(str(partial))
            partial.rename(partial.with_suffix(".bin"))

        signal.signal(signal.SIGUSR1, dump)
    from agent_mesh.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    # run as a script, its folder comes first on sys.path: the bench's modules beside it
    # must not stand in for modules the operator imports
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    sys.exit(as_operator(sys.argv[1:]))
