"""`threaded`: one OS thread per accepted connection, for the connection's whole life.

A small hand-written HTTP/1.1 loop (keep-alive, Content-Length and chunked request bodies,
`Expect: 100-continue`) in front of the sync app in servers.sync_app (a WSGI environ in, its
`respond` and `response` out, with no start_response); the request head is read by servers.http11's
strict rules. Live connections are capped at max_connections: at the cap the
longest-receiving (else longest idle) connection is closed to make room, and only when every
connection runs a request does a newcomer get a 503. One sweeper thread enforces the receive
deadline (408) and the keep-alive idle timeout, and cancels the database query of a request
whose client hung up (psycopg2's cancel works from another thread; a request sleeping in /io
cannot be interrupted, so it runs to its end).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import socket
import struct
import threading
import time
from io import BytesIO
from types import FrameType
from typing import Any, BinaryIO, cast
from urllib.parse import unquote, urlsplit

from servers import contract
from servers.ablation import NoBusy, NoDeadlines
from servers.deadlines import SWEEP_SECONDS, Busy, ThreadDeadlines
from servers.http11 import (
    BACKLOG,
    MAX_HEADERS,
    MAX_LINE,
    NO_BODY,
    STOP_GRACE,
    HttpError,
    add_headers,
    answer_over_limit,
    check_framing,
    early_garbage,
    fast_head,
    loose_head,
    parse_request_line,
    peer_gone,
    read_headers,
    read_line,
    send_now,
    shut,
)
from servers.settings import Settings
from servers.sync_app import SyncApp, make_app

log = logging.getLogger("serverlab")

MAX_REJECTERS = 64  # threads answering 503 over the connection cap; beyond, just close
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ClientGone(Exception):
    """The client closed the connection in the middle of a request."""


class ThreadedServer:
    def __init__(self, settings: Settings, app: SyncApp) -> None:
        self.settings = settings
        self.app = app
        self.listener = socket.create_server((settings.host, settings.port), backlog=BACKLOG)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._rejecters = 0
        # LAB_ABLATE (make bench --ablation only) swaps a guarantee for a stand-in that does nothing
        self.timed = not settings.off("deadline")
        self.capped = not settings.off("cap")
        self.strict = not settings.off("strict")
        self.deadlines: ThreadDeadlines | NoDeadlines = (
            ThreadDeadlines(settings.request_timeout, settings.keepalive_timeout) if self.timed
            else NoDeadlines())
        self.busy: Busy | NoBusy = NoBusy() if settings.off("cancel") else Busy()
        # the environ keys every request has alike; each request starts from a copy
        self._environ: dict[str, Any] = {
            "SCRIPT_NAME": "",
            "SERVER_NAME": settings.host,
            "SERVER_PORT": str(settings.port),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }

    # --- accepting ------------------------------------------------------------------------

    def serve_forever(self) -> None:
        threading.Thread(target=self._sweep, name="sweeper", daemon=True).start()
        self.listener.settimeout(0.5)  # wake up to notice a stop request
        while not self.stopping.is_set():
            try:
                sock, _addr = self.listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self.stopping.is_set():
                    break
                log.warning("accept failed: %s", exc)  # e.g. EMFILE: back off briefly
                time.sleep(0.05)
                continue
            self._start(sock)
        self.listener.close()

    def _start(self, sock: socket.socket) -> None:
        with self._lock:
            full = self.capped and len(self._live) >= self.settings.max_connections
        if full and self._evict():
            full = False
        with self._lock:
            answer = full and self._rejecters < MAX_REJECTERS
            if not full:
                self._live.add(sock)
                self.deadlines.receiving(sock)
            elif answer:
                self._rejecters += 1
        if full:
            self.app.metrics.reject("connection_limit")
            target, name = (self._reject, "reject") if answer else (None, "")
        else:
            target, name = self._serve_connection, "conn"
        if target is None:
            _close(sock)
            return
        try:
            threading.Thread(target=target, args=(sock,), name=name, daemon=True).start()
        except RuntimeError as exc:  # the OS refused another thread
            log.error("cannot start a thread (%s); closing the connection", exc)
            with self._lock:
                self._live.discard(sock)
                if answer:
                    self._rejecters -= 1
            self.deadlines.forget(sock)
            _close(sock)

    def _evict(self) -> bool:
        """At the cap: close the longest-receiving (else longest idle) connection to make room."""
        found = self.deadlines.victim()
        if found is None:
            return False
        sock, receiving = found
        self._end(cast(socket.socket, sock), receiving)
        return True

    def _end(self, sock: socket.socket, late: bool) -> None:
        if late:
            self.app.metrics.reject("request_timeout")
            send_now(sock, self.app.raw_response(contract.request_timeout(self.settings.request_timeout)))
        shut(sock)

    def _reject(self, sock: socket.socket) -> None:
        try:
            answer_over_limit(sock, self.app, self.settings.max_connections)
        finally:
            with self._lock:
                self._rejecters -= 1

    def _sweep(self) -> None:
        """Close late requests (408) and expired idle connections; cancel abandoned queries; cut
        database sessions that stopped answering."""
        while not self.stopping.wait(SWEEP_SECONDS):
            late, expired = self.deadlines.overdue()
            for sock in late:
                self._end(cast(socket.socket, sock), True)
            for sock in expired:
                shut(cast(socket.socket, sock))
            for sock, thread_id in self.busy.older_than(SWEEP_SECONDS):
                if peer_gone(cast(socket.socket, sock)):
                    self.busy.stop(sock)
                    self.app.pool.cancel(cast(int, thread_id))
            self.app.pool.sever_overdue()  # a database that stopped answering

    # --- one connection -------------------------------------------------------------------

    def _serve_connection(self, sock: socket.socket) -> None:
        metrics = self.app.metrics
        metrics.add_connection(1)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A backstop only: the sweeper enforces both timeouts to the tenth of a second. The
            # kernel's timeouts, not settimeout(): Python polls before every recv and send of a
            # socket with a timeout, and each syscall may hand the GIL to another thread (the polls
            # were 2 of 4 syscalls per /json request; without them, half the futex calls).
            if self.timed:
                settings = self.settings
                _kernel_timeouts(sock, max(settings.request_timeout, settings.keepalive_timeout) + 5)
            with cast(BinaryIO, sock.makefile("rb", buffering=65536)) as rfile:
                first = True
                while not self.stopping.is_set():
                    try:
                        keep_alive = self._one_request(sock, rfile, first)
                    except HttpError as exc:
                        reply = contract.malformed_http(str(exc), exc.status)
                        metrics.observe(None, reply.status, 0.0)
                        sock.sendall(self.app.raw_response(reply))
                        break
                    if not keep_alive:
                        break
                    first = False
        except (OSError, ClientGone, EOFError):
            pass  # timeouts, resets, clients that hang up mid-request
        except Exception:
            log.exception("unexpected error serving a connection")
        finally:
            with self._lock:
                self._live.discard(sock)
            self.deadlines.forget(sock)
            self.busy.stop(sock)
            _close(sock)
            metrics.add_connection(-1)

    def _one_request(self, sock: socket.socket, rfile: Any, first: bool) -> bool:
        """Read, run and answer one request; False when the connection should close."""
        if not first:
            self.deadlines.idle(sock)
        begun = rfile.peek(1)  # waits for the first byte (or EOF, or the sweeper's shutdown)
        if not begun:
            return False  # clean close between requests
        if not first:
            self.deadlines.receiving(sock)
        parsed = fast_head(rfile) if self.strict else loose_head(rfile)
        if parsed is not None:
            method, target, version, headers = parsed
        elif not self.strict:
            return False  # EOF before a request line
        else:
            if early_garbage(begun[:32]):
                raise HttpError(f"malformed request line starting {begun[:20]!r}")
            line = read_line(rfile, "request line")
            for _ in range(4):  # RFC 9112: ignore a few empty lines before a request
                if line != b"":
                    break
                line = read_line(rfile, "request line")
            if not line:
                return False
            method, target, version = parse_request_line(line)
            headers = read_headers(rfile)
        if self.strict:
            check_framing(version, headers)
        if not target.startswith("/") and "://" in target:
            split = urlsplit(target)  # absolute-form
            target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        path, _, query = target.partition("?")

        environ = self._environ.copy()  # the keys every request has alike, copied in C
        environ["REQUEST_METHOD"] = method
        environ["PATH_INFO"] = unquote(path, "latin-1") if "%" in path else path
        environ["QUERY_STRING"] = query
        environ["SERVER_PROTOCOL"] = version
        add_headers(environ, headers)

        connection = environ.get("HTTP_CONNECTION")
        if connection is None:
            keep_alive = version == "HTTP/1.1"
        else:
            connection = connection.lower()
            keep_alive = ("close" not in connection) if version == "HTTP/1.1" else (
                "keep-alive" in connection)
        if "CONTENT_LENGTH" in environ or "HTTP_TRANSFER_ENCODING" in environ:
            keep_alive = self._read_body(sock, rfile, environ) and keep_alive
        else:
            environ["wsgi.input"] = NO_BODY
        self.deadlines.busy(sock)
        self.busy.start(sock, threading.get_ident())
        app = self.app
        try:
            reply = app.respond(environ)
        finally:
            self.busy.stop(sock)
        keep_alive = keep_alive and not self.stopping.is_set()
        sock.sendall(app.response(reply, method == "HEAD", not keep_alive, version == "HTTP/1.0"))
        return keep_alive

    @staticmethod
    def _read_body(sock: socket.socket, rfile: BinaryIO, environ: dict[str, Any]) -> bool:
        """Put the body in wsgi.input (unless it is over the limit); False if it stays unread."""
        limit = contract.MAX_BODY_BYTES
        expect = environ.get("HTTP_EXPECT", "").lower() == "100-continue"
        if environ.pop("HTTP_TRANSFER_ENCODING", None) is not None:  # chunked: check_framing saw to it
            if expect:
                sock.sendall(CONTINUE)
            body, length, complete = _read_chunked(rfile, limit)
            environ["CONTENT_LENGTH"] = str(length)  # over the limit: the app answers 413
            environ["wsgi.input"] = BytesIO(body)
            return complete
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > limit:  # the app answers 413 without reading; the body stays on the wire
            environ["wsgi.input"] = BytesIO(b"")
            return False
        if expect and length:
            sock.sendall(CONTINUE)
        body = rfile.read(length) if length else b""
        if len(body) < length:
            raise ClientGone
        environ["wsgi.input"] = BytesIO(body)
        return True

    # --- stopping -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), close idle connections."""
        self.stopping.set()
        with self._lock:
            live = list(self._live)
        for sock in live:
            # Wakes threads blocked reading the next request; replies can still be written.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline:
            with self._lock:
                if not self._live:
                    break
            time.sleep(0.05)
        with self._lock:
            left = len(self._live)
        if left:
            log.warning("%d connections still busy after %g s; exiting anyway", left, STOP_GRACE)


