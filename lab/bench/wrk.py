"""One bounded wrk run against a target, and what it cost the server: CPU per request, rps, errors."""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import os
import re
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from lab.stack import cpu_budget

# The request head wrk sends besides Host: by default the one Locust's FastHttpUser sends (seen on the
# wire), so that `make load` and `make bench` measure the same request. A server that parses headers
# in Python pays for each: threaded /json under 0.1 core cost 21 % more with these two than without.
HEADS = {"locust": ("User-Agent: python/gevent-http-client-{version}", "Accept-Encoding: gzip, deflate, br"),
         "bare": ()}
WRK_OVERHEAD = 0.15  # seconds per wrk run beyond its duration (start, report, CPU reads): measured 0.13
WARM_SECONDS = 1  # wrk's warm-up per figure after each start (pools filled, first-request paths run)
GENERATOR_BOUND_CPU = 90.0  # % of one core
SATURATED_CPU = 80.0  # % of each server core below which the server was not the bottleneck
EDGE = 0.2  # the share of a wrk run at each end that CPU per request leaves out


@dataclass
class Target:
    name: str
    url: str
    pid: int
    usage_file: Path | None = None  # its budget's exact CPU counter; None: /proc's 10 ms ticks

    def cpu_seconds(self) -> float:
        exact = cpu_budget.read_usage(self.usage_file) if self.usage_file else None
        return exact if exact is not None else tree_cpu_seconds(self.pid)


@dataclass
class Sample:
    rps: float
    requests: int
    errors: int
    server_cpu: float  # % of one core, whole process tree
    generator_cpu: float  # % of one core
    cpu_us: float  # server CPU microseconds per completed request
    non2xx: int = 0  # of `errors`: answered, but not with 2xx or 3xx
    pid: int = 0  # the target process measured (a new one each repetition with --fresh-server yes)


def _median_spread(values: list[float]) -> tuple[float, float]:
    """The median, and (max - min) / median: how noisy the repetitions were."""
    mid = statistics.median(values)
    return mid, (max(values) - min(values)) / mid if mid else 0.0


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return _median_spread([s.rps for s in self.samples])[0]

    @property
    def spread(self) -> float:
        return _median_spread([s.rps for s in self.samples])[1]

    @property
    def cpu_us(self) -> float:
        return _median_spread([s.cpu_us for s in self.samples])[0]

    @property
    def cpu_spread(self) -> float:
        return _median_spread([s.cpu_us for s in self.samples])[1]

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.samples)

    @property
    def non2xx(self) -> int:
        return sum(s.non2xx for s in self.samples)

    @property
    def generator_bound(self) -> bool:
        return any(s.generator_cpu >= GENERATOR_BOUND_CPU for s in self.samples)

    def unsaturated(self, server_cores: float) -> bool:
        """The server had CPU to spare: something else (a busy machine, the database) was the limit."""
        return statistics.median(s.server_cpu for s in self.samples) < SATURATED_CPU * server_cores


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for proc in tree(pid):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_REQUESTS = re.compile(r"(\d+) requests in")
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class WrkCounts:
    rps: float
    requests: int
    non2xx: int  # "Non-2xx or 3xx responses": answered with an error
    socket_errors: int  # connect, read, write and timeout errors: not answered at all

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors


def parse_wrk(stdout: str, seconds: float) -> WrkCounts | None:
    """wrk's report, read; None when it holds no throughput line (wrk failed)."""
    rps_match = _RPS.search(stdout)
    if rps_match is None:
        return None
    rps = float(rps_match.group(1))
    requests = int(m.group(1)) if (m := _REQUESTS.search(stdout)) else round(rps * seconds)
    non2xx = int(m.group(1)) if (m := _NON2XX.search(stdout)) else 0
    socket_errors = sum(int(g) for g in m.groups()) if (m := _SOCKET.search(stdout)) else 0
    return WrkCounts(rps, requests, non2xx, socket_errors)


def head_flags(head: str) -> list[str]:
    """wrk's -H flags for a HEADS entry (the User-Agent names the installed geventhttpclient)."""
    version = importlib.metadata.version("geventhttpclient")
    return [flag for line in HEADS[head] for flag in ("-H", line.format(version=version))]


@functools.cache
def think_script(ms: int) -> Path:
    """A wrk script whose delay() makes every connection wait `ms` after each response (one per process)."""
    path = Path(tempfile.mkdtemp(prefix="serverlab-wrk-")) / f"think-{ms}ms.lua"
    path.write_text(f"function delay()\n  return {ms}\nend\n")
    return path


def run_wrk(url: str, seconds: float, connections: int, cpus: list[int] | None, head: str = "locust",
            think_ms: int = 0) -> tuple[WrkCounts, float]:
    """One bounded wrk run: its counts, and the generator's CPU in % of one core."""
    script = ["-s", str(think_script(think_ms))] if think_ms else []
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", *script,
           *head_flags(head), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)

    def pin_self() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 30, preexec_fn=pin_self, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    counts = parse_wrk(out.stdout, seconds)
    if out.returncode != 0 or counts is None:
        raise RuntimeError(f"wrk failed on {url}: {out.stderr.strip() or out.stdout.strip()}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / seconds * 100
    return counts, cpu


def measure(target: Target, path: str, args: argparse.Namespace, load_cpus: list[int] | None) -> Sample:
    """One wrk run. The server's CPU is read at EDGE and 1 - EDGE of it: CPU over the whole run would
    add the connects, the closes and the requests still in flight at the end, none of which wrk
    counts (a saturated server under 0.1 core showed 10.5 % of a core that way)."""
    readings: list[tuple[float, float]] = []

    def read() -> None:
        readings.append((time.monotonic(), target.cpu_seconds()))

    timers = [threading.Timer(args.duration * EDGE, read), threading.Timer(args.duration * (1 - EDGE), read)]
    for timer in timers:
        timer.start()
    try:
        counts, gen_cpu = run_wrk(target.url + path, args.duration, args.connections, load_cpus, args.head,
                                  args.think_ms)
    finally:
        for timer in timers:
            timer.cancel()
            timer.join()
    if len(readings) < 2:
        raise RuntimeError(f"wrk on {target.url + path} ended before the measuring window did")
    (t0, cpu0), (t1, cpu1) = sorted(readings)
    rate = (cpu1 - cpu0) / (t1 - t0)  # CPU seconds per second
    return Sample(counts.rps, counts.requests, counts.errors, rate * 100, gen_cpu,
                  rate * 1e6 / max(counts.rps, 1 / args.duration), counts.non2xx, target.pid)
