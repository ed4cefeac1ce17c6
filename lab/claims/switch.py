"""Experiment 1: what one switch costs between two OS threads, two greenlets, two asyncio tasks.

Each variant ping-pongs between two units for a bounded number of round trips (two switches
each) and reports µs per switch; every variant runs in its own process (`python -m
lab.claims.switch <variant> <round-trips> <seconds>`), so gevent never touches the others.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from lab.claims import stats, worker
from lab.claims.plan import Plan

WAIT = 5.0  # seconds a ping-pong partner waits before it calls the run broken

# variant -> (what it is, how it switches)
VARIANTS: dict[str, str] = {
    "thread-event": "two OS threads, threading.Event ping-pong",
    "thread-condition": "two OS threads, threading.Condition ping-pong",
    "greenlet-switch": "two greenlets, raw greenlet.switch()",
    "gevent-event": "two gevent greenlets, gevent.event.Event ping-pong",
    "asyncio-sleep0": "two asyncio tasks, await asyncio.sleep(0)",
    "asyncio-event": "two asyncio tasks, asyncio.Event ping-pong",
    "uvloop-sleep0": "two asyncio tasks on uvloop, await asyncio.sleep(0)",
    "uvloop-event": "two asyncio tasks on uvloop, asyncio.Event ping-pong",
}


def _bounded(step: Callable[[], None], round_trips: int, seconds: float) -> tuple[int, float]:
    """Run `step` (one round trip) up to round_trips times or `seconds`; (done, elapsed)."""
    start = time.perf_counter()
    deadline = start + seconds
    done = 0
    while done < round_trips:
        for _ in range(min(500, round_trips - done)):
            step()
        done += min(500, round_trips - done)
        if time.perf_counter() > deadline:
            break
    return done, time.perf_counter() - start


def thread_event(round_trips: int, seconds: float) -> tuple[int, float]:
    import threading

    ping, pong, stop = threading.Event(), threading.Event(), threading.Event()

    def partner() -> None:
        while ping.wait(WAIT) and not stop.is_set():
            ping.clear()
            pong.set()

    t = threading.Thread(target=partner, daemon=True)
    t.start()

    def step() -> None:
        ping.set()
        if not pong.wait(WAIT):
            raise RuntimeError("the partner thread stopped answering")
        pong.clear()

    try:
        return _bounded(step, round_trips, seconds)
    finally:
        stop.set()
        ping.set()
        t.join(WAIT)


def thread_condition(round_trips: int, seconds: float) -> tuple[int, float]:
    import threading

    cond = threading.Condition()
    turn = ["main"]
    stop = threading.Event()

    def partner() -> None:
        with cond:
            while not stop.is_set():
                if not cond.wait_for(lambda: turn[0] == "partner" or stop.is_set(), WAIT):
                    return
                turn[0] = "main"
                cond.notify()

    t = threading.Thread(target=partner, daemon=True)
    t.start()

    def step() -> None:
        with cond:
            turn[0] = "partner"
            cond.notify()
            if not cond.wait_for(lambda: turn[0] == "main", WAIT):
                raise RuntimeError("the partner thread stopped answering")

    try:
        return _bounded(step, round_trips, seconds)
    finally:
        with cond:
            stop.set()
            cond.notify_all()
        t.join(WAIT)


def greenlet_switch(round_trips: int, seconds: float) -> tuple[int, float]:
    import greenlet

    main = greenlet.getcurrent()

    def partner() -> None:
        while True:
            main.switch()

    other = greenlet.greenlet(partner)
    result = _bounded(other.switch, round_trips, seconds)
    other.throw(greenlet.GreenletExit)
    return result


def gevent_event(round_trips: int, seconds: float) -> tuple[int, float]:
    import gevent
    from gevent.event import Event

    ping, pong = Event(), Event()
    out: list[tuple[int, float]] = []

    def partner() -> None:
        while ping.wait(WAIT):
            ping.clear()
            pong.set()

    def driver() -> None:
        def step() -> None:
            ping.set()
            if not pong.wait(WAIT):
                raise RuntimeError("the partner greenlet stopped answering")
            pong.clear()

        out.append(_bounded(step, round_trips, seconds))

    p = gevent.spawn(partner)
    gevent.spawn(driver).get()
    p.kill()
    return out[0]


def _asyncio(round_trips: int, seconds: float, event: bool, uvloop: bool) -> tuple[int, float]:
    import asyncio

    async def sleep0() -> tuple[int, float]:
        stop = False

        async def partner() -> None:
            while not stop:
                await asyncio.sleep(0)

        task = asyncio.create_task(partner())
        start = time.perf_counter()
        deadline, done = start + seconds, 0
        while done < round_trips:  # one round trip: we yield, the partner runs and yields back
            await asyncio.sleep(0)
            done += 1
            if done % 500 == 0 and time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - start
        stop = True
        await task
        return done, elapsed

    async def pingpong() -> tuple[int, float]:
        ping, pong = asyncio.Event(), asyncio.Event()

        async def partner() -> None:
            while True:
                await ping.wait()
                ping.clear()
                pong.set()

        task = asyncio.create_task(partner())
        start = time.perf_counter()
        deadline, done = start + seconds, 0
        while done < round_trips:
            ping.set()
            await asyncio.wait_for(pong.wait(), WAIT) if done % 1000 == 0 else await pong.wait()
            pong.clear()
            done += 1
            if done % 500 == 0 and time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - start
        task.cancel()
        return done, elapsed

    main = pingpong if event else sleep0
    if uvloop:
        import uvloop as uv

        return uv.run(main())
    return asyncio.run(main())


RUNNERS: dict[str, Callable[[int, float], tuple[int, float]]] = {
    "thread-event": thread_event,
    "thread-condition": thread_condition,
    "greenlet-switch": greenlet_switch,
    "gevent-event": gevent_event,
    "asyncio-sleep0": lambda n, s: _asyncio(n, s, event=False, uvloop=False),
    "asyncio-event": lambda n, s: _asyncio(n, s, event=True, uvloop=False),
    "uvloop-sleep0": lambda n, s: _asyncio(n, s, event=False, uvloop=True),
    "uvloop-event": lambda n, s: _asyncio(n, s, event=True, uvloop=True),
}


def measure(variant: str, round_trips: int, seconds: float) -> dict[str, Any]:
    """One repetition in this process: µs per switch (a round trip is two switches)."""
    RUNNERS[variant](min(1000, round_trips), seconds)  # warm-up
    done, elapsed = RUNNERS[variant](round_trips, seconds)
    return {
        "variant": variant,
        "round_trips": done,
        "seconds": elapsed,
        "us_per_switch": elapsed / (2 * done) * 1e6,
    }


def run(plan: Plan, say: Callable[[str], None]) -> dict[str, Any]:
    """Every variant, plan.reps times, each repetition in a fresh process."""
    variants: dict[str, Any] = {}
    for variant, what in VARIANTS.items():
        reps, error = [], None
        for _ in range(plan.reps):
            try:
                out = worker.run(
                    "lab.claims.switch",
                    [variant, str(plan.round_trips), str(plan.switch_seconds)],
                    timeout=plan.switch_seconds * 3 + 30,
                )
            except worker.WorkerError as exc:
                error = str(exc)
                break
            reps.append(out["us_per_switch"])
        variants[variant] = {"what": what, "reps_us": reps, "us": stats.summary(reps), "error": error}
        say(
            f"switch {variant}: {stats.fmt_summary(variants[variant]['us'], 'µs')}"
            + (f" ERROR {error}" if error else "")
        )
    return {"variants": variants, "round_trips": plan.round_trips}


def main(argv: list[str]) -> int:
    variant, round_trips, seconds = argv[0], int(argv[1]), float(argv[2])
    worker.emit(measure(variant, round_trips, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
