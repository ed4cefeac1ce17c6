"""`gevent`: gevent.pywsgi, one greenlet per connection on one OS thread.

servers/__main__.py has already run `monkey.patch_all()` and psycogreen's `patch_psycopg()`
before this module (or anything it imports) loads, so the sync app's locks, sleeps, sockets
and psycopg2 queries all yield to the hub instead of blocking the process.

Connections: the spawn pool holds max_connections handlers plus REJECT_SLOTS greenlets. At the cap
the longest-receiving (else longest idle) connection is closed to make room; only when every
connection runs a request does a newcomer get a 503. When even the reject slots are busy, the
pool stops gevent's accept loop, so further clients wait in the listen backlog (backpressure).

The request head is read by servers.http11's strict rules instead of pywsgi's own, and the reply is
written as `threaded` writes it (SyncApp.respond and .response, one send) instead of through pywsgi's
start_response and access-log line. pywsgi has no public hooks for that, so LabHandler overrides these
of its methods, private or undocumented: read_requestline, read_request, get_environ, run_application,
log_request, start_response, handle_one_response, _write_with_headers, _handle_client_error and
_send_error_response_if_possible. A sweeper
greenlet enforces the receive deadline (408) and the keep-alive idle timeout, and kills the
greenlet of a request whose client hung up (its query is cancelled, its pool connection freed).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from typing import Any
from urllib.parse import unquote, urlsplit

import gevent
import gevent.event
import gevent.lock
from gevent import pywsgi
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from servers import contract
from servers.ablation import NoBusy, NoDeadlines
from servers.deadlines import SWEEP_SECONDS, Busy, Deadlines
from servers.http11 import (
    BACKLOG,
    NO_BODY,
    STOP_GRACE,
    HttpError,
    add_headers,
    answer_over_limit,
    check_framing,
    early_garbage,
    fast_head,
    parse_request_line,
    peer_gone,
    read_headers,
    read_line,
    send_now,
    shut,
)
from servers.settings import Settings
from servers.sync_app import STATUS_LINES, SyncApp, make_app

log = logging.getLogger("serverlab")

STATUS_BYTES = {status: line.encode("latin-1") for status, line in STATUS_LINES.items()}  # as pywsgi keeps it

REJECT_SLOTS = 64


class _Unread:
    """wsgi.input for a body over the limit: never read, never discarded (we close instead)."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def _discard(self) -> None:
        pass


class _BodyThenBusy:
    """wsgi.input that marks the connection busy once the app has read the body: until then the
    request is still arriving, under the receive deadline."""

    def __init__(self, inner: Any, handler: LabHandler) -> None:
        self.inner = inner
        self.handler = handler

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self.inner.read(size)
        finally:
            self.handler.server.deadlines.busy(self.handler)
        return data


