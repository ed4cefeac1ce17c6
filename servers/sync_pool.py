"""A small blocking psycopg2 connection pool: first come, first served, failing fast when hopeless.

Requests queue for a connection in a FairGate (servers/admission.py). Under `threaded` a wait
blocks an OS thread; under `gevent` the runtime passes a gevent token, so a wait parks a greenlet,
and psycogreen makes the queries themselves cooperative. An idle connection is checked before it
is lent (one non-blocking read): a session PostgreSQL ended meanwhile is replaced, not handed out.
Each session has PostgreSQL's statement_timeout; `sever_overdue` is the backstop for a database
that stops answering altogether, which no server-side timeout can end.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress

import psycopg2
import psycopg2.extensions

from servers import contract
from servers.admission import FairGate, HoldClock, Token, thread_token

_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE
Connection = psycopg2.extensions.connection


class PoolTimeout(Exception):
    """No connection became free within the acquire timeout."""


class PoolHopeless(Exception):
    """The queue ahead cannot be served before the acquire timeout: refused at once."""

    def __init__(self, ahead: int, expected: float) -> None:
        super().__init__(f"{ahead} waiting, about {expected:.2f} s")
        self.ahead = ahead
        self.expected = expected


class PoolClosed(Exception):
    """The pool was closed (the server is shutting down)."""


class ConnectFailed(psycopg2.OperationalError):
    """A new session could not be opened (the database is down or unreachable)."""


class NoAnswer(psycopg2.extensions.QueryCanceledError):
    """The database did not answer a statement within its timeout + grace: the session was cut."""


def lost(exc: BaseException) -> bool:
    """True when a session that worked broke (ended by the server, a reset): worth one retry on a
    new session. A failed connect is not: the next would fail the same way."""
    return isinstance(exc, psycopg2.InterfaceError | psycopg2.OperationalError) and not isinstance(
        exc, ConnectFailed | psycopg2.extensions.QueryCanceledError)


class BlockingPool:
    """Opens up to `size` autocommit connections lazily and keeps them open."""

    def __init__(
        self,
        dsn: str,
        size: int,
        application_name: str,
        timeout: float,
        token: Callable[[], Token] = thread_token,
        background: Callable[[Callable[[], None]], object] | None = None,
        statement_timeout: float = 0.0,
    ) -> None:
        self.dsn = dsn
        self.statement_timeout = statement_timeout  # seconds; 0: none
        # libpq's `options`: every session of the pool gets PostgreSQL's statement_timeout.
        self._options = f"-c statement_timeout={round(statement_timeout * 1000)}" if statement_timeout else ""
        self.background = background or _in_thread  # where a cancel runs: it may block for long
        self.size = size
        self.application_name = application_name
        self.timeout = timeout
        self.connect_timeout = max(2, math.ceil(timeout))  # libpq's unit is whole seconds, at least 2
        self.clock = HoldClock(horizon=timeout, size=size)
        self._gate = FairGate(size, token)  # one slot per lent-out connection
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._lent: dict[int, float] = {}  # id(conn) -> when lent, for the hold clock
        self._holders: dict[int, Connection] = {}  # thread (or greenlet) id -> the connection it holds
        self._severed: set[int] = set()  # id(conn) of lent-out connections cut by sever_overdue
        self._closed = False

    def acquire(self, fresh: bool = False) -> Connection:
        """A connection for this caller alone; PoolHopeless at once when the queue cannot be
        served in time, PoolTimeout after `timeout` seconds of waiting. `fresh`: a new session."""
        gate = self._gate
        if not gate.try_take():
            ahead, now = gate.waiting, time.monotonic()
            if self.clock.hopeless(ahead, self.size, self.timeout, now):
                raise PoolHopeless(ahead, self.clock.expected_wait(ahead, self.size, now))
            if not gate.take(self.timeout):
                raise PoolTimeout(f"no database connection free within {self.timeout:g} s "
                                  f"({self.size} in use)")
        conn = None
        with self._lock:
            closed = self._closed
            if not closed and not fresh:
                while self._idle and conn is None:
                    conn = self._idle.pop()
                    if not _usable(conn):
                        _close_quietly(conn)
                        conn = None
        if closed:
            gate.give()
            raise PoolClosed("the database pool is closed; the server is stopping")
        if conn is None:
            try:
                conn = self._connect()
            except psycopg2.OperationalError as exc:
                gate.give()
                raise ConnectFailed(str(exc)) from exc
            except BaseException:
                gate.give()
                raise
        self._lent[id(conn)] = time.monotonic()
        self._holders[threading.get_ident()] = conn
        return conn

    def _connect(self) -> Connection:
        """A new session, counted: while sessions open, a wait for the pool includes one connect."""
        clock = self.clock
        with self._lock:
            clock.connecting += 1
        began = time.monotonic()
        try:
            conn = psycopg2.connect(self.dsn, application_name=self.application_name,
                                    connect_timeout=self.connect_timeout, options=self._options)
            conn.autocommit = True
            return conn
        finally:
            with self._lock:
                clock.connecting -= 1
            clock.connect_seconds = time.monotonic() - began

    def release(self, conn: Connection, broken: bool = False) -> None:
        """Give a connection back; a broken one (or one left inside a transaction) is dropped."""
        self._holders.pop(threading.get_ident(), None)
        self._severed.discard(id(conn))
        since = self._lent.pop(id(conn), None)
        if since is not None:
            now = time.monotonic()
            self.clock.held(now - since, now)
        if not broken and not conn.closed and conn.get_transaction_status() != _IDLE:
            try:  # autocommit: rollback() is a no-op, so say it in SQL
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK")
            except psycopg2.Error:
                broken = True
        drop: Connection | None = conn if broken or conn.closed else None
        with self._lock:
            if self._closed:
                drop = conn
            elif drop is None:
                self._idle.append(conn)
                # A retry's fresh session, opened while idle ones waited, would grow the pool past
                # its size: the session idle longest goes instead (after a mass termination, it is
                # the likeliest to be dead too).
                if len(self._idle) + len(self._lent) > self.size:
                    drop = self._idle.pop(0)
        self._gate.give()
        if drop is not None:
            _close_quietly(drop)

    def connection(self, fresh: bool = False) -> Lease:
        """`with pool.connection() as conn`: a connection for the block, given back after it (dropped
        when it broke)."""
        return Lease(self, fresh)

    def cancel(self, holder: int) -> None:
        """Cancel the query of the connection thread (or greenlet) `holder` holds, if any (its client
        hung up). psycopg2's cancel is safe from another thread: it asks PostgreSQL on a side channel,
        blocking until PostgreSQL answers (forever, if it never does), so it runs in `background`."""
        conn = self._holders.get(holder)
        if conn is not None:
            self.background(lambda: _cancel_quietly(conn))

    def sever_overdue(self) -> int:
        """Cut every connection lent out for longer than the statement timeout + the grace: its
        socket is shut down, so the blocked read ends with an error (NoAnswer to the request) and
        the session is dropped. Called by the runtimes' sweepers. The clock is the whole loan,
        so a request of several statements is held to the limit of one."""
        if not self.statement_timeout:
            return 0
        oldest = time.monotonic() - self.statement_timeout - contract.UNANSWERED_GRACE
        cut = 0
        for conn in list(self._holders.values()):
            since = self._lent.get(id(conn))
            if since is not None and since < oldest and id(conn) not in self._severed:
                self._severed.add(id(conn))
                _shut_socket(conn)
                cut += 1
        return cut

    def stats(self) -> tuple[int, int, int]:
        """(size, in use, waiting) for metrics.PoolStats."""
        return (self.size, self.size - self._gate.free, self._gate.waiting)

    def close(self) -> None:
        """Close idle connections now; lent-out ones close when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)


