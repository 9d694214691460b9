"""Validating admission: the rules OpenAPI and CEL cannot express.

The apiserver calls this webhook for MeshTask create/update; what the schema can check
(enums, patterns, ranges, immutability) stays in the CRD so it holds without the operator.
"""

from __future__ import annotations

from typing import Any

import kopf

from agent_mesh.api import GROUP, VERSION
from agent_mesh.api.meshtask import payload_size_error

WEBHOOK_CONFIGURATION = "agentmesh.io"


def register() -> None:
    """Add the admission handlers to kopf's registry. Only when webhooks are served: kopf
    refuses to start with admission handlers and no server (`--no-webhooks`)."""
    kopf.on.validate(
        GROUP, VERSION, "meshtasks", id="validate-meshtask", operations=["CREATE", "UPDATE"]
    )(validate_meshtask)


def validate_meshtask(spec: kopf.Spec, **_: Any) -> None:
    error = payload_size_error(spec.get("payload"))
    if error:
        raise kopf.AdmissionError(error, code=422)
