"""The gevent stack's reference for `make bench`: stock gevent.pywsgi and psycopg2, nothing else.

A plain WSGI function on gevent.pywsgi (one greenlet per connection, TCP_NODELAY set on each),
psycopg2 made cooperative by psycogreen's wait callback, and a gevent.queue.Queue of --pool-size
autocommit connections opened at start. No monkey-patching (nothing here blocks outside gevent's
own sockets and queue), no contract limits, no deadlines, no metrics: the floor of per-request
overhead the gevent server is measured against.
`python -m lab.bench.bare_gevent --port N --database-url URL`.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import gevent
import gevent.event
from gevent.pywsgi import WSGIServer
from gevent.queue import Queue
from psycogreen.gevent import patch_psycopg

from lab.bench import bare_cli
from lab.bench.bare_psycopg2 import Pool, answer

SERVER = "serverlab-bare-gevent"
_STATUS = {int(s): f"{int(s)} {s.phrase}" for s in HTTPStatus}


def make_app(pool: Pool) -> Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        reply = answer(pool, environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"])
        start_response(_STATUS[reply.status], [("Server", SERVER), ("Content-Type", reply.content_type),
                                               ("Content-Length", str(len(reply.body)))])
        return [reply.body]  # pywsgi adds Date; an exception here is its 500

    return app


class Server(WSGIServer):
    def handle(self, sock: socket.socket, address: Any) -> None:
        # pywsgi sends a response's head and body in two writes: without NODELAY, Nagle holds the
        # body until the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def main() -> None:
    args = bare_cli.parse_args(__doc__)
    patch_psycopg()  # psycopg2 waits through the hub: a query parks its greenlet, not the process
    pool = Pool(Queue(), args.database_url, args.pool_size, "serverlab-bare-gevent")
    server = Server((args.host, args.port), make_app(pool), backlog=1024, log=None)
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    server.start()
    try:
        stop.wait()
        server.stop(timeout=2)
    finally:
        pool.close()


if __name__ == "__main__":
    main()
