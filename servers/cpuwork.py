"""Lab only (LAB_EXTRA_CPU_US): a fixed amount of pure-Python CPU work added to every request.

The work is a loop whose iteration count is found once per process start (before multiproc forks)
from a tight calibration, then corrected in place: inside a request the loop starts from caches the
request's other code has evicted, which costs about 2 µs a call more than the calibration sees (a
+10 % change of asyncio's /json came out as +14 %). So one call in SAMPLE_EVERY is timed where it
runs, and after each SAMPLES of those the count is set so that a call takes the asked CPU time. It
holds the GIL like any Python code: under the GIL on threaded, on the one thread of the hub on gevent,
on the event loop on asyncio and multiproc. `make selfcheck` uses it as a code change of known size.
"""

from __future__ import annotations

import functools
import statistics
import time

CALIBRATION_ITERATIONS = 20_000  # ~1 ms a round on the lab machine
CALIBRATION_ROUNDS = 9
SAMPLE_EVERY = 8  # one call in 8 is timed: two clock reads (~0.5 µs), under 0.1 µs a request on average
SAMPLES = 25  # timed calls per correction


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


def clock_ns() -> float:
    """What a pair of CPU-clock reads costs by itself, taken out of every timed call."""
    reads = []
    for _ in range(201):
        began = time.thread_time_ns()
        reads.append(time.thread_time_ns() - began)
    return float(statistics.median(reads))


@functools.lru_cache(maxsize=8)
def iterations_for(us: float) -> int:
    """The iteration count that takes `us` microseconds of CPU in a tight loop here (0 for 0); cached per
    process, so a process calibrates once and forked workers inherit the count."""
    if us <= 0:
        return 0
    return max(1, round(us * 1000 / ns_per_iteration()))


class Work:
    """The added work of every request: `run()` once per request; None from `for_us(0)`."""

    def __init__(self, us: float) -> None:
        self.target_ns = us * 1000
        self.iterations = iterations_for(us)
        self.step_ns = us * 1000 / self.iterations
        self.clock_ns = clock_ns()
        self.calls = 0
        self.corrections = 0
        self._timed: list[float] = []

    @classmethod
    def for_us(cls, us: float) -> Work | None:
        return cls(us) if us > 0 else None

    def run(self) -> None:
        self.calls += 1
        if self.calls % SAMPLE_EVERY:
            spin(self.iterations)
            return
        began = time.thread_time_ns()
        spin(self.iterations)
        self._timed.append(time.thread_time_ns() - began - self.clock_ns)
        if len(self._timed) >= SAMPLES:
            self._correct()

    def _correct(self) -> None:
        # A call costs a fixed part (starting cold) plus the iterations: keep the iterations' part
        # at its calibrated rate and give the rest of the target to them.
        fixed = statistics.median(self._timed) - self.iterations * self.step_ns
        self.iterations = max(0, round((self.target_ns - fixed) / self.step_ns))
        self.corrections += 1
        self._timed.clear()
