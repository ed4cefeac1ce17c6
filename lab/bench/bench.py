"""`make bench`: every server side by side with wrk, and each against its stack's lean reference.

Every server is measured on /json, /db, /queries?queries=20 and /fortunes (LAB_BENCH_ENDPOINTS
picks fewer), and so is a bare reference of its stack, written for this bench and doing the same
queries with the same bodies and pool size, minus the contract's limits, deadlines and metrics:
- threaded against lab/bench/bare_threaded.py (socketserver threads + psycopg2, queue.Queue pool);
- gevent against lab/bench/bare_gevent.py (stock gevent.pywsgi + psycogreen'd psycopg2);
- asyncio and multiproc against lab/bench/bare_aiohttp.py (aiohttp + asyncpg). multiproc runs the
  asyncio app in several processes, and CPU per request is per request whatever the number of
  processes, so its floor is the same; what its workers cost is its own overhead and counts.
Checked, each as a ratio of medians measured in the same run:
- every server at least 1.0x its reference on every endpoint (reference CPU per request divided
  by the server's), and no non-2xx response from any server at -c64 (the targets of issue 11);
- instrumentation cost: /json with metrics on vs off, per server (target: at most 5 %).

All are judged on the server's CPU time per request (its whole process tree's CPU seconds per
second over the middle 60 % of a wrk run, past the connects and before the last requests in flight
and the closes, which wrk does not count, over wrk's requests per second; exact from the budget's
cgroup counter when there is one), with requests per second shown beside. A saturated server's
throughput on a dedicated core is 1 / (CPU per request), and CPU per request barely moves when
other processes share the machine, whereas rps between repetitions varied by 10-40 % on the
shared 2-core lab machine: too noisy to settle a 5 % question.

How fast the client turns around is part of the workload. wrk sends a connection's next request a few
microseconds after its response arrives; Locust takes 0.1-0.2 ms, and a client across a network at
least a round trip. A greenlet or thread that has sent its response reads at once for the next
request; when it is not there yet, that read fails and the greenlet goes through the hub (the thread
sleeps and is woken) first. Counted by perf on one gevent process: 1.1 receive calls per request
under wrk, 1.8 under Locust or under wrk waiting 1 ms. asyncio's protocol callbacks never read ahead.
So the default shows each server at its cheapest; --think-ms (LAB_BENCH_THINK_MS) shows it under a
client that turns around as Locust's does (the README has the figures), and the load-vs-bench
self-check uses 1 ms.

The load generator is wrk (C, one thread), pinned to its own CPUs; the servers are pinned to
others, so the generator is not the limit (its CPU use is recorded and flagged if it was).
Repetitions run round-robin over the targets, each server next to its reference, so that drift
on a noisy machine spreads evenly.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lab import files, machine
from lab.bench import instructions as bench_instructions
from lab.cpus import database_cpus, parse_cpus, pin_tree
from lab.fmt import fmt_seconds
from lab.knobs import env_flag, integer
from lab.stack import cpu_budget, database, idle, procs
from servers.settings import MODELS

REPO = Path(__file__).resolve().parents[2]
OVERHEAD_LIMIT = 0.05
REFERENCE_RATIO_MIN = 1.0
TARGET_CONNECTIONS = 64  # the non-2xx target holds at this many open connections
# The request head wrk sends besides Host: by default the one Locust's FastHttpUser sends (seen on the
# wire), so that `make load` and `make bench` measure the same request. A server that parses headers
# in Python pays for each: threaded /json under 0.1 core cost 21 % more with these two than without.
HEADS = {"locust": ("User-Agent: python/gevent-http-client-{version}", "Accept-Encoding: gzip, deflate, br"),
         "bare": ()}
# name -> path measured; LAB_BENCH_ENDPOINTS picks among the names
ENDPOINTS = {"json": "/json", "db": "/db", "queries": "/queries?queries=20", "fortunes": "/fortunes"}
# a reference's kind (lab/bench/bare_<kind>.py) -> its target name
BARE = {"threaded": "bare threaded+psycopg2", "gevent": "bare gevent+psycopg2",
        "aiohttp": "bare aiohttp+asyncpg"}
REFERENCE_OF = {"threaded": "threaded", "gevent": "gevent", "asyncio": "aiohttp", "multiproc": "aiohttp"}
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


def parse_endpoints(raw: str) -> list[str]:
    """The paths named by LAB_BENCH_ENDPOINTS (json, db, queries, fortunes), in the bench's order."""
    names = {n.strip() for n in raw.split(",") if n.strip()}
    unknown = names - set(ENDPOINTS)
    if unknown or not names:
        raise ValueError(f"endpoints {sorted(unknown) if unknown else raw!r}: choose from "
                         f"{', '.join(ENDPOINTS)} (comma-separated)")
    return [path for name, path in ENDPOINTS.items() if name in names]


