"""A server-side TLS context whose certificate can be replaced while servers use it.

An `ssl.SSLContext` copies its certificate into each connection when the connection is
made, so loading a new chain into the same context changes what new connections see and
leaves open ones alone: renewal needs no restart of the aiohttp sites that hold it.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

from agent_mesh.pki.authority import Validity
from agent_mesh.pki.certs import KeyPair, write_private


class ServingContext:
    """The TLS context of the operator's servers (mesh API, webhooks): TLS 1.2 or newer."""

    def __init__(self) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.pair: KeyPair | None = None
        self.validity: Validity | None = None

    @property
    def loaded(self) -> bool:
        return self.pair is not None

    def load(self, pair: KeyPair) -> None:
        """Serve `pair` on every connection made from now on."""
        validity = Validity.of(pair.cert_pem)
        # load_cert_chain reads files only; they live for this call, owner-readable.
        with tempfile.TemporaryDirectory(prefix="agent-mesh-tls-") as directory:
            cert, key = Path(directory) / "tls.crt", Path(directory) / "tls.key"
            cert.write_bytes(pair.cert_pem)
            write_private(key, pair.key_pem)
            self.context.load_cert_chain(cert, key)
        self.pair = pair
        self.validity = validity