class LabHandler(WSGIHandler):
    server: LabServer
    idle = True  # waiting for the next request line on a keep-alive connection
    client_error = ""  # what was wrong with the last malformed request, for its 400
    served = 0  # requests begun on this connection
    gone = False  # the client hung up while its request ran
    _bad: HttpError | None = None  # a request line found malformed, raised in read_request
    _parsed: tuple[str, str, str, list[tuple[str, str]]] | None = None  # a head read in one pass
    _environ: dict[str, Any] | None = None  # built by read_request, handed over by get_environ
    wsgi_input: Any  # pywsgi's Input, _Unread, or NO_BODY

    def read_requestline(self) -> str:
        """The request line by servers.http11's rules (errors wait for read_request, where pywsgi
        turns them into a 400), or the whole head in one pass when it is well-formed and buffered;
        the deadlines learn when a request begins to arrive."""
        self._bad = None
        begun = self._await_request()
        if not begun:
            return ""
        self._parsed = fast_head(self.rfile)
        if self._parsed is not None:
            method, target, version, _ = self._parsed
            return f"{method} {target} {version}"
        if early_garbage(begun[:32]):
            self._bad = HttpError(f"malformed request line starting {begun[:20]!r}")
            return "-"
        try:
            line = read_line(self.rfile, "request line")
            for _ in range(4):  # RFC 9112: ignore a few empty lines before a request
                if line != b"":
                    break
                line = read_line(self.rfile, "request line")
        except HttpError as exc:
            self._bad = exc
            return "-"
        except EOFError:
            return ""
        return (line or b"").decode("latin-1")

    def _await_request(self) -> bytes:
        """Wait for a request's first byte (b"" at EOF), idle until then, receiving after."""
        deadlines = self.server.deadlines
        if self.served:
            deadlines.idle(self)
        self.idle = True
        try:
            begun: bytes = self.rfile.peek(1)
        finally:
            self.idle = False
        if begun:
            if self.served:
                deadlines.receiving(self)
            self.served += 1
        return begun

    def read_request(self, raw_requestline: str) -> bool:
        """Parse the head by servers.http11's rules and set what pywsgi's own parse sets.
        ValueError (HttpError is one): pywsgi calls _handle_client_error."""
        if self._bad is not None:
            raise self._bad
        if self._parsed is not None:
            method, target, version, headers = self._parsed
        else:
            method, target, version = parse_request_line(raw_requestline.encode("latin-1"))
            try:
                headers = read_headers(self.rfile)
            except EOFError:
                raise HttpError("the header section was cut off") from None
        check_framing(version, headers)
        if not target.startswith("/") and "://" in target:  # absolute-form
            split = urlsplit(target)
            target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        path, _, query = target.partition("?")
        env = self.server.get_environ()  # a copy of pywsgi's base environ (SERVER_NAME, wsgi.*)
        env["REQUEST_METHOD"] = method
        env["SCRIPT_NAME"] = ""
        env["PATH_INFO"] = unquote(path, "latin-1") if "%" in path else path
        env["QUERY_STRING"] = query
        env["SERVER_PROTOCOL"] = version
        address = self.client_address
        if isinstance(address, tuple):
            env["REMOTE_ADDR"], env["REMOTE_PORT"] = str(address[0]), str(address[1])
        add_headers(env, headers)
        self._environ = env
        self.requestline = raw_requestline
        self.command, self.path, self.request_version = method, target, version
        length = env.get("CONTENT_LENGTH")
        self.content_length = int(length) if length else None
        connection = env.get("HTTP_CONNECTION", "").lower()
        self.close_connection = ("close" in connection) if version == "HTTP/1.1" else (
            "keep-alive" not in connection)
        return True

    def get_environ(self) -> dict[str, Any]:
        """The environ read_request built (pywsgi's own, when pywsgi parsed the head: LooseHandler), with
        its wsgi.input: none for a body over the limit, one that marks the request busy once read."""
        env, self._environ = self._environ, None
        body = None
        if env is None:
            env = super().get_environ()
            body = env["wsgi.input"]
        if (self.content_length or 0) > contract.MAX_BODY_BYTES:
            # The app answers 413 without reading; pywsgi would otherwise read the whole body
            # to discard it, so leave it on the wire and close the connection instead.
            self.wsgi_input = env["wsgi.input"] = _Unread()
            self.close_connection = True
        elif self.content_length or "HTTP_TRANSFER_ENCODING" in env:
            if body is None:
                sock = self.socket if env.get("HTTP_EXPECT") == "100-continue" else None
                chunked = env.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
                body = self.wsgi_input = pywsgi.Input(self.rfile, self.content_length, socket=sock,
                                                      chunked_input=chunked)
            env["wsgi.input"] = _BodyThenBusy(body, self)
        elif body is None:
            self.wsgi_input = env["wsgi.input"] = NO_BODY
        env["wsgi.input_terminated"] = True
        return env

    def run_application(self) -> None:
        """The app's reply written in one send, as `threaded` writes it (SyncApp.respond and response):
        no start_response, header list or pywsgi header checks per request. pywsgi's own paths (a 400
        for a malformed chunk, a 500) still go through start_response and write."""
        app = self.server.app
        reply = app.respond(self.environ)
        if self.server.stopping:
            self.close_connection = True
        data = app.response(reply, self.command == "HEAD", self.close_connection,
                            self.request_version == "HTTP/1.0")
        self.code = reply.status
        self.status = STATUS_BYTES[reply.status]
        self.headers_sent = True
        self._sendall(data)

    def log_request(self) -> None:
        """None: the server keeps no access log (log=None), so pywsgi's formatting of a line for its
        no-op log (a datetime and a format string per request) is skipped."""

    def handle_one_response(self) -> None:
        server = self.server
        if not isinstance(self.environ.get("wsgi.input"), _BodyThenBusy):
            server.deadlines.busy(self)
        server.busy.start(self, gevent.getcurrent())
        try:
            super().handle_one_response()
        finally:
            server.busy.stop(self)

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
        """Malformed HTTP: the same JSON body and status as `threaded`, not pywsgi's empty 400."""
        log.debug("invalid request from %s: %s", self.client_address, ex)
        status = getattr(ex, "status", 400)
        self.server.app.metrics.observe(None, status, 0.0)
        self.client_error = str(ex)[:200] or type(ex).__name__
        reply = contract.malformed_http(self.client_error, status)
        return (str(status), self.server.app.raw_response(reply))

    def _send_error_response_if_possible(self, error_code: int) -> None:
        """pywsgi's, with the contract's JSON bodies rather than its text ones: a 400 for input
        that broke while the app read it (a malformed chunk), a 500 for an unexpected error."""
        self.close_connection = True
        if self.response_length or self.gone:
            return  # part of a response went out already, or nobody listens: closing is all that is left
        app = self.server.app
        reply = contract.internal() if error_code >= 500 else contract.malformed_http(
            self.client_error or "malformed request")
        with contextlib.suppress(OSError):
            self.start_response(STATUS_LINES[reply.status], app.headers(reply))
            self.write(reply.body)