class Lease:
    """What `BlockingPool.connection` returns: the connection for a `with` block. A class rather than a
    generator-based context manager, which cost 0.8 µs more per request (timeit, lab VM)."""

    __slots__ = ("conn", "fresh", "pool")

    def __init__(self, pool: BlockingPool, fresh: bool) -> None:
        self.pool = pool
        self.fresh = fresh

    def __enter__(self) -> Connection:
        self.conn = self.pool.acquire(self.fresh)
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        pool, conn = self.pool, self.conn
        if kind is None:
            pool.release(conn)
            return
        broken = False
        if issubclass(kind, psycopg2.OperationalError | psycopg2.InterfaceError):
            broken = True
            if id(conn) in pool._severed:
                pool.release(conn, broken)
                raise NoAnswer(f"no answer within {pool.statement_timeout:g} s") from exc
        elif not issubclass(kind, Exception):  # GreenletExit, KeyboardInterrupt: maybe mid-query, so
            broken = True  # stop it, drop it
            with suppress(psycopg2.Error):
                conn.cancel()
        pool.release(conn, broken)


def _usable(conn: Connection) -> bool:
    """An idle connection is usable unless closed, or PostgreSQL ended its session meanwhile.

    poll() reads what is pending without blocking. A session PostgreSQL ends (pg_terminate_backend,
    idle_session_timeout, a shutdown) first sends a FATAL notice, then hangs up; one poll() may read
    the notice and not yet the hang-up. The app's statements raise no notices, so any notice there
    is means the session is ending."""
    if conn.closed or conn.notices:
        return False
    try:
        conn.poll()
    except psycopg2.Error:
        return False
    return not (conn.closed or conn.notices)


def _shut_socket(conn: Connection) -> None:
    """Shut down libpq's socket under it (through a duplicate descriptor): a read blocked on it,
    in a thread or in psycogreen's wait, returns at once with an error."""
    with suppress(OSError, psycopg2.Error):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


def _cancel_quietly(conn: Connection) -> None:
    with suppress(psycopg2.Error):
        conn.cancel()


def _in_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="cancel", daemon=True).start()


def _close_quietly(conn: Connection) -> None:
    with suppress(psycopg2.Error):
        conn.close()
