"""Readiness for the sync app: one database session of its own, outside the pool, with a hard timeout.

The session is asynchronous in psycopg2's sense and waited on with select(), so the timeout holds
even when PostgreSQL or the network in between never answers (a blocking query could not be
timed out under `threaded`). Under gevent, select is cooperative.
"""

from __future__ import annotations

import select
import threading
import time
from contextlib import suppress

import psycopg2
import psycopg2.extensions

from servers import contract


class ReadyCheck:
    """`check()` -> None when the database answers SELECT 1 within `timeout` seconds, else why not."""

    def __init__(self, dsn: str, application_name: str, timeout: float) -> None:
        self.dsn = dsn
        self.application_name = application_name
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: psycopg2.extensions.connection | None = None

    def check(self) -> str | None:
        if not self._lock.acquire(timeout=self.timeout):
            return f"another readiness check has run for over {self.timeout:g} s"
        try:
            deadline = time.monotonic() + self.timeout
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg2.connect(self.dsn, application_name=self.application_name,
                                                  async_=1)
                    _wait(self._conn, deadline)
                with self._conn.cursor() as cur:
                    cur.execute(contract.SQL_HEALTH)
                    _wait(self._conn, deadline)
                    cur.fetchone()
                return None
            except (psycopg2.Error, OSError, TimeoutError) as exc:
                self.close()
                text = str(exc).strip()
                return text.splitlines()[0] if text else f"no answer within {self.timeout:g} s"
        finally:
            self._lock.release()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg2.Error):
                conn.close()


def _wait(conn: psycopg2.extensions.connection, deadline: float) -> None:
    """Drive an asynchronous connection until its operation completes, or TimeoutError at `deadline`."""
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError()
        fd = conn.fileno()
        if state == psycopg2.extensions.POLL_READ:
            select.select([fd], [], [], left)
        else:
            select.select([], [fd], [], left)