class LooseHandler(LabHandler):
    """Lab only (LAB_ABLATE=strict): pywsgi's own head parser instead of servers.http11's strict
    rules, to price them; the deadlines still learn when a request begins."""

    def read_requestline(self) -> str:
        if not self._await_request():
            return ""
        line: str = WSGIHandler.read_requestline(self)
        return line

    def read_request(self, raw_requestline: str) -> bool:
        return bool(WSGIHandler.read_request(self, raw_requestline))


class LabServer(WSGIServer):
    handler_class = LabHandler

    def __init__(self, settings: Settings, app: SyncApp) -> None:
        super().__init__(
            (settings.host, settings.port),
            app,
            backlog=BACKLOG,
            # LAB_ABLATE=cap (make bench --ablation only): gevent's default spawn, no pool, no cap
            spawn="default" if settings.off("cap") else Pool(settings.max_connections + REJECT_SLOTS),
            log=None,  # no access log
            error_log=logging.getLogger("serverlab.pywsgi"),
        )
        self.settings = settings
        self.app = app
        self.stopping = False
        self.live: set[LabHandler] = set()
        # LAB_ABLATE (make bench --ablation only) swaps a guarantee for a stand-in that does nothing
        self.capped = not settings.off("cap")
        self.deadlines: Deadlines | NoDeadlines = NoDeadlines() if settings.off("deadline") else Deadlines(
            settings.request_timeout, settings.keepalive_timeout)
        self.busy: Busy | NoBusy = NoBusy() if settings.off("cancel") else Busy()
        if settings.off("strict"):
            self.handler_class = LooseHandler

    def sweep_forever(self) -> None:
        """Close late requests (408) and expired idle connections; end requests whose client left;
        cut database sessions that stopped answering."""
        while not self.stopping:
            gevent.sleep(SWEEP_SECONDS)
            late, expired = self.deadlines.overdue()
            for handler in late:
                self._end(handler, True)  # type: ignore[arg-type]
            for handler in expired:
                self._end(handler, False)  # type: ignore[arg-type]
            for handler, greenlet in self.busy.older_than(SWEEP_SECONDS):
                sock = getattr(handler, "socket", None)
                if sock is not None and peer_gone(sock):
                    self.busy.stop(handler)
                    handler.gone = True  # type: ignore[attr-defined]
                    # Cancel first: killed in psycogreen's wait, psycopg2 would only close its end, and
                    # PostgreSQL would run the query on. Then the kill frees a wait in the pool queue.
                    self.app.pool.cancel(id(greenlet))  # the pool knows holders by gevent's get_ident
                    greenlet.kill(block=False)  # type: ignore[attr-defined]
            self.app.pool.sever_overdue()  # a database that stopped answering

    def _end(self, handler: LabHandler, late: bool) -> None:
        sock = getattr(handler, "socket", None)
        if sock is None:
            return
        if late:
            self.app.metrics.reject("request_timeout")
            send_now(sock, self.app.raw_response(contract.request_timeout(self.settings.request_timeout)))
        shut(sock)

    def handle(self, sock: socket.socket, address: Any) -> None:
        metrics = self.app.metrics
        if self.capped and len(self.live) >= self.settings.max_connections:
            found = self.deadlines.victim()
            if found is None:
                metrics.reject("connection_limit")
                answer_over_limit(sock, self.app, self.settings.max_connections)
                return
            self._end(found[0], found[1])  # type: ignore[arg-type]
        # pywsgi writes the head and the body separately: without NODELAY, Nagle holds the
        # body until the client's delayed ACK (~40 ms per keep-alive request).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handler = self.handler_class(sock, address, self)
        self.live.add(handler)
        self.deadlines.receiving(handler)
        metrics.add_connection(1)
        try:
            handler.handle()
        except OSError:
            # The socket was closed under the handler (the client left, or the deadline shut it and
            # pywsgi then tries to answer a 400): nothing left to say. Let out, gevent would print a
            # traceback for each, and a burst of them (the deadline closing 100 slow sockets at once)
            # stalled every other request for 30-90 ms.
            pass
        finally:
            self.live.discard(handler)
            self.deadlines.forget(handler)
            self.busy.stop(handler)
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
    hub = gevent.get_hub()
    app = make_app(settings, gevent.lock.BoundedSemaphore, lambda: gevent.lock.Semaphore(0),
                   lambda work: hub.threadpool.spawn(work))  # libpq's cancel would block the hub
    server = LabServer(settings, app)
    stop_requested = gevent.event.Event()

    def on_signal() -> None:
        log.info("signal: stopping (up to %g s for in-flight requests)", STOP_GRACE)
        stop_requested.set()

    gevent.signal_handler(signal.SIGTERM, on_signal)
    gevent.signal_handler(signal.SIGINT, on_signal)
    server.start()
    gevent.spawn(server.sweep_forever)
    host, port = server.socket.getsockname()[:2]
    log.info("listening on http://%s:%d", host, port)
    try:
        stop_requested.wait()
        server.graceful_stop()
    finally:
        app.close()
        log.info("stopped")
