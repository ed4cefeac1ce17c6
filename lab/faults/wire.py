"""Raw HTTP/1.1 over one loopback socket: send exact bytes, read one response, see if it closed."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Answer:
    """One exchange: the status (0 when none came), headers, body, and whether the server closed."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    closed: bool = False
    seconds: float = 0.0
    error: str = ""

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def split_url(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def read_answer(sock: socket.socket, deadline: float, head_only: bool = False) -> Answer:
    """Read one response from `sock` until `deadline` (monotonic)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock, deadline)
        if not chunk:
            return Answer(0, closed=True, error="closed before a response" if not data else "cut-off head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while len(rest) < length and not head_only:
        chunk = _recv(sock, deadline)
        if not chunk:
            break
        rest += chunk
    return Answer(status, headers, rest[:length])


def _recv(sock: socket.socket, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no complete answer before the deadline")
    sock.settimeout(left)
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def closed_soon(sock: socket.socket, wait: float = 1.0) -> bool:
    """True if the peer closes (EOF or reset) within `wait` seconds and sends nothing more."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except (TimeoutError, OSError):
        return False


def exchange(url: str, raw: bytes, timeout: float = 10.0, check_close: bool = True) -> Answer:
    """Send `raw` on a new connection, read one response; `closed`: the server then hung up."""
    host, port = split_url(url)
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(raw)
            answer = read_answer(sock, started + timeout)
            if answer.status and check_close:
                answer.closed = closed_soon(sock, 0.5)
    except (TimeoutError, OSError) as exc:
        answer = Answer(0, error=f"{type(exc).__name__}: {exc}")
    answer.seconds = time.monotonic() - started
    return answer


def request(
    url: str,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Answer:
    """A well-formed request on a new connection (Connection: close)."""
    host, port = split_url(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    return exchange(url, raw, timeout, check_close=False)
