"""Operator settings: flags override AGENT_MESH_* environment variables override defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorConfig(BaseSettings):
    """Everything the operator process needs to know at start-up."""

    model_config = SettingsConfigDict(env_prefix="AGENT_MESH_", extra="forbid")

    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces to watch; empty means all namespaces (cluster-wide).",
    )
    liveness_host: str = Field("127.0.0.1", description="Address of kopf's liveness endpoint.")
    liveness_port: int = Field(8080, ge=1, le=65535, description="Port of /healthz.")
    webhooks: bool = Field(True, description="Serve the validating admission webhook.")
    webhook_host: str = Field(
        "127.0.0.1",
        description="Address the webhook listens on and the apiserver calls it at (URL mode).",
    )
    webhook_port: int = Field(9443, ge=1, le=65535, description="Port of the webhook server.")
    webhook_cert_dir: Path | None = Field(
        None,
        description="Directory with tls.crt, tls.key and ca.crt; generated when not given.",
    )
    default_network: Literal["tailscale", "direct"] = Field(
        "direct", description="Network mode of agents whose spec.network is unset."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
