"""The threaded peer of `make bench` from the standard library: wsgiref on a ThreadingHTTPServer.

One OS thread per connection (socketserver's ThreadingMixIn), each running wsgiref's own WSGI
handler over HTTP/1.1 keep-alive, serving lab/bench/peer_wsgi.py's app. Its safeguards are the
stdlib's usual ones: a socket timeout per connection (an idle or stalled client is dropped after
KEEPALIVE seconds), daemon threads, a listen backlog, http.server's request-line and header limits.
No access log (the lab's servers keep none either). A benchmark reference only.
`python -m lab.bench.peer_stdlib --port N --database-url URL [--pool-size N]`.
"""

from __future__ import annotations

import queue
import signal
import threading
from http.server import ThreadingHTTPServer
from types import FrameType
from typing import IO, Any, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from lab.bench import bare_cli
from lab.bench.peer_wsgi import PeerPool, make_app

KEEPALIVE = 30.0  # seconds a connection may sit silent (the servers' LAB_KEEPALIVE_TIMEOUT default)


class Server(ThreadingHTTPServer, WSGIServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: wrk opens all its connections at once


class Handler(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as every client of the bench speaks
    timeout = KEEPALIVE
    disable_nagle_algorithm = True  # wsgiref writes the head and the body in separate sends

    def handle(self) -> None:
        """http.server's keep-alive loop around wsgiref's one-request handler."""
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except TimeoutError:
            self.close_connection = True
            return
        if not self.raw_requestline or len(self.raw_requestline) > 65536:
            self.close_connection = True
            return
        if not self.parse_request():  # sent its own error, and set close_connection
            return
        handler = Handler11(self.rfile, cast(IO[bytes], self.wfile), self.get_stderr(), self.get_environ(),
                            multithread=True)
        handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref's own back-pointer
        handler.run(self.server.get_app())  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Handler11(ServerHandler):
    http_version = "1.1"


def main() -> None:
    args = bare_cli.parse_args(__doc__)
    server = Server((args.host, args.port), Handler)
    pool = PeerPool(queue.Queue(), queue.Empty, args.database_url, args.pool_size, "serverlab-peer-stdlib")
    server.set_app(make_app(pool))

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
