"""Lab only (LAB_EXTRA_CPU_US): a fixed amount of pure-Python CPU work added to every request.

The work is a loop of a fixed iteration count, found once per process start (before multiproc forks)
so that it takes the asked microseconds of CPU time here; every request then runs the same loop. It
holds the GIL like any Python code: under the GIL on threaded, on the one thread of the hub on gevent,
on the event loop on asyncio and multiproc. `make selfcheck` uses it as a code change of known size.
"""

from __future__ import annotations

import functools
import time

CALIBRATION_ITERATIONS = 20_000  # ~1 ms a round on the lab machine
CALIBRATION_ROUNDS = 9


def spin(iterations: int) -> int:
    """The work: a linear congruential generator, `iterations` steps."""
    x = 1
    for _ in range(iterations):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def ns_per_iteration() -> float:
    """This thread's CPU time per step of `spin`: the fastest of several rounds, the one least disturbed
    by other work on the machine (CPU time, so waiting for the CPU does not count)."""
    best = float("inf")
    for _ in range(CALIBRATION_ROUNDS):
        began = time.thread_time_ns()
        spin(CALIBRATION_ITERATIONS)
        best = min(best, time.thread_time_ns() - began)
    return max(best, 1.0) / CALIBRATION_ITERATIONS


@functools.lru_cache(maxsize=8)
def iterations_for(us: float) -> int:
    """The iteration count that takes `us` microseconds of CPU here (0 for 0); cached per process, so a
    process calibrates once and forked workers inherit the count."""
    if us <= 0:
        return 0
    return max(1, round(us * 1000 / ns_per_iteration()))
