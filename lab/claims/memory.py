"""Experiment 2: the memory one parked unit costs: OS thread, greenlet, asyncio task.

A fresh process (`python -m lab.claims.memory <kind> <n>`) reads its own RSS and virtual size
from /proc, parks n units on one event, reads them again and divides. Virtual size counts the
address space reserved for each thread's stack (RLIMIT_STACK, 8 MiB by default); RSS counts only
the pages touched, which is what the machine actually spends.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from lab.claims import stats, worker
from lab.claims.plan import Plan

SMALL_STACK = 512 * 1024
SETTLE = 0.3  # seconds for the parked units to reach their wait and the kernel to account them

KINDS: dict[str, str] = {
    "thread": "OS threads (threading.Thread, default stack size)",
    "thread-512k": "OS threads with threading.stack_size(512 KiB)",
    "greenlet": "gevent greenlets (gevent.spawn, waiting on a gevent Event)",
    "asyncio-task": "asyncio tasks (waiting on an asyncio.Event)",
}


def _status() -> dict[str, int]:
    """VmRSS and VmSize of this process, in bytes."""
    found = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmSize"):
                found[key] = int(rest.split()[0]) * 1024
    return found


def _park_threads(n: int, stack: int) -> Callable[[], dict[str, int]]:
    if stack:
        threading.stack_size(stack)
    release = threading.Event()
    threads = [threading.Thread(target=release.wait, args=(60,), daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(SETTLE)
    after = _status()
    # Not released: 10,000 threads waking at once queue for the GIL for many seconds; the
    # process exits instead (they are daemons).
    return lambda: after


def _park_greenlets(n: int) -> Callable[[], dict[str, int]]:
    import gevent
    from gevent.event import Event

    release = Event()
    lets = [gevent.spawn(release.wait, 60) for _ in range(n)]
    gevent.sleep(SETTLE)  # every greenlet runs to its wait
    after = _status()
    release.set()
    gevent.joinall(lets, timeout=10)
    return lambda: after


def _park_tasks(n: int) -> Callable[[], dict[str, int]]:
    import asyncio

    async def main() -> dict[str, int]:
        release = asyncio.Event()
        tasks = [asyncio.create_task(release.wait()) for _ in range(n)]
        await asyncio.sleep(SETTLE)
        after = _status()
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        return after

    after = asyncio.run(main())
    return lambda: after


def measure(kind: str, n: int) -> dict[str, Any]:
    """Park n units of `kind` in this process; bytes per unit of RSS and of virtual size."""
    if kind == "greenlet":
        import gevent  # noqa: F401  (imported before the baseline: its cost is not per unit)
    import asyncio  # noqa: F401

    # Baseline with the machinery warm: one unit parked and released first.
    parkers: dict[str, Callable[[int], Callable[[], dict[str, int]]]] = {
        "thread": lambda k: _park_threads(k, 0),
        "thread-512k": lambda k: _park_threads(k, SMALL_STACK),
        "greenlet": _park_greenlets,
        "asyncio-task": _park_tasks,
    }
    parkers[kind](1)
    before = _status()
    after = parkers[kind](n)()
    stack_limit = resource.getrlimit(resource.RLIMIT_STACK)[0]
    return {
        "kind": kind,
        "n": n,
        "rss_per_unit": (after["VmRSS"] - before["VmRSS"]) / n,
        "virt_per_unit": (after["VmSize"] - before["VmSize"]) / n,
        "rss_before": before["VmRSS"],
        "rss_after": after["VmRSS"],
        "thread_stack_bytes": SMALL_STACK if kind == "thread-512k" else stack_limit,
    }


def run(plan: Plan, say: Callable[[str], None]) -> dict[str, Any]:
    """Each kind at each size, plan.reps times (at most 3: the figure barely moves), fresh processes."""
    rows: list[dict[str, Any]] = []
    for kind, what in KINDS.items():
        for n in plan.park:
            if kind == "thread-512k" and n != plan.park[0]:
                continue  # one size shows the stack size's effect
            reps: list[dict[str, Any]] = []
            error = None
            for _ in range(min(plan.reps, 3)):
                try:
                    reps.append(worker.run("lab.claims.memory", [kind, str(n)], timeout=120))
                except worker.WorkerError as exc:
                    error = str(exc)
                    break
            row: dict[str, Any] = {
                "kind": kind,
                "what": what,
                "n": n,
                "error": error,
                "rss": stats.summary([r["rss_per_unit"] for r in reps]),
                "virt": stats.summary([r["virt_per_unit"] for r in reps]),
                "thread_stack_bytes": reps[0]["thread_stack_bytes"] if reps else None,
            }
            rows.append(row)
            rss, virt = row["rss"]["median"], row["virt"]["median"]
            say(
                f"memory {kind} x{n}: RSS {stats.fmt(rss and rss / 1024)} KiB, "
                f"virtual {stats.fmt(virt and virt / 1024)} KiB per unit"
                + (f" ERROR {error}" if error else "")
            )
    return {"rows": rows, "stack_limit_bytes": resource.getrlimit(resource.RLIMIT_STACK)[0]}


def main(argv: list[str]) -> int:
    worker.emit(measure(argv[0], int(argv[1])))
    os._exit(0)  # parked daemon threads need no goodbye


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
