"""The HTTP/1.1 wire pieces both sync runtimes (threaded, gevent) share: the request head, read
strictly, and its headers put into the WSGI environ, the sweepers' socket moves, and the 503 over the
connection cap.

One set of rules, chosen so that the sync servers answer malformed HTTP as aiohttp's parser does
for the async ones (the contract suite and `make faults` hold all four to the same statuses):
CRLF line ends only, no obs-fold, no whitespace before a header's colon, visible ASCII in the
request target, no control bytes in header values, a method the parsers know, HTTP/1.0 or
HTTP/1.1 only, exactly one Host in HTTP/1.1, never both Content-Length and
Transfer-Encoding, and chunked as the only transfer coding.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
from collections.abc import Iterator
from typing import Any, BinaryIO

from servers import contract

BACKLOG = 1024  # the listen backlog of both sync servers
STOP_GRACE = 10.0  # seconds SIGTERM waits for in-flight requests
MAX_LINE = 8190  # bytes of a request line or header line, CRLF excluded (aiohttp's limits)
MAX_HEADERS = 100
TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# The methods llhttp (aiohttp's parser) knows; any other is a malformed request line there.
KNOWN_METHODS = frozenset({
    "DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY", "LOCK", "MKCOL",
    "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL", "REPORT",
    "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PATCH",
    "PURGE", "MKCALENDAR", "LINK", "UNLINK", "SOURCE", "QUERY",
})
_TARGET = re.compile(rb"[\x21-\x7e]+")
_CONTROL = rb"\x00-\x08\x0a-\x1f\x7f"  # bytes a header value may not hold (CR and LF among them)
_VALUE_BAD = re.compile(rb"[" + _CONTROL + rb"]")
# The common case in one pass: a whole head that breaks none of the rules above (token method, visible
# ASCII target, HTTP/1.0 or 1.1, CRLF only, token field names, no control bytes in values), built from
# the same pieces. Anything else goes the line-by-line way, which says exactly what is wrong.
_TOKEN = rb"[" + re.escape(bytes(sorted(TOKEN_CHARS))) + rb"]+"
_FAST_HEAD = re.compile(rb"(" + _TOKEN + rb") (" + _TARGET.pattern + rb") (HTTP/1\.[01])\r\n((?:" + _TOKEN
                        + rb":[^" + _CONTROL + rb"]*\r\n)*)\r\n")
_VERSION = re.compile(r"HTTP/(\d)\.(\d)")
# A field line _FAST_HEAD has already checked, split into (name, value without the whitespace around it)
_FIELD = re.compile(r"([^:]+):[ \t]*(.*?)[ \t]*\r\n")


class HttpError(ValueError):
    """Malformed HTTP: answered with `status` (400 unless said) and the contract's JSON, then closed."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status


def early_garbage(prefix: bytes) -> bool:
    """True when the first bytes of a request cannot start a request line (e.g. TLS spoken to
    HTTP): the method must be a token, so this is known before any line end arrives."""
    method = prefix.lstrip(b"\r\n").split(b" ", 1)[0]
    return any(b not in TOKEN_CHARS for b in method)


def read_line(rfile: BinaryIO, what: str) -> bytes | None:
    """One CRLF-terminated line without its CRLF; None at EOF before any byte."""
    raw = rfile.readline(MAX_LINE + 3)
    if not raw:
        return None
    if not raw.endswith(b"\n"):
        if len(raw) >= MAX_LINE + 3:
            raise HttpError(f"{what} longer than {MAX_LINE} bytes")
        raise EOFError  # cut off: the client hung up mid-line
    if len(raw) - (2 if raw.endswith(b"\r\n") else 1) > MAX_LINE:
        raise HttpError(f"{what} longer than {MAX_LINE} bytes")
    if not raw.endswith(b"\r\n"):
        raise HttpError(f"{what} ends with LF alone; end lines with CRLF")
    return raw[:-2]


