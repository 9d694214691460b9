"""JSON-lines logging with Kubernetes object context.

kopf attaches the object a handler works on to each record (`k8s_ref`); our loggers pass
`extra={"agentId": ..., "taskId": ..., "correlationId": ...}` (and `k8s_ref` where no kopf
logger is at hand), and structured records such as audit lines pass `extra={"fields": {...}}`.
All become top-level keys,
so `jq 'select(.agentId=="worker-1")'` works on the operator's output.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

_CONTEXT_KEYS = ("agentId", "taskId", "correlationId", "event")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, namespace, name and context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            for key in ("namespace", "name", "kind"):
                if ref.get(key):
                    entry[key] = ref[key]
        for key in ("namespace", *_CONTEXT_KEYS):  # `name` is the logger's name on a record
            value = getattr(record, key, None)
            if value is not None and key not in entry:
                entry[key] = value
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):  # structured records (audit) carry their own keys
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route every logger (kopf's, aiohttp's, ours) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is a line per request: noise at info level.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
