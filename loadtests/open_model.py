"""The open model's schedule: offered rate per step, steps added while the SLO holds, the arrivals.

LAB_RATES: offered requests/s per step of LAB_DURATION seconds; LAB_PATH, LAB_ARRIVAL: the request
and uniform or poisson arrivals. LAB_EXTEND_MAX, LAB_EXTEND_FACTOR, LAB_RATE_CEILING, LAB_SLO_P99_MS:
while the last step met the SLO, add up to LAB_EXTEND_MAX steps, each LAB_EXTEND_FACTOR higher, never
past LAB_RATE_CEILING (the generator's sustainable rate); EXTENSION says what was added and why it
stopped (the shape writes it to shape.json).
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Callable
from typing import Any

import gevent

from loadtests import catalogue
from loadtests.recorder import OPEN_MAX_INFLIGHT, RECORDER, env_float

RATES = [float(r) for r in os.environ.get("LAB_RATES", "").split(",") if r.strip()]  # grows by extend()
EXTEND_MAX = int(env_float("LAB_EXTEND_MAX", 0))
EXTEND_FACTOR = env_float("LAB_EXTEND_FACTOR", catalogue.EXTEND_FACTOR)
RATE_CEILING = env_float("LAB_RATE_CEILING", 0) or None
SLO_P99_MS = env_float("LAB_SLO_P99_MS", catalogue.DEFAULT_SLO_P99_MS)
# The steps added past the planned ones: each judged step, and why the adding stopped.
EXTENSION: dict[str, Any] = {"planned": len(RATES), "max": EXTEND_MAX, "factor": EXTEND_FACTOR,
                             "ceiling": RATE_CEILING, "slo_p99_ms": SLO_P99_MS, "judged": [], "stop": None}
_PENDING: dict[int, float] = {}  # open-model requests in flight: key -> scheduled start
_OPEN_BEGAN: list[float] = []  # when the open-model user started offering


def current_rate(when: float) -> float | None:
    """The offered rate at `when`: through the warm-up a ramp from a fifth of the first step's rate to
    all of it (a cold client opening every connection at once would storm the server), then one step
    per LAB_DURATION seconds of the measured phase; None once the last step is over."""
    if not RATES:
        return None
    start = RECORDER.measure_start
    if start is None or when < start:
        warmup = max(0.1, env_float("LAB_WARMUP", 2))
        began = _OPEN_BEGAN[0] if _OPEN_BEGAN else when
        return RATES[0] * min(1.0, 0.2 + 0.8 * (when - began) / warmup)
    step = int((when - start) / env_float("LAB_DURATION", 10))
    if step == len(RATES):
        extend(when)
    return RATES[step] if step < len(RATES) else None


def _last_step_miss(now: float) -> str | None:
    """Why the last step missed the SLO, judged as it ends (None: it met it). Requests still in flight
    past the SLO count as misses; the results judge the step again from every request."""
    k = len(RATES) - 1
    step = RECORDER.steps.get(k)
    if step is None or not step[3]:
        return "nothing was offered"
    _n, fails, hdr, offered, _late, dropped = step[:6]
    duration = env_float("LAB_DURATION", 10)
    lo = (RECORDER.measure_start or now) + k * duration
    overdue = sum(1 for t in _PENDING.values() if lo <= t < lo + duration and now - t >= SLO_P99_MS / 1000)
    if not hdr.get_total_count():
        return "no successful request"
    p99 = hdr.get_value_at_percentile(99) / 1000
    if p99 >= SLO_P99_MS:
        return f"p99 {p99:.0f} ms >= {SLO_P99_MS:g} ms"
    bad = fails + dropped + overdue
    if bad >= FAILURE_SHARE * offered:
        return f"{bad} of {offered} failed, dropped or still waiting past the SLO"
    return None


FAILURE_SHARE = 0.01  # as lab/results/openmodel.py: a step with this share failed or dropped misses the SLO


def extend(now: float) -> bool:
    """At the end of the last step: add a step EXTEND_FACTOR higher when it met the SLO, unless
    EXTEND_MAX were added already or the ceiling is reached. Decides once per step: True while the last
    step is still under way."""
    ext = EXTENSION
    if ext["stop"] is not None or EXTEND_MAX <= 0 or not RATES or RECORDER.measure_start is None:
        return False
    if now < RECORDER.measure_start + len(RATES) * env_float("LAB_DURATION", 10):
        return True
    if len(RATES) - ext["planned"] >= EXTEND_MAX:
        ext["stop"] = f"{EXTEND_MAX} steps added, the most allowed"
        return False
    miss = _last_step_miss(now)
    ext["judged"].append({"rate": RATES[-1], "met": miss is None, "miss": miss})
    if miss is not None:
        ext["stop"] = f"{RATES[-1]:g}/s missed the SLO ({miss})"
        return False
    nxt = catalogue.extend_rate(RATES[-1], EXTEND_FACTOR, RATE_CEILING)
    if nxt is None:
        ext["stop"] = f"the generator's sustainable rate ({RATE_CEILING:g}/s) was reached"
        return False
    RATES.append(nxt)
    return True


def arrivals(send: Callable[[str, float], None]) -> None:
    """Start requests on the schedule, each in its own greenlet whatever the earlier ones take, at most
    OPEN_MAX_INFLIGHT in flight; send(path, intended start) makes one request. Returns when the last
    step is over."""
    path = os.environ.get("LAB_PATH") or "/json"
    poisson = os.environ.get("LAB_ARRIVAL") == "poisson"
    rng = random.Random()
    inflight = [0]
    keys = itertools.count()
    due = time.time()
    _OPEN_BEGAN[:] = [due]
    for _ in range(10**9):  # bounded; the shape stops this user when the last step ends
        rate = current_rate(due)
        if not rate:  # the last step is over: end the task, so that a stopping Locust need not wait
            gevent.sleep(0.05)  # out its --stop-timeout for it (it asks for the task again until then)
            return
        due += rng.expovariate(rate) if poisson else 1.0 / rate
        wait = due - time.time()
        if wait > 0:
            gevent.sleep(wait)
        if inflight[0] >= OPEN_MAX_INFLIGHT:
            RECORDER.drop(due)
            continue
        RECORDER.offer(due, time.time() - due)
        inflight[0] += 1
        key = next(keys)
        _PENDING[key] = due
        gevent.spawn(_one, send, path, due, inflight, key)


def _one(send: Callable[[str, float], None], path: str, intended: float, inflight: list[int],
         key: int) -> None:
    try:
        send(path, intended)
    finally:
        inflight[0] -= 1
        _PENDING.pop(key, None)
