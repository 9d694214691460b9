"""Stand-in servers on 127.0.0.1, in place of a server the code under test calls (an
agent, a callback's target): an aiohttp app of the test's own, or a plain threaded HTTP
server answering each GET with a line of text (for tests with no event loop)."""

from __future__ import annotations

import contextlib
import http.server
import socket
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


@contextlib.contextmanager
def unanswered_dial() -> Iterator[str]:
    """An http URL on 127.0.0.1 whose dial never completes: a listener with its accept
    queue full drops each new SYN, as a vanished pod's address answers nothing (no
    refusal, no reset); the caller's connect hangs until its own timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    queued: list[socket.socket] = []
    try:
        for _ in range(2):  # the queue holds backlog + 1: the second waits unanswered
            client = socket.socket()
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(listener.getsockname())
            queued.append(client)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        for client in queued:
            client.close()
        listener.close()
