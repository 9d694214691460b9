"""An agent's mesh identity: exchanges its ServiceAccount token (in a pod) or its
credential (anywhere else) for a mesh token, and renews it before it expires. It also
holds how the mesh API is trusted: https verified with AGENT_MESH_CA_FILE (the operator's
CA bundle) or the system's trust store; plain http only to loopback, unless allowed."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from agent_mesh.domain.errors import (
    AuthError,
    TooManyRequestsError,
    UnavailableError,
    ValidationError,
)
from agent_mesh.transport.client import read_body

SA_TOKEN_PATH: Final = Path("/var/run/secrets/agent-mesh/token")
"""Where the pod's projected ServiceAccount token (audience agent-mesh) is mounted."""
RENEW_AT: Final = 0.8
"""Renew once this fraction of the token's lifetime has passed."""
TRUE_VALUES: Final = frozenset({"1", "true", "yes", "on"})
TOKEN_RESPONSE_MAX_BYTES: Final = 1024 * 1024
"""A token answer is a few kilobytes; more than this is not read."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    agent_id: str
    namespace: str
    agent_type: str
    renew_at: float  # time.monotonic()
    max_concurrent_tasks: int | None = None
    """spec.maxConcurrentTasks of the agent's MeshAgent, as the operator reported it."""


