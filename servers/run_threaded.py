"""`threaded`: one OS thread per accepted connection, for the connection's whole life.

A small hand-written HTTP/1.1 loop (keep-alive, Content-Length and chunked request bodies,
`Expect: 100-continue`) in front of the WSGI app in servers.sync_app. Live connections are
capped at max_connections; beyond it a client gets a 503 and the connection is closed.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from io import BytesIO
from types import FrameType
from typing import Any, BinaryIO, cast
from urllib.parse import unquote, urlsplit

from servers import contract
from servers.settings import Settings
from servers.sync_app import SyncApp, make_app

log = logging.getLogger("serverlab")

BACKLOG = 1024
IDLE_TIMEOUT = 75.0  # seconds a keep-alive connection may sit idle (or a client stall mid-request)
STOP_GRACE = 10.0  # seconds SIGTERM waits for in-flight requests
MAX_LINE = 8192
MAX_HEADERS = 100
MAX_REJECTERS = 64  # threads answering 503 over the connection cap; beyond, just close
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class BadRequest(Exception):
    """Malformed HTTP: answered with a 400 JSON body, then the connection is closed."""


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

    # --- accepting ------------------------------------------------------------------------

    def serve_forever(self) -> None:
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
            full = len(self._live) >= self.settings.max_connections
            answer = full and self._rejecters < MAX_REJECTERS
            if not full:
                self._live.add(sock)
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
            _close(sock)

    def _reject(self, sock: socket.socket) -> None:
        try:
            answer_over_limit(sock, self.app, self.settings.max_connections)
        finally:
            with self._lock:
                self._rejecters -= 1

    # --- one connection -------------------------------------------------------------------

    def _serve_connection(self, sock: socket.socket) -> None:
        metrics = self.app.metrics
        metrics.add_connection(1)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(IDLE_TIMEOUT)
            with cast(BinaryIO, sock.makefile("rb", buffering=65536)) as rfile:
                while not self.stopping.is_set():
                    try:
                        keep_alive = self._one_request(sock, rfile)
                    except BadRequest as exc:
                        reply = contract.malformed_http(str(exc))
                        metrics.observe(None, 400, 0.0)
                        sock.sendall(self.app.raw_response(reply))
                        break
                    if not keep_alive:
                        break
        except (OSError, ClientGone):
            pass  # timeouts, resets, clients that hang up mid-request
        except Exception:
            log.exception("unexpected error serving a connection")
        finally:
            with self._lock:
                self._live.discard(sock)
            _close(sock)
            metrics.add_connection(-1)

    def _one_request(self, sock: socket.socket, rfile: BinaryIO) -> bool:
        """Read, run and answer one request; False when the connection should close."""
        line = rfile.readline(MAX_LINE + 1)
        for _ in range(4):  # RFC 9112: ignore a few empty lines before a request
            if line not in (b"\r\n", b"\n"):
                break
            line = rfile.readline(MAX_LINE + 1)
        if not line:
            return False  # clean close between requests
        if len(line) > MAX_LINE or not line.endswith(b"\n"):
            raise BadRequest(f"request line longer than {MAX_LINE} bytes or not terminated")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[0] or not set(parts[0]) <= TOKEN_CHARS:
            raise BadRequest(f"malformed request line {line[:100]!r}")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise BadRequest(f"unsupported protocol {version[:20]!r}; use HTTP/1.1")
        if not target.startswith("/"):
            if "://" not in target:
                raise BadRequest(f"malformed request target {target[:100]!r}")
            split = urlsplit(target)  # absolute-form
            target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        path, _, query = target.partition("?")

        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "latin-1"),
            "QUERY_STRING": query,
            "SERVER_PROTOCOL": version,
            "SERVER_NAME": self.settings.host,
            "SERVER_PORT": str(self.settings.port),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        self._read_headers(rfile, environ)

        connection = environ.get("HTTP_CONNECTION", "").lower()
        keep_alive = ("close" not in connection) if version == "HTTP/1.1" else (
            "keep-alive" in connection
        )
        keep_alive = self._read_body(sock, rfile, environ) and keep_alive

        status_headers: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status_headers[:] = [status, headers]
            return None

        body = b"".join(self.app(environ, start_response))
        status, headers = status_headers
        keep_alive = keep_alive and not self.stopping.is_set()
        head = [f"HTTP/1.1 {status}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers]
        if not keep_alive:
            head.append("Connection: close\r\n")
        elif version == "HTTP/1.0":
            head.append("Connection: keep-alive\r\n")
        head.append("\r\n")
        sock.sendall("".join(head).encode("latin-1") + body)
        return keep_alive

    @staticmethod
    def _read_headers(rfile: BinaryIO, environ: dict[str, Any]) -> None:
        for _ in range(MAX_HEADERS + 1):
            raw = rfile.readline(MAX_LINE + 1)
            if raw in (b"\r\n", b"\n"):
                return
            if not raw:
                raise ClientGone
            if len(raw) > MAX_LINE:
                raise BadRequest(f"header line longer than {MAX_LINE} bytes")
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or not name or not set(name) <= TOKEN_CHARS:
                raise BadRequest(f"malformed header line {raw[:100]!r}")
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            value = value.strip()
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        raise BadRequest(f"more than {MAX_HEADERS} header lines")

    @staticmethod
    def _read_body(sock: socket.socket, rfile: BinaryIO, environ: dict[str, Any]) -> bool:
        """Put the body in wsgi.input (unless it is over the limit); False if it stays unread."""
        limit = contract.MAX_BODY_BYTES
        expect = environ.get("HTTP_EXPECT", "").lower() == "100-continue"
        encoding = environ.pop("HTTP_TRANSFER_ENCODING", None)
        if encoding is not None:
            if encoding.lower() != "chunked":
                raise BadRequest(f"Transfer-Encoding {encoding[:40]!r} is not supported; use chunked")
            if expect:
                sock.sendall(CONTINUE)
            both = "CONTENT_LENGTH" in environ  # ambiguous framing: answer, then close
            body, length, complete = _read_chunked(rfile, limit)
            environ["CONTENT_LENGTH"] = str(length)  # over the limit: the app answers 413
            environ["wsgi.input"] = BytesIO(body)
            return complete and not both
        raw = environ.get("CONTENT_LENGTH", "")
        if not raw:
            environ["wsgi.input"] = BytesIO(b"")
            return True
        text = raw.strip()
        if not text.isdigit() or len(text) > 18:
            raise BadRequest(f"Content-Length must be a non-negative integer, got {raw[:40]!r}")
        length = int(text)
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
            raise BadRequest(f"malformed chunk size line {line[:40]!r}") from None
        if size < 0:
            raise BadRequest("negative chunk size")
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


def answer_over_limit(sock: socket.socket, app: SyncApp, limit: int) -> None:
    """Answer a connection over the cap with a 503 and close it. The request head is read
    first so that closing does not reset the reply away before the client reads it."""
    try:
        sock.settimeout(2.0)
        with sock.makefile("rb") as rfile:
            line = rfile.readline(MAX_LINE + 1)
            for _ in range(MAX_HEADERS):
                if rfile.readline(MAX_LINE + 1) in (b"\r\n", b"\n", b""):
                    break
        reply = contract.connection_limit(limit)
        app.metrics.observe(_route_name(line), reply.status, 0.0)
        sock.sendall(app.raw_response(reply))
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        _close(sock)


def _route_name(request_line: bytes) -> str | None:
    parts = request_line.decode("latin-1").split(" ")
    if len(parts) != 3:
        return None
    try:
        return contract.route(parts[0], parts[1].split("?")[0]).name
    except contract.ContractError:
        return None


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def serve(settings: Settings) -> None:
    app = make_app(settings)
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
