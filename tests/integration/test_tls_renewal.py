"""A renewed serving certificate reaches clients without restarting the server: the mesh
API's server, real TLS on loopback, the certificate owner driven by a fake clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Callable

import aiohttp
from aiohttp import web
from cryptography import x509

from agent_mesh.devcluster.ports import free_port
from agent_mesh.domain.clock import FakeClock
from agent_mesh.mesh.server import MeshServer
from agent_mesh.pki.authority import serving_names
from agent_mesh.pki.certs import KeyPair
from agent_mesh.pki.owner import CertificateOwner


class MemoryCaStore:
    def __init__(self) -> None:
        self.stored: KeyPair | None = None

    async def load_or_create(self, generate: Callable[[], KeyPair]) -> KeyPair:
        if self.stored is None:
            self.stored = generate()
        return self.stored


async def _served_serial(port: int, trust: ssl.SSLContext) -> int:
    """The serial of the certificate a new connection to the server is shown."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=trust, server_hostname="localhost"
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def test_renewed_certificate_is_served_without_restarting_the_server() -> None:
    # two days ago, so both certificates are valid now for the client's real clock
    clock = FakeClock(dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    names = serving_names(["127.0.0.1"], service="agent-mesh", namespace="agent-mesh-system")
    owner = CertificateOwner(
        names, clock=clock.now, lifetime=dt.timedelta(days=3), ca_store=MemoryCaStore()
    )
    await owner.check()
    assert owner.bundle is not None
    trust = ssl.create_default_context(cadata=owner.bundle.decode())

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    port = free_port()
    server = MeshServer(app, "127.0.0.1", port, ssl_context=owner.serving.context)
    await server.start()
    try:
        first = await _served_serial(port, trust)
        async with aiohttp.ClientSession() as kept_alive:
            url = f"https://localhost:{port}/healthz"
            async with kept_alive.get(url, ssl=trust) as response:
                assert response.status == 200

            clock.advance(2 * 86400)  # past 2/3 of 3 days
            assert await owner.check()
            renewed = await _served_serial(port, trust)
            assert renewed != first
            assert owner.serving.pair is not None
            current = x509.load_pem_x509_certificate(owner.serving.pair.cert_pem)
            assert renewed == current.serial_number

            # the connection opened before the renewal still serves
            async with kept_alive.get(url, ssl=trust) as response:
                assert response.status == 200
    finally:
        await server.stop()