class TokenSource:
    """`await source.token()` always returns a valid mesh token, renewing as needed."""

    def __init__(
        self,
        mesh_url: str,
        *,
        namespace: str | None = None,
        agent_id: str | None = None,
        credential: str | None = None,
        service_account_token_path: Path | None = None,
        ca_file: str | Path | None = None,
        allow_insecure: bool = False,
        credential_file: Path | None = None,
    ) -> None:
        """`ca_file`: the PEM bundle that verifies the mesh API's certificate (default: the
        system's trust store). `allow_insecure`: accept a plain http:// URL to a host that
        is not loopback (only where the network encrypts by itself, e.g. the tailnet).
        `credential_file`: where `credential` came from; read again at every exchange, so
        a rotated credential (spec.credentialRotation) is picked up without a restart."""
        self.ssl = mesh_tls(mesh_url, ca_file, allow_insecure)
        self.ca_file = str(ca_file) if ca_file else None
        if credential is None and service_account_token_path is None:
            raise ValidationError(
                "a TokenSource needs a credential (outside the cluster) or a ServiceAccount "
                "token path (in a pod)",
                field="credential",
            )
        if credential is not None and (namespace is None or agent_id is None):
            raise ValidationError(
                "a credential needs the agent's namespace and agentId", field="agentId"
            )
        self.mesh_url = mesh_url.rstrip("/")
        self.namespace = namespace
        self.agent_id = agent_id
        self._credential = credential
        self._credential_file = credential_file
        self._sa_path = service_account_token_path
        self._issued: IssuedToken | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> TokenSource:
        """AGENT_MESH_URL plus AGENT_MESH_CREDENTIAL (or _FILE) with AGENT_MESH_NAMESPACE
        and AGENT_MESH_AGENT_ID; without a credential, the projected token at
        AGENT_MESH_SA_TOKEN_PATH (default /var/run/secrets/agent-mesh/token). The mesh API
        is verified with AGENT_MESH_CA_FILE; AGENT_MESH_ALLOW_INSECURE_MESH=true admits a
        non-loopback http:// URL."""
        env = dict(os.environ if env is None else env)
        url = env.get("AGENT_MESH_URL")
        if not url:
            raise ValidationError("AGENT_MESH_URL is not set", field="AGENT_MESH_URL")
        credential = env.get("AGENT_MESH_CREDENTIAL")
        credential_file = None
        if credential is None and env.get("AGENT_MESH_CREDENTIAL_FILE"):
            credential_file = Path(env["AGENT_MESH_CREDENTIAL_FILE"])
            credential = credential_file.read_text().strip()
        sa_path = None if credential else Path(env.get("AGENT_MESH_SA_TOKEN_PATH", SA_TOKEN_PATH))
        return cls(
            url,
            namespace=env.get("AGENT_MESH_NAMESPACE"),
            agent_id=env.get("AGENT_MESH_AGENT_ID"),
            credential=credential,
            service_account_token_path=sa_path,
            ca_file=env.get("AGENT_MESH_CA_FILE") or None,
            allow_insecure=env.get("AGENT_MESH_ALLOW_INSECURE_MESH", "").lower() in TRUE_VALUES,
            credential_file=credential_file,
        )

    @property
    def identity(self) -> IssuedToken | None:
        return self._issued

    async def token(self) -> str:
        issued = self._issued
        if issued is not None and time.monotonic() < issued.renew_at:
            return issued.token
        async with self._lock:
            issued = self._issued
            if issued is None or time.monotonic() >= issued.renew_at:
                issued = self._issued = await self._exchange()
            return issued.token

    def invalidate(self) -> None:
        """Forget the token (the mesh refused it): the next call exchanges again."""
        self._issued = None

    def unreachable(self, error: aiohttp.ClientError) -> UnavailableError:
        """The error to raise when a call to the mesh API failed below HTTP."""
        if isinstance(error, aiohttp.ClientConnectorCertificateError):
            trust = (
                f"AGENT_MESH_CA_FILE ({self.ca_file})"
                if self.ca_file
                else "the system's trust store (set AGENT_MESH_CA_FILE to the operator's CA "
                "bundle, ConfigMap agent-mesh-ca.crt)"
            )
            return UnavailableError(
                f"the mesh API at {self.mesh_url} presented a certificate that does not "
                f"verify with {trust}: {error.certificate_error}",
                field="AGENT_MESH_CA_FILE",
                code="MeshCertificateInvalid",
            )
        return UnavailableError(
            f"cannot reach the mesh API at {self.mesh_url}: {error}", code="MeshUnreachable"
        )

    def _current_credential(self, last: str) -> str:
        """The credential file's value now (a mounted Secret follows its rotations); the
        last value read while the file is missing, empty or being replaced."""
        if self._credential_file is None:
            return last
        try:
            value = self._credential_file.read_text().strip()
        except OSError:
            return last
        return value or last

    async def _exchange(self) -> IssuedToken:
        body: dict[str, Any]
        if self._credential is not None:
            self._credential = self._current_credential(self._credential)
            body = {
                "namespace": self.namespace,
                "agentId": self.agent_id,
                "credential": self._credential,
            }
        else:
            assert self._sa_path is not None
            # re-read each time: the kubelet rotates the projected token file
            body = {"serviceAccountToken": self._sa_path.read_text().strip()}
            if self.agent_id:
                body["agentId"] = self.agent_id
        started = time.monotonic()
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{self.mesh_url}/v1/token", json=body, ssl=self.ssl) as response,
            ):
                raw = await read_body(response, TOKEN_RESPONSE_MAX_BYTES)
                answer: Any = json.loads(raw) if raw.strip() else None
                status = response.status
                retry_after = retry_after_of(response.headers)
        except aiohttp.ClientError as error:
            raise self.unreachable(error) from error
        if status != 200:
            detail = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
            kind = TooManyRequestsError if status == 429 else AuthError
            raise kind(
                f"token exchange refused ({status}): {detail.get('message', answer)}",
                field=detail.get("field"),
                code=detail.get("code") or "TokenExchangeFailed",
                retry_after=retry_after,
            )
        lifetime = float(answer["expiresIn"])
        return IssuedToken(
            token=answer["token"],
            agent_id=answer["agentId"],
            namespace=answer["namespace"],
            agent_type=answer["agentType"],
            renew_at=started + RENEW_AT * lifetime,
            max_concurrent_tasks=answer.get("maxConcurrentTasks"),
        )


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """A `Retry-After` in seconds (the form the mesh sends), or None."""
    try:
        return max(0.0, float(headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def mesh_tls(
    mesh_url: str, ca_file: str | Path | None, allow_insecure: bool
) -> ssl.SSLContext | bool:
    """How to call `mesh_url`: an SSL context trusting `ca_file`, or True (the system's
    trust store). Refuses, before anything connects, a plain http:// URL to a host that is
    not loopback unless `allow_insecure`: tokens and credentials would travel in clear."""
    parts = urllib.parse.urlsplit(mesh_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(
            f"AGENT_MESH_URL {mesh_url!r} must be an https:// (or loopback http://) URL",
            field="AGENT_MESH_URL",
            code="InvalidMeshUrl",
        )
    if parts.scheme == "http" and not allow_insecure and not _loopback(parts.hostname):
        raise ValidationError(
            f"AGENT_MESH_URL {mesh_url} is plain http to a host that is not loopback: mesh "
            "tokens and credentials would cross the network unencrypted. Use the https URL "
            "with AGENT_MESH_CA_FILE (the operator's CA bundle, ConfigMap agent-mesh-ca.crt), "
            "or set AGENT_MESH_ALLOW_INSECURE_MESH=true where the network encrypts by itself "
            "(e.g. the tailnet)",
            field="AGENT_MESH_ALLOW_INSECURE_MESH",
            code="InsecureMeshUrl",
        )
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as error:
        raise ValidationError(
            f"AGENT_MESH_CA_FILE {ca_file}: not a readable PEM CA bundle ({error})",
            field="AGENT_MESH_CA_FILE",
            code="InvalidCaFile",
        ) from error


def _loopback(host: str) -> bool:
    if host == "localhost":  # urlsplit lower-cases it
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
