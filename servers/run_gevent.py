"""`gevent`: gevent.pywsgi, one greenlet per connection on one OS thread.

servers/__main__.py has already run `monkey.patch_all()` and psycogreen's `patch_psycopg()`
before this module (or anything it imports) loads, so the sync app's locks, sleeps, sockets
and psycopg2 queries all yield to the hub instead of blocking the process.

Connections: the spawn pool holds max_connections handlers plus REJECT_SLOTS greenlets that
answer a 503 to connections over the cap. When even those are busy, the pool stops gevent's
accept loop, so further clients wait in the listen backlog (backpressure, not an error).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from typing import Any

import gevent
import gevent.event
import gevent.lock
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from servers import contract
from servers.run_threaded import BACKLOG, STOP_GRACE, TOKEN_CHARS, answer_over_limit
from servers.settings import Settings
from servers.sync_app import STATUS_LINES, SyncApp, make_app

log = logging.getLogger("serverlab")

REJECT_SLOTS = 64


class _Unread:
    """wsgi.input for a body over the limit: never read, never discarded (we close instead)."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def _discard(self) -> None:
        pass


class LabHandler(WSGIHandler):
    server: LabServer
    idle = True  # waiting for the next request line on a keep-alive connection
    client_error = ""  # what was wrong with the last malformed request, for its 400

    def read_requestline(self) -> str:
        self.idle = True
        try:
            line: str = super().read_requestline()
        finally:
            self.idle = False
        return line

    def read_request(self, raw_requestline: str) -> bool:
        """pywsgi's parse, plus the checks `threaded` makes that pywsgi does not: the method is an
        HTTP token and every header line has a name and a colon. ValueError: pywsgi answers 400."""
        parsed: bool = super().read_request(raw_requestline)
        if not self.command or not set(self.command) <= TOKEN_CHARS:
            raise ValueError(f"malformed request line {raw_requestline[:100]!r}")
        if self.headers.defects:  # e.g. a line without a colon ends the header section early
            raise ValueError(f"malformed header section ({type(self.headers.defects[0]).__name__})")
        return parsed

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        if (self.content_length or 0) > contract.MAX_BODY_BYTES:
            # The app answers 413 without reading; pywsgi would otherwise read the whole body
            # to discard it, so leave it on the wire and close the connection instead.
            self.wsgi_input = environ["wsgi.input"] = _Unread()
            self.close_connection = True
        return environ

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self.close_connection or self.server.stopping:
            headers = [*headers, ("Connection", "close")]  # as `threaded` says it
        return super().start_response(status, headers, exc_info)

    def _write_with_headers(self, data: bytes) -> None:
        """pywsgi's own, but head and body leave in one send instead of two."""
        if self.response_use_chunked or self.code in (204, 304):
            super()._write_with_headers(data)
            return
        self.headers_sent = True
        self.finalize_headers()
        out = bytearray(b"HTTP/1.1 ")
        out += self.status
        out += b"\r\n"
        for name, value in self.response_headers:
            out += name + b": " + value + b"\r\n"
        out += b"\r\n"
        self._sendall(bytes(out) + data if data else bytes(out))

    def _handle_client_error(self, ex: Exception) -> tuple[str, bytes]:
        """Malformed HTTP: the same 400 JSON body as `threaded`, not pywsgi's empty one."""
        log.debug("invalid request from %s: %s", self.client_address, ex)
        self.server.app.metrics.observe(None, 400, 0.0)
        self.client_error = str(ex)[:200] or type(ex).__name__
        return ("400", self.server.app.raw_response(contract.malformed_http(self.client_error)))

    def _send_error_response_if_possible(self, error_code: int) -> None:
        """pywsgi's, with the contract's JSON bodies rather than its text ones: a 400 for input
        that broke while the app read it (a malformed chunk), a 500 for an unexpected error."""
        self.close_connection = True
        if self.response_length:
            return  # part of a response went out already: closing is all that is left
        app = self.server.app
        reply = contract.internal() if error_code >= 500 else contract.malformed_http(
            self.client_error or "malformed request")
        with contextlib.suppress(OSError):
            self.start_response(STATUS_LINES[reply.status], app.headers(reply))
            self.write(reply.body)


class LabServer(WSGIServer):
    handler_class = LabHandler

    def __init__(self, settings: Settings, app: SyncApp) -> None:
        super().__init__(
            (settings.host, settings.port),
            app,
            backlog=BACKLOG,
            spawn=Pool(settings.max_connections + REJECT_SLOTS),
            log=None,  # no access log
            error_log=logging.getLogger("serverlab.pywsgi"),
        )
        self.settings = settings
        self.app = app
        self.stopping = False
        self.live: set[LabHandler] = set()

    def handle(self, sock: socket.socket, address: Any) -> None:
        metrics = self.app.metrics
        if len(self.live) >= self.settings.max_connections:
            metrics.reject("connection_limit")
            answer_over_limit(sock, self.app, self.settings.max_connections)
            return
        # pywsgi writes the head and the body separately: without NODELAY, Nagle holds the
        # body until the client's delayed ACK (~40 ms per keep-alive request).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handler = self.handler_class(sock, address, self)
        self.live.add(handler)
        metrics.add_connection(1)
        try:
            handler.handle()
        finally:
            self.live.discard(handler)
            metrics.add_connection(-1)

    def graceful_stop(self) -> None:
        """Stop accepting, close idle keep-alive connections, let busy ones finish (bounded)."""
        self.stopping = True
        self.close()
        for handler in list(self.live):
            if handler.idle:
                sock = getattr(handler, "socket", None)
                if sock is not None:
                    with contextlib.suppress(OSError):  # the pending readline sees EOF
                        sock.shutdown(socket.SHUT_RD)
        self.stop(timeout=STOP_GRACE)
        if self.live:
            log.warning("%d connections still busy after %g s; killed", len(self.live), STOP_GRACE)


def serve(settings: Settings) -> None:
    app = make_app(settings, gevent.lock.BoundedSemaphore)
    server = LabServer(settings, app)
    stop_requested = gevent.event.Event()

    def on_signal() -> None:
        log.info("signal: stopping (up to %g s for in-flight requests)", STOP_GRACE)
        stop_requested.set()

    gevent.signal_handler(signal.SIGTERM, on_signal)
    gevent.signal_handler(signal.SIGINT, on_signal)
    server.start()
    host, port = server.socket.getsockname()[:2]
    log.info("listening on http://%s:%d", host, port)
    try:
        stop_requested.wait()
        server.graceful_stop()
    finally:
        app.close()
        log.info("stopped")
