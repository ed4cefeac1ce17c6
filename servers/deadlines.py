"""Connection deadlines: receiving a request (LAB_REQUEST_TIMEOUT) and idling between requests
(LAB_KEEPALIVE_TIMEOUT), kept apart, for all three kinds of runtime.

A runtime tells the table what each connection is doing: `receiving` (a request has begun to
arrive, or the connection has just opened), `idle` (between requests on a keep-alive connection)
or `busy` (the app runs; no deadline). A sweeper (a thread, a greenlet or a task) calls `overdue`
a few times a second and closes what it returns: a 408 for a request that did not arrive in time,
silence for an idle connection. At the connection cap, `victim` names the connection to close
to make room: the longest-receiving one (a slow-loris socket), else the longest idle one; a
connection whose request is running is never chosen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

SWEEP_SECONDS = 0.1  # how often the sweepers look


class Deadlines:
    """Which connections receive or idle since when; thread-safe (one lock, dict operations only)."""

    def __init__(self, request_timeout: float, keepalive_timeout: float) -> None:
        self.request_timeout = request_timeout
        self.keepalive_timeout = keepalive_timeout
        self._lock = threading.Lock()
        # key -> since (monotonic); insertion order is the order of `since`, oldest first.
        self._receiving: dict[Hashable, float] = {}
        self._idle: dict[Hashable, float] = {}

    def receiving(self, key: Hashable, since: float | None = None) -> None:
        now = time.monotonic() if since is None else since
        with self._lock:
            self._idle.pop(key, None)
            if key not in self._receiving:
                self._receiving[key] = now

    def wake(self, key: Hashable) -> None:
        """Bytes arrived: an idle connection starts receiving; a busy or receiving one is left be."""
        now = time.monotonic()
        with self._lock:
            if self._idle.pop(key, None) is not None:
                self._receiving[key] = now

    def idle(self, key: Hashable) -> None:
        now = time.monotonic()
        with self._lock:
            self._receiving.pop(key, None)
            self._idle.pop(key, None)
            self._idle[key] = now

    def busy(self, key: Hashable) -> None:
        with self._lock:
            self._receiving.pop(key, None)
            self._idle.pop(key, None)

    forget = busy

    def is_receiving(self, key: Hashable) -> bool:
        return key in self._receiving

    def overdue(self, now: float | None = None) -> tuple[list[Hashable], list[Hashable]]:
        """(late requests, expired idle connections), removed from the table."""
        now = time.monotonic() if now is None else now
        late: list[Hashable] = []
        expired: list[Hashable] = []
        with self._lock:
            for table, limit, out in ((self._receiving, self.request_timeout, late),
                                      (self._idle, self.keepalive_timeout, expired)):
                for key, since in table.items():
                    if since + limit > now:
                        break
                    out.append(key)
                for key in out:
                    del table[key]
        return late, expired

    def victim(self) -> tuple[Hashable, bool] | None:
        """(connection, whether it was receiving) to close at the cap, taken out of the table; None
        when every connection runs a request."""
        with self._lock:
            for table, receiving in ((self._receiving, True), (self._idle, False)):
                if table:
                    key = next(iter(table))
                    del table[key]
                    return key, receiving
        return None


class Busy:
    """Connections whose request runs, since when: the sweeper checks those running longer than one
    sweep for a client that hung up (cheap requests are never looked at)."""

    def __init__(self) -> None:
        self._since: dict[Hashable, tuple[float, object]] = {}

    def start(self, key: Hashable, worker: object) -> None:
        self._since[key] = (time.monotonic(), worker)

    def stop(self, key: Hashable) -> None:
        self._since.pop(key, None)

    def older_than(self, seconds: float) -> list[tuple[Hashable, object]]:
        limit = time.monotonic() - seconds
        found = []
        for key, (since, worker) in list(self._since.items()):
            if since > limit:
                break
            found.append((key, worker))
        return found
