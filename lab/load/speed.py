"""The machine's speed beside the servers: a fixed pure-Python loop on the server CPUs, timed per window.

A drift control. The same loop of bytecode costs more CPU time when the machine runs slower (another
tenant on the host, a throttled clock, shared caches), so its work per CPU-millisecond measured during
a repetition is the speed that repetition ran at, and a server's CPU per request can be read next to
it: `normalised = raw x speed / reference`. The probe runs under SCHED_IDLE (any server thread that
wakes preempts it at once) in short bursts (`duty`, default 5 % of one CPU: 2 ms of every 40 ms), so
it takes little from the servers' CPU and leaves their caches mostly alone; it counts only the CPU time
it got, so a busy CPU shortens its windows but does not bias them. Its rate counts only the units that
ran warm: a unit in which it lost the CPU (its wall time exceeds its CPU time), the one after it, and
each burst's first start from caches another process filled. Counting every unit, the probe read the
machine 4-9 % slower beside threaded on /db and /io (its many threads wake it the most) than beside the
other servers at the same moment, and so took that much off threaded's CPU per request.

    python -m lab.load.speed --cpus 0 --out speed.jsonl [--duty 0.05] [--max-seconds 600]

Each line of the output is one window: {"t": epoch seconds at its end, "work": loops done,
"cpu_s": the probe's CPU seconds, "clean_work", "clean_cpu_s": the same over the units that ran
warm}. `LAB_SPEED_PROBE` (--speed-probe): yes (default) or no.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.cpus import parse_cpus

CHOICES = ("yes", "no")
DEFAULT_DUTY = 0.05
BURST_S = 0.002  # one burst of work; the rest of the cycle the probe sleeps
WINDOW_S = 0.25  # one output line per window
LOOP = 200  # iterations per unit of work (~15-25 µs of CPython)
MIN_CPU_S = 0.002  # a window in which the probe got less CPU than this says nothing
PREEMPTED_S = 5e-6  # a unit whose wall time exceeds its CPU time by this much lost the CPU meanwhile
DEFAULT_MAX_SECONDS = 900.0
FILE = "speed.jsonl"


def _unit() -> int:
    """One unit of fixed work: integer arithmetic in the interpreter's own loop."""
    x = 0
    for i in range(LOOP):
        x += i * i % 7
    return x


def run(out: Path, cpus: Sequence[int], duty: float, max_seconds: float) -> None:
    """Bursts of work on `cpus` until SIGTERM or max_seconds, one window per line to `out`."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    with contextlib.suppress(OSError, AttributeError):  # not Linux: a normal-priority probe still measures
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    cycle = BURST_S / duty
    end = time.monotonic() + max_seconds
    with out.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"probe": "speed", "loop": LOOP, "duty": duty, "burst_s": BURST_S,
                             "window_s": WINDOW_S, "cpus": list(cpus)}) + "\n")
        fh.flush()
        while not stop[0] and time.monotonic() < end:
            w_end = time.monotonic() + WINDOW_S
            work, c0 = 0, time.thread_time()
            clean_work, clean_cpu = 0, 0.0
            while not stop[0] and time.monotonic() < w_end:
                b0 = time.monotonic()
                t0 = time.thread_time()
                warm = False  # the unit before ran without losing the CPU: this one starts warm
                cpu, wall = t0, b0
                while cpu - t0 < BURST_S and wall - b0 < cycle:
                    _unit()
                    work += 1
                    cpu2, wall2 = time.thread_time(), time.monotonic()
                    ran = wall2 - wall - (cpu2 - cpu) < PREEMPTED_S
                    if ran and warm:
                        clean_work += 1
                        clean_cpu += cpu2 - cpu
                    warm, cpu, wall = ran, cpu2, wall2
                time.sleep(max(0.0, cycle - (time.monotonic() - b0)))
            fh.write(json.dumps({"t": round(time.time(), 4), "work": work,
                                 "cpu_s": round(time.thread_time() - c0, 7), "clean_work": clean_work,
                                 "clean_cpu_s": round(clean_cpu, 7)}) + "\n")
            fh.flush()


def start(out: Path, cpus: Sequence[int] | None, duty: float = DEFAULT_DUTY,
          max_seconds: float = DEFAULT_MAX_SECONDS) -> subprocess.Popen[bytes]:
    """The probe as a subprocess on `cpus` (the server CPUs); stop it with stop()."""
    cmd = [sys.executable, "-m", "lab.load.speed", "--out", str(out), "--duty", f"{duty:g}",
           "--max-seconds", f"{max_seconds:g}"]
    if cpus:
        cmd += ["--cpus", ",".join(map(str, cpus))]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])


def stop(popen: subprocess.Popen[bytes]) -> None:
    """End the probe at once. SIGKILL: under SCHED_IDLE on a busy CPU a SIGTERM can wait for idle time
    to be handled, and the lines it already wrote are whole (a cut last line is skipped by read())."""
    if popen.poll() is None:
        popen.kill()
    popen.wait()


def read(path: Path) -> list[dict[str, float]]:
    """The windows of a probe's file; [] when it is missing or empty."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short when the probe was stopped
        if isinstance(row, dict) and {"t", "work", "cpu_s"} <= row.keys():
            rows.append(row)
    return rows


def speed(rows: Sequence[dict[str, float]], start: float, end: float) -> dict[str, Any] | None:
    """Work per CPU millisecond over the windows that ended in [start, end + one window]: the pooled
    rate (work / CPU time) of the units that ran warm (files without them: of every unit), with the
    windows' log-scatter; None when the probe got too little CPU."""
    inside = [r for r in rows if start + WINDOW_S <= r["t"] <= end + WINDOW_S]
    clean = all("clean_cpu_s" in r for r in inside)
    work_key, cpu_key = ("clean_work", "clean_cpu_s") if clean else ("work", "cpu_s")
    inside = [r for r in inside if r[cpu_key] >= MIN_CPU_S]
    cpu = sum(r[cpu_key] for r in inside)
    if len(inside) < 2 or cpu <= 0:
        return None
    logs = [math.log(r[work_key] / r[cpu_key]) for r in inside if r[work_key]]
    out = {"work_per_cpu_ms": round(sum(r[work_key] for r in inside) / cpu / 1000, 3),
           "windows": len(inside), "cpu_s": round(cpu, 4),
           "window_log_sd": round(statistics.stdev(logs), 4) if len(logs) > 1 else None}
    if clean:  # how much of the probe's CPU ran warm, and the rate over all of it
        total = sum(r["cpu_s"] for r in inside) or cpu
        out["warm_share"] = round(cpu / total, 3)
        out["all_work_per_cpu_ms"] = round(sum(r["work"] for r in inside) / total / 1000, 3)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.load.speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cpus", default="", help="CPU list to run on, e.g. 0 (default: as started)")
    p.add_argument("--duty", type=float, default=DEFAULT_DUTY, help="share of one CPU to work (0.001-1)")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    args = p.parse_args(argv)
    if not 0.001 <= args.duty <= 1:
        p.error(f"--duty {args.duty:g} is out of range: 0.001 to 1 (a share of one CPU)")
    try:
        cpus = parse_cpus(args.cpus) if args.cpus else []
    except ValueError as exc:
        p.error(str(exc))
    run(args.out, cpus, args.duty, args.max_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
