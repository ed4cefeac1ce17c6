"""The threaded stack's reference for `make bench`: one OS thread per connection, psycopg2, nothing else.

socketserver.ThreadingTCPServer starts a thread per accepted connection; that thread reads
HTTP/1.1 requests off it (keep-alive, GET only: a request line, headers up to the blank line, a
Content-Length body skipped) and answers each with one send, TCP_NODELAY set. psycopg2
connections wait in a queue.Queue of --pool-size. No contract limits, no deadlines, no metrics:
the floor of per-request overhead the threaded server is measured against. It parses far less
than http.server (whose header parser alone costs more than the rest of a /json request), so it
is the leaner and the fairer floor. `python -m lab.bench.bare_threaded --port N --database-url URL`.
"""

from __future__ import annotations

import queue
import signal
import socketserver
import threading
import time
from http import HTTPStatus
from types import FrameType
from typing import Any, cast

from lab.bench import bare_cli
from lab.bench.bare_psycopg2 import Pool, answer
from servers import contract

MAX_LINE = 8192
MAX_HEADERS = 100
SERVER = "serverlab-bare-threaded"
_STATUS = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\nServer: {SERVER}\r\n" for s in HTTPStatus}
_CLOSE = "Connection: close\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _Date:
    """The `Date` value, formatted once per second (threads may race to refresh it: harmless)."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.value = contract.http_date(second)
            cls.second = second
        return cls.value


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a keep-alive connection's thread does not hold up the exit
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024  # the listen backlog: wrk opens all its connections at once
    pool: Pool


class Handler(socketserver.StreamRequestHandler):
    disable_nagle_algorithm = True  # TCP_NODELAY on the accepted socket

    def handle(self) -> None:
        pool = cast(Server, self.server).pool
        rfile, write = self.rfile, self.wfile.write  # wfile is unbuffered: one write, one send
        while True:
            line = rfile.readline(MAX_LINE)
            if not line:
                return  # the client closed
            parts = line.split()
            if len(parts) != 3 or not line.endswith(b"\n"):
                write(_BAD)
                return
            method, target, version = parts
            keep = version == b"HTTP/1.1"
            length = 0
            for _ in range(MAX_HEADERS):
                header = rfile.readline(MAX_LINE)
                if header in (b"\r\n", b"\n"):
                    break
                if not header:
                    return
                name, _, value = header.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    token = value.strip().lower()
                    keep = token != b"close" if keep else token == b"keep-alive"
            else:
                write(_BAD)
                return
            if length:
                rfile.read(length)
            path, _, query = target.decode("latin-1").partition("?")
            try:
                reply = answer(pool, method.decode("latin-1"), path, query)
            except Exception:
                reply = contract.internal("database or server error; see the reference's log")
                keep = False
            body = reply.body
            head = (f"{_STATUS[reply.status]}Date: {_Date.now()}\r\nContent-Type: {reply.content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n{'' if keep else _CLOSE}\r\n")
            write(head.encode("latin-1") + body)
            if not keep:
                return


def main() -> None:
    args = bare_cli.parse_args(__doc__)
    server = Server((args.host, args.port), Handler)
    server.pool = Pool(cast(Any, queue.Queue()), args.database_url, args.pool_size, "serverlab-bare-threaded")

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()  # shutdown() waits for the loop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        server.pool.close()


if __name__ == "__main__":
    main()