def _read_chunked(rfile: BinaryIO, limit: int) -> tuple[bytes, int, bool]:
    """Decode a chunked body: (body, length, complete). Past `limit` it stops reading and
    returns no bytes, only the length seen so far (the rest stays unread)."""
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if not line:
            raise ClientGone
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(f"malformed chunk size line {line[:40]!r}") from None
        if size < 0:
            raise HttpError("negative chunk size")
        if size == 0:
            for _ in range(MAX_HEADERS):  # trailers, ignored
                if rfile.readline(MAX_LINE + 1) in (b"\r\n", b"\n", b""):
                    break
            return b"".join(parts), total, True
        total += size
        if total > limit:
            return b"", total, False
        chunk = rfile.read(size + 2)
        if len(chunk) < size + 2:
            raise ClientGone
        parts.append(chunk[:size])


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


class InflightTokens:
    """The in-flight limit as `max_inflight` tokens in a queue.SimpleQueue (C code, one lock inside):
    acquire takes one, waiting up to its timeout; release puts one back. threading.BoundedSemaphore
    is a Condition in Python: an acquire and release cost 2.45 µs against these 0.73 µs (timeit, lab
    VM, 2026-12-07), about 4 % of threaded's CPU per /json request. Neither wakes waiters in order."""

    __slots__ = ("_get", "_put")

    def __init__(self, size: int) -> None:
        tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(size):
            tokens.put(None)
        self._get, self._put = tokens.get, tokens.put

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        try:
            self._get(blocking, None if timeout < 0 else timeout)
        except queue.Empty:
            return False
        return True

    def release(self) -> None:
        self._put(None)


def serve(settings: Settings) -> None:
    app = make_app(settings, InflightTokens)
    server = ThreadedServer(settings, app)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping (up to %g s for in-flight requests)", signum, STOP_GRACE)
        server.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, port = server.listener.getsockname()[:2]
    log.info("listening on http://%s:%d", host, port)
    try:
        server.serve_forever()
    finally:
        server.stop()
        app.close()
        log.info("stopped")


def _kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """SO_RCVTIMEO and SO_SNDTIMEO on a blocking socket: a stalled recv or send fails (EAGAIN, an
    OSError that ends the connection) without Python's poll before each call."""
    value = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
