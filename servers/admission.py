"""Who gets a pool connection: a first-come gate for the sync pool, and the fail-fast rule both pools use.

`HoldClock` learns how long a request holds a pool connection. A request that finds `ahead` others
already waiting for `size` connections will wait about (ahead + 1) x hold / size, plus one connect
while the pool is opening sessions (after PostgreSQL ended them, say). When that is past
FAIL_FAST_SHARE of the acquire timeout it is refused at once (a prompt 503) instead of waiting out
the timeout and being refused then. The share leaves room for the estimate's error: under steady
overload the queue sits at the refusal line, and a wait admitted there must still end in time.

The typical hold is the median of the last HOLDS_PER_CONNECTION x size holds once the `size`
longest are set aside. A stall (the database or the process paused for a moment) stretches only
the `size` holds in progress: set aside, they do not move it; a workload that turned slow does,
within two rounds of the pool.
A connect is not counted as part of a hold: it happens once per session, not once per request,
so a pool that has just reopened its sessions does not take itself for a slow one. With no hold
ended for longer than the horizon (the acquire timeout) plus a hold, a fresh or idle pool, the
clock knows nothing and refuses nothing: the acquire timeout still bounds the wait.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

FAIL_FAST_SHARE = 0.75  # refuse when the expected wait passes this share of the acquire timeout
HOLDS_PER_CONNECTION = 3  # the median is over this many recent holds per pool connection


class HoldClock:
    """Recent pool hold times (seconds, on the caller's monotonic clock) and the fail-fast rule."""

    __slots__ = ("_holds", "_last", "_median", "_size", "connect_seconds", "connecting", "horizon")

    def __init__(self, horizon: float, size: int) -> None:
        self.horizon = horizon  # after this long plus a hold with none ended, the holds are stale
        self._size = size
        self._holds: deque[float] = deque(maxlen=HOLDS_PER_CONNECTION * size)
        self._median: float | None = 0.0  # None: not worked out since the last hold
        self._last = -math.inf  # when the last hold ended
        self.connecting = 0  # sessions being opened now (the pool keeps the count)
        self.connect_seconds = 0.0  # how long the last one took to open

    def held(self, seconds: float, now: float) -> None:
        self._holds.append(seconds)
        self._median = None  # worked out when a full pool needs it, not on every release
        self._last = now

    def typical(self, now: float) -> float:
        """The median recent hold, the `size` longest set aside; 0.0 when there is none to go by."""
        median = self._median
        if median is None:
            ordered = sorted(self._holds)  # a copy in one step (under the GIL) of at most 3 x size
            median = self._median = ordered[max(0, len(ordered) - self._size) // 2]
        return 0.0 if now - self._last > self.horizon + median else median

    def expected_wait(self, ahead: int, size: int, now: float) -> float:
        hold = self.typical(now)
        if not hold:
            return 0.0
        return (ahead + 1) * hold / size + (self.connect_seconds if self.connecting else 0.0)

    def hopeless(self, ahead: int, size: int, timeout: float, now: float) -> bool:
        """True when the queue ahead cannot be served before the deadline."""
        return self.expected_wait(ahead, size, now) > timeout * FAIL_FAST_SHARE


class Token(Protocol):
    """A one-shot wake-up: acquire blocks until release (or the timeout)."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...

    def release(self) -> None: ...


def thread_token() -> Token:
    lock = threading.Lock()
    lock.acquire()
    return lock


class _Waiter:
    __slots__ = ("granted", "token")

    def __init__(self, token: Token) -> None:
        self.token = token
        self.granted = False


class FairGate:
    """`size` slots handed out first come, first served (threads, or greenlets with their own token).

    A freed slot goes straight to the longest waiter, so a newcomer never barges past one that
    was woken but has not run yet (what a plain semaphore allows)."""

    def __init__(self, size: int, token: Callable[[], Token] = thread_token) -> None:
        self.size = size
        self.free = size
        self._token = token
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_take(self) -> bool:
        with self._lock:
            if self.free and not self._waiters:
                self.free -= 1
                return True
            return False

    def take(self, timeout: float) -> bool:
        """Queue for a slot for up to `timeout` seconds; True once handed one."""
        with self._lock:
            if self.free and not self._waiters:
                self.free -= 1
                return True
            waiter = _Waiter(self._token())
            self._waiters.append(waiter)
        try:
            waiter.token.acquire(timeout=timeout)
        except BaseException:  # interrupted (GreenletExit): a slot handed over meanwhile goes on
            self._leave(waiter)
            if waiter.granted:
                self.give()
            raise
        self._leave(waiter)
        return waiter.granted

    def _leave(self, waiter: _Waiter) -> None:
        with self._lock:
            if not waiter.granted:  # timed out: leave the queue
                self._waiters.remove(waiter)

    def give(self) -> None:
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.granted = True
                waiter.token.release()
                return
            self.free += 1
