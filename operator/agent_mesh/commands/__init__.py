"""`agent-mesh submit`, `agents` and `tasks`: a user's view of the mesh through the
Kubernetes API (the MeshTask and MeshAgent resources), as kubectl would give it."""

from __future__ import annotations

EXIT_FAILURE = 1
"""An API call failed (the apiserver's message is printed)."""
EXIT_USAGE = 2
"""Bad input: a flag, a variable, a file, a kubeconfig (as argparse's own)."""
EXIT_FAILED = 3
"""`submit`: the task ended in phase Failed (its retries spent on errors)."""
EXIT_TIMED_OUT = 4
"""`submit`: the task ended in phase TimedOut (its last attempt ran past timeoutSeconds)."""
EXIT_STILL_RUNNING = 5
"""`submit`: --wait-timeout passed before the task ended; it keeps running in the cluster."""


class CommandError(Exception):
    """Bad input or a failed API call: one line for the user, and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code
