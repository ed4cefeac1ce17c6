"""Who gets a pool connection: a first-come gate for the sync pool, and the fail-fast rule both pools use.

`HoldClock` keeps a moving average of how long a request holds a pool connection. A request that
finds `ahead` others already waiting for `size` connections will wait about (ahead + 1) x hold / size;
when that is past FAIL_FAST_SHARE of the acquire timeout it is refused at once (a prompt 503) instead
of waiting out the timeout and being refused then.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

FAIL_FAST_SHARE = 0.75  # refuse when the expected wait passes this share of the acquire timeout
_WEIGHT = 0.1  # of each new hold time in the moving average


class HoldClock:
    """A moving average of pool hold times (seconds) and the fail-fast rule built on it."""

    __slots__ = ("mean",)

    def __init__(self) -> None:
        self.mean = 0.0

    def held(self, seconds: float) -> None:
        self.mean += _WEIGHT * (seconds - self.mean)

    def expected_wait(self, ahead: int, size: int) -> float:
        return (ahead + 1) * self.mean / size

    def hopeless(self, ahead: int, size: int, timeout: float) -> bool:
        """True when the queue ahead cannot be served before the deadline."""
        return self.expected_wait(ahead, size) > timeout * FAIL_FAST_SHARE


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
