"""A small blocking psycopg2 connection pool with an acquire timeout.

A semaphore of `size` slots bounds the connections lent out; idle connections wait in a
list. Under `threaded` it blocks an OS thread; under `gevent` the runtime passes gevent's
native semaphore (threading's would also be cooperative once monkey-patched, but its
Condition-based wait costs several times more per waiter), and psycogreen makes the
queries themselves cooperative.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg2
import psycopg2.extensions

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
Connection = psycopg2.extensions.connection


class PoolTimeout(Exception):
    """No connection became free within the acquire timeout."""


class PoolClosed(Exception):
    """The pool was closed (the server is shutting down)."""


class BlockingPool:
    """Opens up to `size` autocommit connections lazily and keeps them open."""

    def __init__(
        self,
        dsn: str,
        size: int,
        application_name: str,
        timeout: float,
        semaphore: Callable[[int], Any] = threading.Semaphore,
    ) -> None:
        self.dsn = dsn
        self.size = size
        self.application_name = application_name
        self.timeout = timeout
        self._slots = semaphore(size)  # held by every lent-out connection
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._in_use = 0
        self._waiting = 0
        self._closed = False

    def acquire(self) -> Connection:
        """A connection for this caller alone; PoolTimeout after `timeout` seconds of waiting."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self._waiting += 1
            try:
                got = self._slots.acquire(timeout=self.timeout)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not got:
                raise PoolTimeout(
                    f"no database connection free within {self.timeout:g} s ({self.size} in use)"
                )
        with self._lock:
            closed = self._closed
            conn = self._idle.pop() if self._idle and not closed else None
            if not closed:
                self._in_use += 1
        if closed:
            self._slots.release()
            raise PoolClosed("the database pool is closed; the server is stopping")
        if conn is not None:
            return conn
        try:
            conn = psycopg2.connect(self.dsn, application_name=self.application_name)
            conn.autocommit = True
        except BaseException:
            self._give_back(None)
            raise
        return conn

    def release(self, conn: Connection, broken: bool = False) -> None:
        """Give a connection back; a broken one (or one left inside a transaction) is dropped."""
        if not broken and not conn.closed and conn.info.transaction_status != _IDLE:
            try:  # autocommit: rollback() is a no-op, so say it in SQL
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK")
            except psycopg2.Error:
                broken = True
        drop = self._give_back(None if broken or conn.closed else conn)
        if broken or conn.closed:
            drop.append(conn)
            if conn.closed:
                # The server side went away (restart?): idle peers are likely dead too.
                with self._lock:
                    drop += self._idle
                    self._idle = []
        for dead in drop:
            _close_quietly(dead)

    def _give_back(self, conn: Connection | None) -> list[Connection]:
        """Return a slot (and the connection to the idle list); what to close afterwards."""
        with self._lock:
            self._in_use -= 1
            if conn is not None and not self._closed:
                self._idle.append(conn)
                conn = None
        self._slots.release()
        return [] if conn is None else [conn]

    @contextmanager
    def connection(self) -> Iterator[Connection]:
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
        return (self.size, self._in_use, self._waiting)

    def close(self) -> None:
        """Close idle connections now; lent-out ones close when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn: Connection) -> None:
    with suppress(psycopg2.Error):
        conn.close()
