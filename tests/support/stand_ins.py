"""Stand-in servers on 127.0.0.1, in place of a server the code under test calls (an
agent, a callback's target): an aiohttp app of the test's own, or a plain threaded HTTP
server answering each GET with a line of text (for tests with no event loop)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import web

from agent_mesh.devcluster.ports import free_port


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int | None = None) -> AsyncIterator[str]:
    """`app` served on 127.0.0.1 at `port` (default: a free one) for the block; yields its
    base URL, `http://127.0.0.1:<port>`."""
    port = port or free_port()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def answering(reply: Callable[[str], str]) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 (a free port) for the block, answering every GET with
    200 and `reply(the request's Host header)`; yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = reply(self.headers["Host"]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
