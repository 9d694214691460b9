"""The webhook server serves the certificate the owner keeps renewed, from files kopf
watches: certificate and key in one file (replaced at once, so kopf never reads a mixed
pair), the CA bundle beside it for the caBundle."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cryptography import x509

from agent_mesh.config import OperatorConfig
from agent_mesh.domain.clock import FakeClock
from agent_mesh.pki.authority import serving_names
from agent_mesh.pki.certs import KeyPair
from agent_mesh.pki.owner import CertificateOwner
from agent_mesh.runtime.manager import webhook_server


class MemoryCaStore:
    def __init__(self) -> None:
        self.stored: KeyPair | None = None

    async def load_or_create(self, generate: Callable[[], KeyPair]) -> KeyPair:
        self.stored = self.stored or generate()
        return self.stored


def _files(server: Any) -> tuple[bytes, bytes, int]:
    """(served certificate and key, CA bundle, the served file's mode)."""
    served, bundle = Path(server.certfile), Path(server.cafile)
    return served.read_bytes(), bundle.read_bytes(), served.stat().st_mode & 0o777


async def test_webhook_files_follow_the_renewed_certificate(tmp_path: Path) -> None:
    clock = FakeClock(dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    owner = CertificateOwner(
        serving_names(["127.0.0.1"], service="agent-mesh", namespace="agent-mesh-system"),
        clock=clock.now,
        lifetime=dt.timedelta(days=3),
        ca_store=MemoryCaStore(),
    )
    await owner.check()
    server: Any = webhook_server(OperatorConfig(), SimpleNamespace(tls=owner), tmp_path)  # type: ignore[arg-type]
    assert server.certfile == server.pkeyfile
    assert owner.serving.pair is not None and owner.bundle is not None
    first = owner.serving.pair
    assert _files(server) == (first.cert_pem + first.key_pem, owner.bundle, 0o600)

    cadata, context = server._build_ssl()  # what kopf does with these files: no self-signing
    assert cadata == owner.bundle and context is not None

    clock.advance(2 * 86400)
    assert await owner.check()
    renewed = owner.serving.pair
    assert renewed != first
    assert _files(server) == (renewed.cert_pem + renewed.key_pem, owner.bundle, 0o600)
    serials = {x509.load_pem_x509_certificate(p.cert_pem).serial_number for p in (first, renewed)}
    assert len(serials) == 2
