"""MagicDNS host names of agents: `agent-mesh-<namespace>-<agentId>`.

A host name is one DNS label (at most 63 characters), and the control server gives a
second device asking for a taken name another one (`-1` appended), which would break the
name the mesh dials. So a name that does not fit, or that another agent already has
(`a-b`+`c` and `a`+`b-c` both make `agent-mesh-a-b-c`), is refused at admission.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from agent_mesh.domain.errors import ValidationError

HOSTNAME_PREFIX: Final = "agent-mesh-"
HOSTNAME_MAX_LENGTH: Final = 63
_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def hostname(namespace: str, agent_id: str) -> str:
    """The agent's MagicDNS host name (not checked: see `hostname_error`)."""
    return f"{HOSTNAME_PREFIX}{namespace}-{agent_id}"


def fqdn(namespace: str, agent_id: str, tailnet_domain: str) -> str:
    """The agent's full MagicDNS name in the tailnet `tailnet_domain` (no trailing dot)."""
    return f"{hostname(namespace, agent_id)}.{tailnet_domain.strip('.')}"


def hostname_error(namespace: str, agent_id: str) -> str | None:
    """Why `hostname(namespace, agent_id)` cannot be a device's name, or None."""
    name = hostname(namespace, agent_id)
    if len(name) > HOSTNAME_MAX_LENGTH:
        room = HOSTNAME_MAX_LENGTH - len(HOSTNAME_PREFIX) - 1 - len(namespace)
        return (
            f"the agent's MagicDNS host name {name} has {len(name)} characters, more than "
            f"the {HOSTNAME_MAX_LENGTH} a DNS label allows: in namespace {namespace}, "
            f"spec.agentId (or metadata.name) may have at most {max(room, 0)} characters"
        )
    if not _LABEL.match(name):
        return (
            f"the agent's MagicDNS host name {name!r} is not a DNS label (lower-case "
            "letters, digits and '-', starting and ending with a letter or digit)"
        )
    return None


def collision_error(namespace: str, agent_id: str, others: Iterable[tuple[str, str]]) -> str | None:
    """Why another agent's host name (`others`: their (namespace, agentId)) is the same
    as this one's, or None. The agent itself is not among `others`."""
    name = hostname(namespace, agent_id)
    for other_namespace, other_id in others:
        if hostname(other_namespace, other_id) == name:
            return (
                f"the agent's MagicDNS host name {name} is already the host name of agent "
                f"{other_id} in namespace {other_namespace}: two devices cannot share a "
                "name; choose another spec.agentId"
            )
    return None


def check_hostname(namespace: str, agent_id: str, others: Iterable[tuple[str, str]] = ()) -> str:
    """The host name, or ValidationError (field spec.agentId) saying why it cannot be."""
    problem = hostname_error(namespace, agent_id) or collision_error(namespace, agent_id, others)
    if problem is not None:
        raise ValidationError(problem, field="spec.agentId", code="InvalidTailnetHostname")
    return hostname(namespace, agent_id)
