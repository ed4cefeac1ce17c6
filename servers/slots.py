"""Slots: the first-come, first-served gate of the async app (in-flight requests, pool connections)."""

from __future__ import annotations

import asyncio
from collections import deque

SWEEP_SECONDS = 0.02  # while requests wait for a slot or a connection, how often overdue waits end


def loop_time() -> float:
    return asyncio.get_running_loop().time()


class Slots:
    """A first-come, first-served gate of `size` slots for one event loop: in-flight requests
    (LAB_MAX_INFLIGHT) and pool connections (LAB_POOL_SIZE) each have one.

    A free slot is one comparison; a wait is one future. A freed slot is handed straight to the
    longest waiter, so nobody can barge in between (asyncpg's own pool queue lets a newcomer take
    a just-released connection while the woken waiter re-queues at the back, which starved some
    waits past the acquire timeout under steady load). Deadlines are enforced by `expire`, which
    the app's sweeper calls every SWEEP_SECONDS, rather than a timer per wait. Only the loop's
    own thread touches it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0
        self.waiting = 0
        # (deadline, future) in arrival order; every wait of a gate has the same timeout, so
        # deadlines never decrease along the queue.
        self._waiters: deque[tuple[float, asyncio.Future[bool]]] = deque()

    def try_take(self) -> bool:
        # Waiters exist only while every slot is taken (give() hands a slot to a waiter before it
        # frees one), so a free slot never jumps the queue.
        if self.taken < self.size:
            self.taken += 1
            return True
        return False

    async def take(self, deadline: float) -> bool:
        """Wait for a slot until the loop's clock passes `deadline` (give or take one sweep):
        True once handed one, False if none came."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append((deadline, fut))
        self.waiting += 1
        try:
            return await fut
        except BaseException:  # cancelled (the client went away): a slot handed over goes on
            if fut.done() and not fut.cancelled() and fut.result():
                self.give()
            raise
        finally:
            self.waiting -= 1

    def give(self) -> None:
        """Free a slot: hand it straight to the longest waiter still waiting, if any."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()[1]
            if not fut.done():
                fut.set_result(True)
                return
        self.taken -= 1

    def expire(self, now: float) -> None:
        """End the waits whose deadline has passed: their take() returns False."""
        waiters = self._waiters
        while waiters and waiters[0][0] <= now:
            fut = waiters.popleft()[1]
            if not fut.done():
                fut.set_result(False)
