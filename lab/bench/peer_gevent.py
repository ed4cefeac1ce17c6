"""The gevent peer of `make bench`: a plain app on gevent.pywsgi.WSGIServer, psycopg2 made
cooperative by psycogreen.

The way gevent's users run a WSGI app: monkey-patching first, psycogreen's patch, then pywsgi with a
greenlet pool as its spawn (the usual cap on concurrent connections: 1000 here), no access log
(the lab's servers keep none either) and TCP_NODELAY on each connection (pywsgi sends a response's
head and body in two writes, which Nagle would hold apart for a delayed ACK). The pool of sessions
is a gevent.queue.Queue whose wait times out. It serves lab/bench/peer_wsgi.py's app. A benchmark
reference only.
`python -m lab.bench.peer_gevent --port N --database-url URL [--pool-size N]`.
"""

from gevent import monkey

monkey.patch_all()

from psycogreen.gevent import patch_psycopg  # noqa: E402

patch_psycopg()

import signal  # noqa: E402
import socket  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.queue  # noqa: E402
from gevent.pool import Pool  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402

from lab.bench import bare_cli  # noqa: E402
from lab.bench.peer_wsgi import PeerPool, make_app  # noqa: E402

MAX_CONNECTIONS = 1000


class Server(WSGIServer):
    def handle(self, sock: socket.socket, address: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle(sock, address)


def main() -> None:
    args = bare_cli.parse_args(__doc__)
    pool = PeerPool(gevent.queue.Queue(), gevent.queue.Empty, args.database_url, args.pool_size,
                    "serverlab-peer-gevent")
    server = Server((args.host, args.port), make_app(pool), spawn=Pool(MAX_CONNECTIONS), log=None,
                        backlog=1024)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
