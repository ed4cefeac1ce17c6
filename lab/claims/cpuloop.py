"""A pure-Python CPU loop in k threads or k processes; standard library only.

Run as a script (`python lab/claims/cpuloop.py threads|processes <k> <units> <n>`), so any
interpreter can run it, a free-threaded one included. Every worker does `units` units of
`n` loop steps; all start together; one JSON line reports the wall time and whether the GIL
was on.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time


def work(units: int, n: int) -> int:
    """The same loop as the servers' /cpu (servers.contract.cpu_work), `units` times."""
    acc = 0
    for _ in range(units):
        for i in range(n):
            acc = (acc * 31 + i) & 0xFFFFFFFF
    return acc


def in_threads(k: int, units: int, n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of k threads working at once."""
    go = threading.Event()
    threads = [threading.Thread(target=lambda: (go.wait(), work(units, n))) for _ in range(k)]
    for t in threads:
        t.start()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    end = resource.getrusage(resource.RUSAGE_SELF)
    return wall, end.ru_utime + end.ru_stime - cpu.ru_utime - cpu.ru_stime


def in_processes(k: int, units: int, n: int) -> tuple[float, float]:
    """k forked children wait on a pipe, then all work; (wall seconds from release to the last,
    CPU seconds of the children)."""
    go_r, go_w = os.pipe()
    pids = []
    for _ in range(k):
        pid = os.fork()
        if pid == 0:  # child
            os.close(go_w)
            os.read(go_r, 1)
            work(units, n)
            os._exit(0)
        pids.append(pid)
    os.close(go_r)
    time.sleep(0.05)  # let them all reach the read
    start = time.perf_counter()
    os.write(go_w, b"x" * k)
    cpu = 0.0
    for pid in pids:
        usage = os.wait4(pid, 0)[2]
        cpu += usage.ru_utime + usage.ru_stime
    elapsed = time.perf_counter() - start
    os.close(go_w)
    return elapsed, cpu


def gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def main(argv: list[str]) -> int:
    mode, k, units, n = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    work(1, n)  # warm-up
    run = in_threads if mode == "threads" else in_processes
    seconds, cpu = run(k, units, n)
    print(
        json.dumps(
            {
                "mode": mode,
                "workers": k,
                "units": units,
                "n": n,
                "seconds": seconds,
                "cores_used": cpu / seconds,
                "units_per_second": k * units / seconds,
                "gil": gil_enabled(),
                "python": sys.version.split()[0],
                "executable": sys.executable,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