def parse_request_line(line: bytes) -> tuple[str, str, str]:
    """(method, target, version) of a request line, or HttpError."""
    if line != line.rstrip():
        raise HttpError(f"whitespace at the end of the request line {line[:100]!r}")
    parts = line.split()
    if len(parts) != 3:
        raise HttpError(f"malformed request line {line[:100]!r}")
    method_b, target_b, version_b = parts
    method = method_b.decode("latin-1")
    if not set(method_b) <= TOKEN_CHARS:
        raise HttpError(f"malformed method {method[:40]!r}")
    if method not in KNOWN_METHODS:
        raise HttpError(f"unknown method {method[:40]!r}")
    if not _TARGET.fullmatch(target_b):
        raise HttpError(f"request target {target_b[:100]!r} must be visible ASCII (percent-encode the rest)")
    version = version_b.decode("latin-1")
    if _VERSION.fullmatch(version) is None:
        raise HttpError(f"malformed protocol version {version[:20]!r}")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(f"{version} is not spoken here")
    return method, target_b.decode("ascii"), version


def read_headers(rfile: BinaryIO) -> list[tuple[str, str]]:
    """The header section as (name, value) pairs, up to the empty line, or HttpError / EOFError."""
    headers: list[tuple[str, str]] = []
    for _ in range(MAX_HEADERS + 1):
        line = read_line(rfile, "header line")
        if line is None:
            raise EOFError
        if not line:
            return headers
        if line[:1] in (b" ", b"\t"):
            raise HttpError("obsolete line folding (a header line starting with whitespace)")
        name_b, sep, value_b = line.partition(b":")
        if not sep or not name_b or not set(name_b) <= TOKEN_CHARS:
            raise HttpError(f"malformed header line {line[:100]!r}")
        if _VALUE_BAD.search(value_b):
            raise HttpError(f"control character in header {name_b[:40]!r}")
        headers.append((name_b.decode("latin-1"), value_b.strip(b" \t").decode("latin-1")))
    raise HttpError(f"more than {MAX_HEADERS} header lines")


def fast_head(rfile: BinaryIO) -> tuple[str, str, str, list[tuple[str, str]]] | None:
    """(method, target, version, headers) of a well-formed head already in the read buffer, read in one
    pass and consumed; None, with nothing consumed, for anything else (a head still arriving, one over
    the limits, or a malformed one): then read_line, parse_request_line and read_headers take it."""
    ahead = rfile.peek(1)  # type: ignore[attr-defined]
    end = ahead.find(b"\r\n\r\n")
    if not 0 < end <= MAX_LINE:  # (a head this short has no line over the limit)
        return None
    m = _FAST_HEAD.fullmatch(ahead, 0, end + 4)
    if m is None:
        return None
    method_b, target_b, version_b, fields = m.groups()
    method = method_b.decode("latin-1")
    if method not in KNOWN_METHODS or fields.count(b"\n") > MAX_HEADERS:
        return None
    rfile.read(end + 4)
    headers: list[tuple[str, str]] = _FIELD.findall(fields.decode("latin-1"))  # the pairs in one C call
    return method, target_b.decode("ascii"), version_b.decode("latin-1"), headers


def loose_head(rfile: BinaryIO) -> tuple[str, str, str, list[tuple[str, str]]] | None:
    """Lab only (LAB_ABLATE=strict): the head read as a bare loop reads it, to price the strict rules:
    three words on the first line, then `name: value` lines to the empty one, nothing else checked;
    None at EOF before a request line."""
    line = rfile.readline(MAX_LINE + 3)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        raise HttpError(f"malformed request line {line[:100]!r}")
    headers: list[tuple[str, str]] = []
    for _ in range(MAX_HEADERS):
        raw = rfile.readline(MAX_LINE + 3)
        if raw in (b"\r\n", b"\n"):
            return parts[0], parts[1], parts[2], headers
        if not raw:
            raise EOFError
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    raise HttpError(f"more than {MAX_HEADERS} header lines")


