"""The production threaded peer of `make bench`: cheroot (CherryPy's WSGI server), a thread pool.

Not thread-per-connection: a fixed pool of worker threads (cheroot's default, 10) takes requests
from connections a selector watches, so an idle keep-alive connection holds no thread. Its
safeguards are cheroot's defaults: a socket timeout (10 s), header and request-line limits, and a
bounded pool of threads. Only the listen backlog is raised from its default of 5, as anyone facing
64 connections opened at once must. It serves lab/bench/peer_wsgi.py's app. A benchmark reference
only. `python -m lab.bench.peer_cheroot --port N --database-url URL [--pool-size N]`.
"""

from __future__ import annotations

import queue
import signal
import threading
from types import FrameType

from cheroot import wsgi

from lab.bench import bare_cli
from lab.bench.peer_wsgi import PeerPool, make_app


def main() -> None:
    args = bare_cli.parse_args(__doc__)
    pool = PeerPool(queue.Queue(), queue.Empty, args.database_url, args.pool_size, "serverlab-peer-cheroot")
    server = wsgi.Server((args.host, args.port), make_app(pool), request_queue_size=1024)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.safe_start()


if __name__ == "__main__":
    main()
