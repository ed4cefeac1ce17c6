"""What the two sync references of `make bench` share: psycopg2 queries behind a plain queue.

bare_threaded (a queue.Queue, threads) and bare_gevent (a gevent.queue.Queue, greenlets) answer
with this one function, so the two differ only in their runtime. The SQL and the bodies are the
servers' own (servers.contract), so a reference does the same work per request as the server it
is measured against, minus the server's limits, deadlines and metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs

import psycopg2

from servers import contract
from servers.contract import Reply

SQL_WORLD = contract.pyformat(contract.SQL_WORLD)
SQL_FORTUNES = contract.pyformat(contract.SQL_FORTUNES)
_JSON = Reply(200, contract.JSON_BODY)
_HEALTH = contract.health_reply()
_READY = contract.ready_reply()  # the connections are opened before the first request is accepted
_NOT_FOUND = contract.error(404, "not_found", "the references serve /json, /db, /queries, /fortunes, "
                            "/health and /ready")
_NOT_GET = contract.error(405, "method_not_allowed", "use GET")


class Queue(Protocol):
    def get(self) -> Any: ...
    def put(self, item: Any) -> None: ...


class Pool:
    """`size` autocommit connections (as the servers' pool), opened at once, lent through `queue`."""

    def __init__(self, queue: Queue, dsn: str, size: int, application_name: str) -> None:
        self.queue = queue
        self.dsn = dsn
        self.application_name = application_name
        self.opened = [self.connect() for _ in range(size)]
        for conn in self.opened:
            queue.put(conn)

    def connect(self) -> Any:
        conn = psycopg2.connect(self.dsn, application_name=self.application_name)
        conn.autocommit = True
        return conn

    def get(self) -> Any:
        conn = self.queue.get()
        if conn.closed:  # the session broke on an earlier request: a new one
            conn = self.connect()
        return conn

    def close(self) -> None:
        for conn in self.opened:
            conn.close()


def _db(pool: Pool, query: str) -> Reply:
    conn = pool.get()
    try:
        with conn.cursor() as cur:
            cur.execute(SQL_WORLD, (contract.random_id(),))
            row = cur.fetchone()
    finally:
        pool.queue.put(conn)
    return contract.world_reply(row)


def _queries(pool: Pool, query: str) -> Reply:
    values = parse_qs(query, keep_blank_values=True).get("queries") if query else None
    ids = contract.random_ids(contract.clamp_queries(values[0] if values else None))
    rows = []
    conn = pool.get()
    try:
        with conn.cursor() as cur:
            for world_id in ids:
                cur.execute(SQL_WORLD, (world_id,))
                row = cur.fetchone()
                if row is None:
                    return contract.world_reply(None)
                rows.append(row)
    finally:
        pool.queue.put(conn)
    return contract.worlds_reply(rows)


def _fortunes(pool: Pool, query: str) -> Reply:
    conn = pool.get()
    try:
        with conn.cursor() as cur:
            cur.execute(SQL_FORTUNES)
            rows = cur.fetchall()
    finally:
        pool.queue.put(conn)
    return contract.fortunes_reply(rows)


_ROUTES: dict[str, Callable[[Pool, str], Reply]] = {
    "/json": lambda pool, query: _JSON,
    "/db": _db,
    "/queries": _queries,
    "/fortunes": _fortunes,
    "/health": lambda pool, query: _HEALTH,
    "/ready": lambda pool, query: _READY,
}


def answer(pool: Pool, method: str, path: str, query: str) -> Reply:
    """The reply to one request; a database error propagates (the runtime answers 500)."""
    handler = _ROUTES.get(path)
    if handler is None:
        return _NOT_FOUND
    if method != "GET":
        return _NOT_GET
    return handler(pool, query)