MAX_CGI_KEYS = 512  # header names whose environ key is remembered; past that, worked out each time
# header name as sent -> its WSGI environ key (User-Agent -> HTTP_USER_AGENT, Content-Type -> CONTENT_TYPE),
# or "" for a name with an underscore: left out, as pywsgi, gunicorn and nginx do, since WSGI cannot
# tell Content_Length from Content-Length
_CGI_KEYS: dict[str, str] = {}


def _cgi_key(name: str) -> str:
    if "_" in name:
        key = ""
    else:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
    if len(_CGI_KEYS) < MAX_CGI_KEYS:
        _CGI_KEYS[name] = key
    return key


def add_headers(environ: dict[str, Any], headers: list[tuple[str, str]]) -> None:
    """The request's headers into a WSGI environ, a repeated one joined with commas (cookies with '; ')."""
    keys = _CGI_KEYS
    for name, value in headers:
        key = keys.get(name)
        if key is None:
            key = _cgi_key(name)
        if not key:
            continue
        if key in environ:
            value = f"{environ[key]}{'; ' if key == 'HTTP_COOKIE' else ','}{value}"
        environ[key] = value


class NoBody:
    """wsgi.input of a request without a body (neither Content-Length nor Transfer-Encoding): one shared,
    stateless instance instead of a stream per request (`_discard` is what pywsgi calls after a reply)."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def _discard(self) -> None:
        pass


NO_BODY = NoBody()


def check_framing(version: str, headers: list[tuple[str, str]]) -> None:
    """The rules on the header set as a whole: Host, and one unambiguous body framing."""
    hosts = 0
    lengths: list[str] = []
    codings: list[str] = []
    for name, value in headers:  # one pass: this runs for every request
        low = name.lower()
        if low == "host":
            hosts += 1
        elif low == "content-length":
            lengths.append(value)
        elif low == "transfer-encoding":
            codings.append(value.lower())
    if version == "HTTP/1.1" and hosts == 0:
        raise HttpError("HTTP/1.1 requires a Host header")
    if hosts > 1:
        raise HttpError("more than one Host header")
    if codings:
        if lengths:
            raise HttpError("both Content-Length and Transfer-Encoding (ambiguous framing)")
        if codings != ["chunked"]:
            raise HttpError(f"Transfer-Encoding {', '.join(codings)[:40]!r} is not supported; use chunked")
    if len(lengths) > 1:
        raise HttpError("more than one Content-Length")
    for value in lengths:
        if not value.isdigit() or len(value) > 18:
            raise HttpError(f"Content-Length must be a non-negative integer, got {value[:40]!r}")


# --- socket moves the sweepers make (plain sockets, and gevent's, whose `_sock` is the real one) ---


def send_now(sock: socket.socket, data: bytes) -> None:
    """Send what fits right now, never waiting (a client that reads nothing cannot stall us)."""
    raw = getattr(sock, "_sock", sock)
    with contextlib.suppress(OSError):
        raw.send(data, socket.MSG_DONTWAIT)


def peer_gone(sock: socket.socket) -> bool:
    """True when the client has closed its side (EOF or reset) while its request runs. Never waits.
    (gevent's select() with a zero timeout would not look at all: it only asks the hub.)"""
    raw = getattr(sock, "_sock", None)  # gevent's: the real, non-blocking socket under it
    try:
        if raw is None:  # a plain socket with a timeout would wait for data even on MSG_DONTWAIT
            if not select.select([sock], [], [], 0)[0]:
                return False
            raw = sock
        return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def shut(sock: socket.socket) -> None:
    """End a connection from another thread or greenlet: its blocked read sees EOF at once."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def answer_over_limit(sock: socket.socket, app: Any, limit: int) -> None:
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
        with contextlib.suppress(OSError):
            sock.close()


def _route_name(request_line: bytes) -> str | None:
    parts = request_line.decode("latin-1").split(" ")
    if len(parts) != 3:
        return None
    try:
        return contract.route(parts[0], parts[1].split("?")[0]).name
    except contract.ContractError:
        return None