def reference_of(model: str) -> str:
    """The target name of `model`'s stack reference."""
    return BARE[REFERENCE_OF[model]]


def plan_targets(models: Sequence[str], paths: Sequence[str],
                 references: bool = True) -> list[tuple[str, str]]:
    """(target, path) in measuring order: per path, each server, its metrics-off twin on /json, then
    its reference (once per path), so a pair is measured back to back within every repetition;
    references=False: the servers alone."""
    plan: list[tuple[str, str]] = []
    for path in paths:
        for model in models:
            plan.append((model, path))
            if not references:
                continue
            if path == "/json":
                plan.append((f"{model} (metrics off)", path))
            if (reference_of(model), path) not in plan:
                plan.append((reference_of(model), path))
    return plan


def estimate_seconds(figures: int, reps: int, duration: float, fresh: bool = True) -> float:
    """Wall time of the measuring part: a warm-up per figure at each start, then reps x duration each."""
    starts = reps if fresh else 1
    return figures * (starts * (WARM_SECONDS + WRK_OVERHEAD) + reps * (duration + WRK_OVERHEAD))


def ratios(server: Series, reference: Series) -> tuple[float, float]:
    """(reference CPU per request / server's, server rps / reference's): >= 1.0, the server is at
    least as lean (as fast) as its reference."""
    return reference.cpu_us / server.cpu_us, server.median / reference.median


