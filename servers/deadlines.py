"""Connection deadlines: receiving a request (LAB_REQUEST_TIMEOUT) and idling between requests
(LAB_KEEPALIVE_TIMEOUT), kept apart, for all three kinds of runtime (ThreadDeadlines: the same,
without a lock per request, for a thread per connection; LoopDeadlines: without it for an event loop).

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


class LoopDeadlines(Deadlines):
    """`Deadlines` for one event loop: a request's three moves without the lock, since only the
    loop's thread makes them and the sweeper is a task on the same loop (the rare calls, `receiving`
    at a connection's start, `overdue` and `victim`, keep it). A key is never in both tables, so
    each move looks in the second only when the first did not hold it."""

    def wake(self, key: Hashable) -> None:
        idle = self._idle
        if key in idle:
            del idle[key]
            self._receiving[key] = time.monotonic()

    def idle(self, key: Hashable) -> None:
        if self._receiving.pop(key, None) is None:
            self._idle.pop(key, None)  # then it goes to the end: the table stays in `since` order
        self._idle[key] = time.monotonic()

    def busy(self, key: Hashable) -> None:
        if self._receiving.pop(key, None) is None:
            self._idle.pop(key, None)

    forget = busy


RECEIVING, IDLE, BUSY, ENDED = 0, 1, 2, 3  # what a connection does, in ThreadDeadlines


class ThreadDeadlines:
    """Deadlines for a thread per connection, without a lock per request: the same table as
    `Deadlines`, kept as one [state, since] stamp per connection that only its own thread moves.

    With a thread per connection, `Deadlines` takes its lock three times per request, from as many
    threads as connections. Here a move is one dict lookup and two list stores, each atomic under the
    GIL: the three moves of a request took 0.67 µs against the locked table's 4.55 µs (timeit, one
    thread, lab VM, 2026-12-07, shared and busy), about a tenth of threaded's CPU per /json request.
    (make bench --ablation put the locked table's cost at +6.7 µs of 43, interval -1.0 to +13.1: not
    settled on that busy machine.) The owner writes `since` before `state`, and the sweeper reads
    `state` before `since`, so a stamp read mid-move is never stricter than either side of it. The
    price is the sweep: it looks at every connection (a C-level copy of the table, then a check
    each), 0.8 ms per sweep at 2,000 connections (0.8 % of a core at ten sweeps a second), 8 ms at
    20,000. A connection the sweeper ends (or evicts) is marked ENDED, so it is named once; the race
    that remains (a request beginning just as its connection is found idle too long) is the one the
    locked table has too.
    """

    def __init__(self, request_timeout: float, keepalive_timeout: float) -> None:
        self.request_timeout = request_timeout
        self.keepalive_timeout = keepalive_timeout
        self._stamps: dict[Hashable, list[float]] = {}

    def receiving(self, key: Hashable, since: float | None = None) -> None:
        now = time.monotonic() if since is None else since
        stamp = self._stamps.get(key)
        if stamp is None:
            self._stamps[key] = [RECEIVING, now]
        elif stamp[0] != RECEIVING:
            stamp[1] = now
            stamp[0] = RECEIVING

    def wake(self, key: Hashable) -> None:
        stamp = self._stamps.get(key)
        if stamp is not None and stamp[0] == IDLE:
            stamp[1] = time.monotonic()
            stamp[0] = RECEIVING

    def idle(self, key: Hashable) -> None:
        now = time.monotonic()
        stamp = self._stamps.get(key)
        if stamp is None:
            self._stamps[key] = [IDLE, now]
        else:
            stamp[1] = now
            stamp[0] = IDLE

    def busy(self, key: Hashable) -> None:
        stamp = self._stamps.get(key)
        if stamp is not None:
            stamp[0] = BUSY

    def forget(self, key: Hashable) -> None:
        self._stamps.pop(key, None)

    def is_receiving(self, key: Hashable) -> bool:
        stamp = self._stamps.get(key)
        return stamp is not None and stamp[0] == RECEIVING

    def overdue(self, now: float | None = None) -> tuple[list[Hashable], list[Hashable]]:
        """(late requests, expired idle connections), each named once (marked ended)."""
        now = time.monotonic() if now is None else now
        late: list[Hashable] = []
        expired: list[Hashable] = []
        for key, stamp in list(self._stamps.items()):
            state = stamp[0]
            if state == RECEIVING and stamp[1] + self.request_timeout <= now:
                late.append(key)
            elif state == IDLE and stamp[1] + self.keepalive_timeout <= now:
                expired.append(key)
            else:
                continue
            stamp[0] = ENDED
        return late, expired

    def victim(self) -> tuple[Hashable, bool] | None:
        """(connection, whether it was receiving) to close at the cap, marked ended: the longest
        receiving, else the longest idle; None when every connection runs a request."""
        best: dict[float, tuple[float, Hashable]] = {}
        for key, stamp in list(self._stamps.items()):
            state = stamp[0]
            if state in (RECEIVING, IDLE) and (state not in best or stamp[1] < best[state][0]):
                best[state] = (stamp[1], key)
        for state in (RECEIVING, IDLE):
            if state in best:
                key = best[state][1]
                self._stamps[key][0] = ENDED
                return key, state == RECEIVING
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
