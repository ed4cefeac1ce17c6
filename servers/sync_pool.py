"""A small blocking psycopg2 connection pool with an acquire timeout.

Built on threading.Condition, so it blocks an OS thread under `threaded` and, once gevent
has monkey-patched `threading`, a greenlet under `gevent` (psycogreen makes the queries
themselves cooperative).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE


class PoolTimeout(Exception):
    """No connection became free within the acquire timeout."""


class PoolClosed(Exception):
    """The pool was closed (the server is shutting down)."""


class BlockingPool:
    """Opens up to `size` autocommit connections lazily and keeps them open."""

    def __init__(self, dsn: str, size: int, application_name: str, timeout: float) -> None:
        self.dsn = dsn
        self.size = size
        self.application_name = application_name
        self.timeout = timeout
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[psycopg2.extensions.connection] = []
        self._open = 0  # idle + lent out + being opened
        self._waiting = 0
        self._closed = False

    def acquire(self) -> psycopg2.extensions.connection:
        """A connection for this caller alone; PoolTimeout after `timeout` seconds of waiting."""
        deadline = 0.0
        with self._cond:
            while True:
                if self._closed:
                    raise PoolClosed("the database pool is closed; the server is stopping")
                if self._idle:
                    return self._idle.pop()
                if self._open < self.size:
                    self._open += 1
                    break  # open a new one outside the lock
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.timeout
                elif now >= deadline:
                    raise PoolTimeout(
                        f"no database connection free within {self.timeout:g} s"
                        f" ({self.size} in use)"
                    )
                self._waiting += 1
                try:
                    self._cond.wait(deadline - now)
                finally:
                    self._waiting -= 1
        try:
            conn = psycopg2.connect(self.dsn, application_name=self.application_name)
            conn.autocommit = True
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise
        return conn

    def release(self, conn: psycopg2.extensions.connection, broken: bool = False) -> None:
        """Give a connection back; a broken one (or one left inside a transaction) is dropped."""
        if not broken and not conn.closed and conn.info.transaction_status != _IDLE:
            try:  # autocommit: rollback() is a no-op, so say it in SQL
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK")
            except psycopg2.Error:
                broken = True
        drop: list[psycopg2.extensions.connection] = []
        with self._cond:
            if broken or conn.closed or self._closed:
                drop.append(conn)
                if conn.closed:
                    # The server side went away (restart?): idle peers are likely dead too.
                    drop.extend(self._idle)
                    self._idle = []
                self._open -= len(drop)
            else:
                self._idle.append(conn)
            self._cond.notify(max(1, len(drop)))
        for dead in drop:
            _close_quietly(dead)

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        conn = self.acquire()
        broken = False
        try:
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        except Exception:
            raise
        except BaseException:  # GreenletExit, KeyboardInterrupt: maybe mid-query, so drop it
            broken = True
            raise
        finally:
            self.release(conn, broken)

    def stats(self) -> tuple[int, int, int]:
        """(size, in use, waiting) for metrics.PoolStats."""
        return (self.size, self._open - len(self._idle), self._waiting)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn: psycopg2.extensions.connection) -> None:
    try:
        conn.close()
    except psycopg2.Error:
        pass