def start_bare(kind: str, port: int, database_url: str, pool_size: int, log_dir: Path,
               wrapper: Sequence[str] = (), health_timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """lab/bench/bare_<kind>.py (kind: a key of BARE) on 127.0.0.1:port, once it answers /ready."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"bare-{kind}.log", "wb")  # noqa: SIM115 - handed to the child
    cmd = [*wrapper, sys.executable, "-m", f"lab.bench.bare_{kind}", "--port", str(port),
           "--database-url", database_url, "--pool-size", str(pool_size)]
    popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             cwd=REPO, start_new_session=True)
    log.close()  # the child holds its own copy
    try:
        procs.wait_healthy(f"http://127.0.0.1:{port}", health_timeout)
    except procs.StartError:
        popen.kill()
        popen.wait(10)
        raise
    return popen


class Fleet:
    """Every server (and its metrics-off twin when /json is measured) and every stack reference, as
    one set of processes: pinned, each under its own CPU budget, started afresh for each repetition
    when asked (a process's cost per request is not the next one's, so one process per figure would
    hide that noise from the spread)."""

    def __init__(self, models: Sequence[str], paths: Sequence[str], url: str, args: argparse.Namespace,
                 log_dir: Path, server_cpus: list[int] | None) -> None:
        self.models, self.paths, self.url, self.args = models, paths, url, args
        self.log_dir, self.server_cpus = log_dir, server_cpus
        self.targets: dict[str, Target] = {}
        self.servers: list[procs.ServerProcess] = []
        self.bares: list[subprocess.Popen[bytes]] = []
        self.budgets: list[cpu_budget.CpuBudget] = []

    def start(self, rep: int) -> None:
        env = {"LAB_POOL_SIZE": str(self.args.pool_size)}
        logs = self.log_dir / f"rep-{rep + 1}"
        also = " and their references" if self.args.references == "yes" else ""
        print(f"rep {rep + 1}: starting {len(self.models)} servers{also} ...", flush=True)
        for model in self.models:
            twins = "/json" in self.paths and self.args.references == "yes"
            for metrics_on in (True, False) if twins else (True,):
                name = model if metrics_on else f"{model} (metrics off)"
                server = procs.start_server(
                    model, port=procs.free_port(), database_url=self.url, cpus=self.server_cpus,
                    log_dir=logs / ("metrics-on" if metrics_on else "metrics-off"),
                    env={**env, "LAB_METRICS": "1" if metrics_on else "0"},
                )
                self.servers.append(server)
                self.targets[name] = Target(name, server.url, server.pid)
        for kind in dict.fromkeys(REFERENCE_OF[m] for m in self.models if self.args.references == "yes"):
            port = procs.free_port()
            self.bares.append(start_bare(kind, port, self.url, self.args.pool_size, logs))
            self.targets[BARE[kind]] = Target(BARE[kind], f"http://127.0.0.1:{port}", self.bares[-1].pid)
        if self.server_cpus:
            for t in self.targets.values():
                pin_tree(t.pid, self.server_cpus)
        if self.args.budget is not None:
            for t in self.targets.values():
                self.budgets.append(cpu_budget.CpuBudget(self.args.budget).create())
                self.budgets[-1].add([p.pid for p in tree(t.pid)])
                t.usage_file = self.budgets[-1].usage_file

    def stop(self) -> None:
        for server in self.servers:
            procs.stop_server(server)
        for bare in self.bares:
            bare.terminate()
            try:
                bare.wait(10)
            except subprocess.TimeoutExpired:
                bare.kill()
                bare.wait(10)
        for budget in self.budgets:
            budget.remove()
        self.servers, self.bares, self.budgets, self.targets = [], [], [], {}


def instructions_pass(models: list[str], url: str, args: argparse.Namespace, out_dir: Path,
                      server_cpus: list[int] | None, load_cpus: list[int] | None) -> dict[str, float]:
    """Instructions per request of every checked figure, one target at a time under callgrind
    (multiproc by difference of two whole runs: see lab/bench/instructions.py)."""
    plan = [(f"{m}{'' if on else ' (metrics off)'}", m, "/json", on) for m in models for on in (True, False)]
    if "asyncio" in models:
        plan += [("asyncio", "asyncio", "/db", True), ("bare aiohttp+asyncpg", "bare", "/db", True)]
    found: dict[str, float] = {}
    for i, (name, model, path, metrics_on) in enumerate(plan, 1):
        folder = out_dir / "callgrind" / f"{model}-{'on' if metrics_on else 'off'}-{path.strip('/')}"
        runs = 0

        @contextlib.contextmanager
        def serving(folder: Path = folder, model: str = model,
                    metrics_on: bool = metrics_on) -> Iterator[tuple[int, str, Path]]:
            """A target under callgrind: (pid, base URL, callgrind prefix); stopped on exit."""
            folder.mkdir(parents=True)
            prefix = folder / "callgrind.out"
            wrap = bench_instructions.wrapper(prefix)
            port = procs.free_port()
            if model == "bare":
                bare = start_bare("aiohttp", port, url, args.pool_size, folder, wrap,
                                  bench_instructions.STARTUP_TIMEOUT)
                try:
                    yield bare.pid, f"http://127.0.0.1:{port}", prefix
                finally:
                    bare.terminate()
                    bare.wait(30)
                return
            server = procs.start_server(
                model, port=port, database_url=url, log_dir=folder, wrapper=wrap, cpus=server_cpus,
                env={"LAB_POOL_SIZE": str(args.pool_size), "LAB_METRICS": "1" if metrics_on else "0",
                     "PYTHONHASHSEED": "0"},  # the same start-up work in every run
                health_timeout=bench_instructions.STARTUP_TIMEOUT)
            try:
                yield server.pid, server.url, prefix
            finally:
                procs.stop_server(server, timeout=60)  # workers exit cleanly and dump their totals

        def load(seconds: float, target: str) -> int:
            return run_wrk(target, seconds, args.connections, load_cpus, args.head, args.think_ms)[0].requests

        how = "by difference of two runs, " if model == "multiproc" else ""
        print(f"[{i}/{len(plan)}] {name} {path} under callgrind ({how}starts slowly) ...", flush=True)
        if model == "multiproc":
            def whole_run(extra: float, path: str = path,
                          folder: Path = folder) -> tuple[int, Path, list[int]]:
                nonlocal runs
                runs += 1
                with serving(folder / f"run{runs}") as (pid, base, prefix):
                    if server_cpus:
                        pin_tree(pid, server_cpus)
                    done = load(3, base + path) + load(extra, base + path)
                    pids = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
                return done, prefix, pids

            counted = bench_instructions.count_by_difference(whole_run, args.instructions_seconds)
        else:
            with serving() as (pid, base, prefix):
                if server_cpus:
                    pin_tree(pid, server_cpus)
                counted = bench_instructions.count(pid, prefix, functools.partial(load, target=base + path),
                                                   warmup=3, seconds=args.instructions_seconds)
        found[f"{name} {path}"] = counted.per_request
        print(f"    {counted.requests} requests, {counted.per_request:,.0f} instructions per request",
              flush=True)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ
    p = argparse.ArgumentParser(prog="make bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    env_flag(p, "--models", "LAB_BENCH_MODELS", ",".join(MODELS), "servers to measure", env)
    env_flag(p, "--endpoints", "LAB_BENCH_ENDPOINTS", ",".join(ENDPOINTS),
             "endpoints to measure, of json, db, queries (/queries?queries=20) and fortunes; the metrics "
             "cost check needs json", env)
    env_flag(p, "--duration", "LAB_BENCH_DURATION", "5", "seconds per measurement", env, type=float)
    env_flag(p, "--reps", "LAB_BENCH_REPS", "3", "repetitions per figure; the median is reported", env,
             type=int)
    env_flag(p, "--connections", "LAB_BENCH_CONNECTIONS", str(TARGET_CONNECTIONS),
             f"open connections of the load generator (the non-2xx target is judged at "
             f"{TARGET_CONNECTIONS} only)", env, type=int)
    env_flag(p, "--head", "LAB_BENCH_HEAD", "locust", "the request head wrk sends besides Host: 'locust' "
             "(User-Agent and Accept-Encoding, as make load's Locust sends) or 'bare' (Host only)", env,
             choices=tuple(HEADS))
    env_flag(p, "--think-ms", "LAB_BENCH_THINK_MS", "0", "milliseconds each wrk connection waits after a "
             "response before its next request (0: at once). Locust, or a client across a network, turns "
             "around in 0.1 ms or more; what that costs a server is in the docstring of lab/bench/bench.py",
             env)
    env_flag(p, "--fresh-server", "LAB_FRESH_SERVER", "yes", "'yes': every server and reference is started "
             "afresh for each repetition, as make load does, so the spread holds process-to-process noise; "
             "'no': one process each for the whole bench", env, choices=("yes", "no"))
    env_flag(p, "--references", "LAB_BENCH_REFERENCES", "yes", "'yes': each server's metrics-off twin "
             "(on /json) and its stack's lean reference are measured too; 'no': the servers alone", env,
             choices=("yes", "no"))
    env_flag(p, "--idle-poll", "LAB_IDLE_POLL", "auto", "idle CPUs poll while measuring, so no server pays "
             "to wake a halted CPU: auto (where allowed, else the report says why not), yes, no", env,
             choices=idle.CHOICES)
    env_flag(p, "--pool-size", "LAB_POOL_SIZE", "10", "database pool size of every server and every "
             "reference", env, type=int)
    env_flag(p, "--server-cpus", "LAB_SERVER_CPUS", "0", "CPUs for the servers, e.g. 0 or 0-1", env)
    env_flag(p, "--load-cpus", "LAB_LOAD_CPUS", "1", "CPUs for the load generator", env)
    env_flag(p, "--database-cpus", "LAB_DATABASE_CPUS", "load", "CPUs the lab's own PostgreSQL is pinned to: "
             "'load' (the load CPUs, as make load does), a list, or 'none'", env)
    p.add_argument("--instructions", action="store_true",
                   default=env.get("LAB_BENCH_INSTRUCTIONS", "") not in ("", "0"),
                   help="also count instructions per request under callgrind and judge the metrics cost "
                        "and asyncio /db against bare aiohttp on them: repeatable where wall-clock figures "
                        "are noisy (adds ~5 min) [LAB_BENCH_INSTRUCTIONS=1]")
    p.add_argument("--instructions-seconds", type=float, default=8.0,
                   help="seconds of load per target under callgrind")
    env_flag(p, "--reports-dir", "LAB_REPORTS_DIR", str(REPO / "reports"),
             "where the bench-<time> folder goes (default reports/)", env)
    env_flag(p, "--server-cpu", "LAB_SERVER_CPU", "none",
             "CPU budget per server in cores (a cgroup quota, as make load sets it), or none (default): with "
             "make load's budget the CPU per request of the two can be set side by side", env)
    p.add_argument("--no-check", action="store_true", help="report only; exit 0 even if a target is missed")
    args = p.parse_args(argv)
    try:
        args.budget = cpu_budget.parse(args.server_cpu)
        args.think_ms = integer(args.think_ms, "LAB_BENCH_THINK_MS", 0, 1000) or 0
    except (cpu_budget.BudgetError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2

    if args.duration < 1 or args.duration != int(args.duration):
        print(f"make bench: --duration {args.duration:g}: wrk takes whole seconds, 1 or more "
              "(LAB_BENCH_DURATION)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("make bench needs wrk, the load generator: `apt-get install wrk` "
              "(or `brew install wrk`), then run it again.", file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(MODELS)
    if unknown:
        print(f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    try:
        paths = parse_endpoints(args.endpoints)
    except ValueError as exc:
        print(f"make bench: {exc} (LAB_BENCH_ENDPOINTS)", file=sys.stderr)
        return 2
    try:
        server_cpus: list[int] | None = parse_cpus(args.server_cpus)
        load_cpus: list[int] | None = parse_cpus(args.load_cpus)
        db_cpus = database_cpus(args.database_cpus, load_cpus)
    except ValueError as exc:
        print(f"make bench: {exc} (LAB_SERVER_CPUS / LAB_LOAD_CPUS / LAB_DATABASE_CPUS)", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("warning: one CPU only: server and load generator share it; pinning is off")
        server_cpus = load_cpus = db_cpus = None

    run_id = time.strftime("bench-%Y%m%d-%H%M%S")
    out_dir = Path(args.reports_dir).absolute() / run_id
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True)
    url = database.provision()

    plan = plan_targets(models, paths, args.references == "yes")
    print(f"{len(plan)} figures x {args.reps} repetitions x {args.duration:g} s: about "
          f"{fmt_seconds(estimate_seconds(len(plan), args.reps, args.duration, args.fresh_server == 'yes'))} "
          "of measuring besides start-ups (LAB_BENCH_ENDPOINTS / --endpoints, --reps and --duration set it)",
          flush=True)
    fleet = Fleet(models, paths, url, args, log_dir, server_cpus)
    results: dict[tuple[str, str], Series] = {key: Series() for key in plan}
    total = len(plan) * args.reps
    cleanup = contextlib.ExitStack()
    held: idle.Idle | None = None
    try:
        held = cleanup.enter_context(idle.polling(args.idle_poll))
        print(f"while measuring, {held.describe()} (LAB_IDLE_POLL)", flush=True)
        began = time.monotonic()
        done = 0
        for rep in range(args.reps):
            if rep == 0 or args.fresh_server == "yes":
                fleet.stop()
                fleet.start(rep)
                if rep == 0:
                    args.pinned_database_cpus = cleanup.enter_context(database.pinned(db_cpus))
                print(f"warming up {len(plan)} figures ...", flush=True)
                for name, path in plan:
                    run_wrk(fleet.targets[name].url + path, WARM_SECONDS, args.connections, load_cpus,
                            args.head, args.think_ms)
            for name, path in plan:
                sample = measure(fleet.targets[name], path, args, load_cpus)
                results[(name, path)].samples.append(sample)
                done += 1
                left = (time.monotonic() - began) / done * (total - done)
                print(f"[{done}/{total}] rep {rep + 1} {name:<28} {path:<19} {sample.rps:>7.0f} rps "
                      f"{sample.cpu_us:6.1f} us cpu/req  server cpu {sample.server_cpu:4.0f}%  "
                      f"wrk cpu {sample.generator_cpu:3.0f}%  non-2xx {sample.non2xx}  "
                      f"errors {sample.errors}  ~{left:.0f}s left", flush=True)
    except (cpu_budget.BudgetError, idle.IdleError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        fleet.stop()
        cleanup.close()

    instructions: dict[str, float] | None = None
    if args.instructions:
        why = bench_instructions.available()
        if why:
            print(why, file=sys.stderr)
            return 2
        instructions = instructions_pass(models, url, args, out_dir, server_cpus, load_cpus)
    report = build_report(results, models, args, server_cpus, load_cpus, instructions, held)
    files.write_text(out_dir / "bench.md", report["markdown"])
    files.write_json(out_dir / "bench.json", report["data"], indent=2)
    print()
    print(report["markdown"])
    print(f"saved {_shown(out_dir)}/bench.md and bench.json")
    if report["data"]["all_hold"] or args.no_check:
        return 0
    print("a target was missed: see the verdicts above", file=sys.stderr)
    return 1


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _figures(s: Series) -> dict[str, Any]:
    return {"rps": s.median, "rps_spread": s.spread, "cpu_us": s.cpu_us, "cpu_spread": s.cpu_spread,
            "non2xx": s.non2xx, "errors": s.errors, "samples": [vars(x) for x in s.samples]}


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def build_report(results: dict[tuple[str, str], Series], models: list[str], args: argparse.Namespace,
                 server_cpus: list[int] | None, load_cpus: list[int] | None,
                 instructions: dict[str, float] | None = None,
                 held: idle.Idle | None = None) -> dict[str, Any]:
    def get(name: str, path: str) -> Series | None:
        return results.get((name, path))

    budget: float | None = vars(args).get("budget")  # cores per server; None: unbudgeted
    db_cpus: list[int] | None = vars(args).get("pinned_database_cpus")  # None: not pinned (or external)
    think_ms: int = vars(args).get("think_ms") or 0
    paths = [p for p in ENDPOINTS.values() if any(path == p for _, path in results)]
    judged_non2xx = args.connections == TARGET_CONNECTIONS
    lines = [
        f"# make bench: {args.reps} x {args.duration:g} s per figure, wrk -t1 -c{args.connections}"
        + (f", each connection waiting {think_ms} ms after a response" if think_ms else "")
        + f", pool size {args.pool_size}",
        "",
        f"Servers pinned to CPUs {server_cpus or 'all'}; wrk to CPUs {load_cpus or 'all'}; the lab's "
        f"PostgreSQL to CPUs {db_cpus or 'all (not pinned)'}; {cpu_budget.describe(budget)}"
        + (f"; {held.describe()}." if held else "."),
        "Figures are medians of the repetitions; spread is (max - min) / median. CPU per request is the",
        "server's process-tree CPU time per second over the middle of each wrk run, over wrk's requests",
        "per second: the verdicts use it (see lab/bench/).",
    ]
    data: dict[str, Any] = {"settings": vars(args), "server_cpus": server_cpus, "load_cpus": load_cpus,
                            "database_cpus": db_cpus, "idle": held.as_dict() if held else None,
                            "machine": machine.facts(), "servers": {}, "references": {}, "pairs": [],
                            "verdicts": []}
    # (key, text, holds), in the order printed; --instructions replaces the ones it counts, by key
    metric_verdicts: list[tuple[str, str, bool]] = []
    ref_verdicts: list[tuple[str, str, bool]] = []
    non2xx_verdicts: list[tuple[str, str, bool]] = []
    generator_bound: list[str] = []
    unsaturated: list[str] = []
    errors = [f"{name} {path} ({s.errors})" for (name, path), s in results.items() if s.errors]
    cores = len(server_cpus) if server_cpus else (os.cpu_count() or 1)
    for (name, path), s in results.items():
        if s.generator_bound:
            generator_bound.append(f"{name} {path}")
        if s.unsaturated(budget or (cores if name.startswith("multiproc") else 1)):
            unsaturated.append(f"{name} {path}")
        if name in models:
            data["servers"].setdefault(name, {"endpoints": {}})["endpoints"][path] = _figures(s)
        elif name.endswith(" (metrics off)"):
            model = name.removesuffix(" (metrics off)")
            figures = data["servers"].setdefault(model, {"endpoints": {}})
            figures.setdefault("metrics_off", {})[path] = _figures(s)
        elif name in BARE.values():
            data["references"].setdefault(name, {"endpoints": {}})["endpoints"][path] = _figures(s)

    pair_rows: list[str] = []
    for model in models:
        ref_name = reference_of(model)
        for path in paths:
            mine, ref = get(model, path), get(ref_name, path)
            if mine is None or ref is None:
                continue
            ratio, rps_ratio = ratios(mine, ref)
            holds = ratio >= REFERENCE_RATIO_MIN
            pair_rows.append(
                f"| {model} | {ref_name} | `{path}` | {mine.cpu_us:.1f} ({mine.cpu_spread:.0%}) | "
                f"{ref.cpu_us:.1f} ({ref.cpu_spread:.0%}) | **{ratio:.2f}x** | {mine.median:.0f} | "
                f"{ref.median:.0f} | {rps_ratio:.2f}x | {mine.non2xx} | {ref.non2xx} |")
            data["pairs"].append({"server": model, "reference": ref_name, "endpoint": path, "ratio": ratio,
                                  "rps_ratio": rps_ratio, "server_cpu_us": mine.cpu_us,
                                  "reference_cpu_us": ref.cpu_us, "server_rps": mine.median,
                                  "reference_rps": ref.median, "server_non2xx": mine.non2xx,
                                  "reference_non2xx": ref.non2xx, "holds": holds})
            noise = max(mine.cpu_spread, ref.cpu_spread)
            unsettled = not holds and REFERENCE_RATIO_MIN - ratio < noise
            ref_verdicts.append((f"ref {model} {path}",
                             f"{model} {path} is {ratio:.2f}x {ref_name}'s throughput per CPU "
                             f"({mine.cpu_us:.1f} vs {ref.cpu_us:.1f} us per request; by rps "
                             f"{rps_ratio:.2f}x) (target at least {REFERENCE_RATIO_MIN:.2f}x)"
                             + (f"; within the repetitions' {noise:.0%} spread, so not settled: more "
                                "--reps will tell" if unsettled else ""), holds))
            if model == "asyncio" and path == "/db":  # the figures the bench had before the references
                data["bare_db_rps"] = ref.median
                data["bare_db_cpu_us"] = ref.cpu_us
                data["asyncio_vs_bare_db"] = ratio
                data["asyncio_vs_bare_db_rps"] = rps_ratio
    if pair_rows:
        shown = [p for p in paths if any(get(m, p) for m in models)]
        lines += [
            "", "## Every server against its stack's reference", "",
            f"Target (issue 11): every server at least {REFERENCE_RATIO_MIN:.1f}x its stack's reference on "
            f"{_and([f'`{p}`' for p in shown])}, with 0 non-2xx responses at -c{TARGET_CONNECTIONS}. Ratio: "
            "the reference's CPU per request divided by the server's (at least 1.0: the server is as lean "
            "as the bare stack); rps ratio: the server's rps divided by the reference's. multiproc is set "
            "against bare aiohttp: CPU per request does not depend on how many processes share the work, "
            "so its floor is the same app's, and what its workers cost counts as its own.",
            "",
            "| server | reference | endpoint | CPU us/req (spread) | reference CPU us/req (spread) | "
            "ratio | rps | reference rps | rps ratio | non-2xx | reference non-2xx |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *pair_rows,
        ]

    metric_rows: list[str] = []
    for model in models:
        on, off = get(model, "/json"), get(f"{model} (metrics off)", "/json")
        if on is None or off is None:
            continue
        cost = on.cpu_us / off.cpu_us - 1
        rps_cost = 1 - on.median / off.median
        metric_rows.append(f"| {model} | {on.median:.0f} ({on.spread:.0%}) | "
                           f"{on.cpu_us:.1f} ({on.cpu_spread:.0%}) | "
                           f"{off.median:.0f} ({off.spread:.0%}) | {off.cpu_us:.1f} ({off.cpu_spread:.0%}) | "
                           f"{cost:+.1%} ({rps_cost:+.1%}) |")
        figures = data["servers"].setdefault(model, {"endpoints": {}})
        figures.update({"json_rps": on.median, "json_rps_metrics_off": off.median, "json_cpu_us": on.cpu_us,
                        "json_cpu_us_metrics_off": off.cpu_us, "metrics_cost": cost,
                        "metrics_cost_rps": rps_cost})
        noise = max(on.cpu_spread, off.cpu_spread)
        unsettled = cost > OVERHEAD_LIMIT and cost - OVERHEAD_LIMIT < noise
        metric_verdicts.append((
            f"metrics {model}",
            f"{model}: metrics cost {cost:+.1%} of /json throughput per CPU "
            f"({on.cpu_us:.1f} vs {off.cpu_us:.1f} us per request; by rps {rps_cost:+.1%}) "
            f"(target at most {OVERHEAD_LIMIT:.0%})"
            + (f"; within the repetitions' {noise:.0%} spread, so not settled: more --reps "
               "or --instructions will tell" if unsettled else ""), cost <= OVERHEAD_LIMIT))
    for model in models:
        db = get(model, "/db")
        if db is not None:
            data["servers"][model].update({"db_rps": db.median, "db_cpu_us": db.cpu_us})
    if metric_rows:
        lines += ["", "## Metrics cost on `/json` (metrics on vs off)", "",
                  "| server | rps (spread) | CPU us/req (spread) | metrics off: rps | "
                  "metrics off: CPU us/req | metrics cost, CPU (rps) |",
                  "|---|---:|---:|---:|---:|---:|",
                  *metric_rows]

    lines.append("")
    for model in models if judged_non2xx else []:
        measured = {path: found for path in paths if (found := get(model, path)) is not None}
        if not measured:
            continue
        count = sum(x.non2xx for x in measured.values())
        dropped = sum(x.errors - x.non2xx for x in measured.values())
        non2xx_verdicts.append((
            f"non2xx {model}",
            f"{model}: {count} non-2xx responses at -c{args.connections} on {_and(list(measured))}, all "
            "repetitions" + (f" (and {dropped} socket errors)" if dropped else "") + " (target 0)",
            count == 0))
    verdicts = metric_verdicts + ref_verdicts + non2xx_verdicts
    non2xx_note = "" if judged_non2xx else (
        f"- NOTE: the non-2xx target holds at -c{TARGET_CONNECTIONS}; this run used -c{args.connections}, "
        "so its non-2xx counts are shown, not judged.")

    if instructions:
        lines += ["Instructions per request under callgrind (repeatable; the verdicts they count are judged "
                  "on them, and their CPU-time ones are shown for reference):", "",
                  "| target | instructions per request |", "|---|---:|"]
        lines += [f"| {name} | {value:,.0f} |" for name, value in instructions.items()]
        data["instructions_per_request"] = instructions
        data["verdicts_by_cpu_time"] = [{"text": t, "holds": ok} for _, t, ok in verdicts]
        counted: dict[str, tuple[str, bool]] = {}
        for model in [m for m in models if f"{m} /json" in instructions]:
            i_on, i_off = instructions[f"{model} /json"], instructions[f"{model} (metrics off) /json"]
            cost = i_on / i_off - 1
            data["servers"].setdefault(model, {"endpoints": {}})["metrics_cost_instructions"] = cost
            counted[f"metrics {model}"] = (
                f"{model}: metrics cost {cost:+.1%} of /json throughput by instructions "
                f"({i_on:,.0f} vs {i_off:,.0f} per request) (target at most {OVERHEAD_LIMIT:.0%})",
                cost <= OVERHEAD_LIMIT)
        bare_db = f"{BARE['aiohttp']} /db"
        if "asyncio /db" in instructions and bare_db in instructions:
            ratio = instructions[bare_db] / instructions["asyncio /db"]
            data["asyncio_vs_bare_db_instructions"] = ratio
            counted["ref asyncio /db"] = (
                f"asyncio /db is {ratio:.2f}x {BARE['aiohttp']}'s throughput by instructions "
                f"({instructions['asyncio /db']:,.0f} vs {instructions[bare_db]:,.0f} per request) "
                f"(target at least {REFERENCE_RATIO_MIN:.2f}x)", ratio >= REFERENCE_RATIO_MIN)
        lines += ["", "By CPU time (for reference):"]
        lines += [f"- {'pass' if ok else 'miss'}: {t}" for key, t, ok in verdicts if key in counted]
        keys = {key for key, _, _ in verdicts}
        verdicts = [(key, *counted.get(key, (t, ok))) for key, t, ok in verdicts]
        verdicts += [(key, t, ok) for key, (t, ok) in counted.items() if key not in keys]
        lines.append("")
    for _, text, ok in verdicts:
        lines.append(f"- {'PASS' if ok else 'MISS'}: {text}")
    if non2xx_note:
        lines.append(non2xx_note)
    if generator_bound:
        lines.append(f"- WARNING: the load generator was near 100% CPU for {', '.join(generator_bound)}: "
                     "those figures are the generator's limit, not the server's.")
    if unsaturated:
        lines.append(f"- WARNING: the server used under {SATURATED_CPU:.0f}% of its CPUs for "
                     f"{', '.join(unsaturated)}: something else was the limit (a busy machine or the "
                     "database), so those figures understate the server; rerun on a quiet machine.")
    if errors:
        lines.append(f"- WARNING: wrk counted non-2xx responses or socket errors for {', '.join(errors)} "
                     "(all repetitions): those requests were answered with an error, or not at all; "
                     "read that server's log and /metrics (rejections) before trusting its figure.")
    data["verdicts"] = [{"text": t, "holds": ok} for _, t, ok in verdicts]
    data["errors"] = {f"{name} {path}": s.errors for (name, path), s in results.items()}
    data["non2xx"] = {f"{name} {path}": s.non2xx for (name, path), s in results.items()}
    data["unsaturated"] = unsaturated
    data["generator_bound"] = generator_bound
    data["all_hold"] = all(ok for _, _, ok in verdicts)
    return {"markdown": "\n".join(lines) + "\n", "data": data}


if __name__ == "__main__":
    sys.exit(main())
