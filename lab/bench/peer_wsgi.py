"""The WSGI app the sync peers of `make bench` serve: a plain app over psycopg2, with the safeguards
its users give it.

The stdlib, cheroot and gevent.pywsgi peers (lab/bench/peer_*.py) all serve this one callable, so
they differ only in their server. Bodies and SQL are the lab's (servers.contract's pure functions),
so a peer does the same work per request as the server it is set against. Its safeguards are the
usual ones of such an app: a bounded pool whose wait times out (503), PostgreSQL's
statement_timeout on every session, a broken session replaced, and an error answered rather than
raised. The lab's own guarantees (receive deadline, connection cap, in-flight limit, fail-fast
admission, cancellation, metrics) are not here: those are the servers' to prove.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs

import psycopg2

from servers import contract
from servers.contract import Reply

SQL_WORLD = contract.pyformat(contract.SQL_WORLD)
SQL_FORTUNES = contract.pyformat(contract.SQL_FORTUNES)
ACQUIRE_TIMEOUT = 1.0  # seconds a request waits for a pool connection (as the servers' default)
STATEMENT_TIMEOUT_MS = 30_000  # PostgreSQL's statement_timeout (as the servers' default)
STATUS = {int(s): f"{int(s)} {s.phrase}" for s in HTTPStatus}
_JSON = Reply(200, contract.JSON_BODY)
_NOT_FOUND = contract.error(404, "not_found", "the peers serve /json, /db, /queries, /fortunes, /health "
                            "and /ready")
_NOT_GET = contract.error(405, "method_not_allowed", "use GET")


class Queue(Protocol):
    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...
    def put(self, item: Any) -> None: ...


class PeerPool:
    """`size` autocommit sessions lent through `queue` (queue.Queue or gevent's), each with a
    statement_timeout; a wait past ACQUIRE_TIMEOUT raises `empty` (the queue's own Empty)."""

    def __init__(self, queue: Queue, empty: type[Exception], dsn: str, size: int, name: str) -> None:
        self.queue, self.empty, self.dsn, self.size, self.name = queue, empty, dsn, size, name
        for _ in range(size):
            queue.put(None)  # opened on first use

    def connect(self) -> Any:
        conn = psycopg2.connect(self.dsn, application_name=self.name,
                                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
        conn.autocommit = True
        return conn

    def run(self, work: Callable[[Any], Reply]) -> Reply:
        try:
            conn = self.queue.get(timeout=ACQUIRE_TIMEOUT)
        except self.empty:
            return contract.pool_timeout(self.size, ACQUIRE_TIMEOUT)
        try:
            if conn is None or conn.closed:
                conn = self.connect()
            with conn.cursor() as cur:
                return work(cur)
        except psycopg2.Error as exc:
            if conn is not None:
                conn.close()
                conn = None
            return contract.database_error(exc)
        finally:
            self.queue.put(conn)


def _query_param(environ: dict[str, Any], name: str) -> str | None:
    values = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).get(name)
    return values[0] if values else None


def _db(cur: Any) -> Reply:
    cur.execute(SQL_WORLD, (contract.random_id(),))
    return contract.world_reply(cur.fetchone())


def _worlds(ids: Iterable[int]) -> Callable[[Any], Reply]:
    def work(cur: Any) -> Reply:
        rows = []
        for world_id in ids:
            cur.execute(SQL_WORLD, (world_id,))
            row = cur.fetchone()
            if row is None:
                return contract.world_reply(None)
            rows.append(row)
        return contract.worlds_reply(rows)
    return work


def _fortunes(cur: Any) -> Reply:
    cur.execute(SQL_FORTUNES)
    return contract.fortunes_reply(cur.fetchall())


def make_app(pool: PeerPool) -> Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]:
    """The WSGI callable."""
    routes: dict[str, Callable[[dict[str, Any]], Reply]] = {
        "/json": lambda env: _JSON,
        "/db": lambda env: pool.run(_db),
        "/queries": lambda env: pool.run(_worlds(contract.random_ids(
            contract.clamp_queries(_query_param(env, "queries"))))),
        "/fortunes": lambda env: pool.run(_fortunes),
        "/health": lambda env: contract.health_reply(),
        "/ready": lambda env: contract.ready_reply(),
    }

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        handler = routes.get(environ.get("PATH_INFO", ""))
        if handler is None:
            reply = _NOT_FOUND
        elif environ["REQUEST_METHOD"] != "GET":
            reply = _NOT_GET
        else:
            try:
                reply = handler(environ)
            except contract.ContractError as exc:
                reply = exc.reply
        start_response(STATUS[reply.status], [("Content-Type", reply.content_type),
                                              ("Content-Length", str(len(reply.body))), *reply.headers])
        return [reply.body]

    return app
