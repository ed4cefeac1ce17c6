"""`make bench`: requests per second of /json and /db on every server, side by side in one run.

Two figures are checked, each as a ratio of medians measured in the same run:
- instrumentation cost: /json with metrics on vs off, per server (target: at most 5 %);
- the asyncio server's /db against a bare aiohttp + asyncpg handler (lab/bench/bare_aiohttp.py)
  doing the same query with the same pool size (target: at least 0.9x).

Both are judged on the server's CPU time per request (its whole process tree's CPU seconds over
the requests wrk completed), with requests per second shown beside. A saturated server's
throughput on a dedicated core is 1 / (CPU per request), and CPU per request barely moves when
other processes share the machine, whereas rps between repetitions varied by 10-40 % on the
shared 2-core lab machine: too noisy to settle a 5 % question.

The load generator is wrk (C, one thread), pinned to its own CPUs; the servers are pinned to
others, so the generator is not the limit (its CPU use is recorded and flagged if it was).
Repetitions run round-robin over the targets so that drift on a noisy machine spreads evenly.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lab import files, machine
from lab.bench import instructions as bench_instructions
from lab.cpus import parse_cpus, pin_tree
from lab.knobs import env_flag
from lab.stack import cpu_budget, database, procs
from servers.settings import MODELS

REPO = Path(__file__).resolve().parents[2]
OVERHEAD_LIMIT = 0.05
BARE_RATIO_MIN = 0.90
GENERATOR_BOUND_CPU = 90.0  # % of one core
SATURATED_CPU = 80.0  # % of each server core below which the server was not the bottleneck


@dataclass
class Target:
    name: str
    url: str
    pid: int


@dataclass
class Sample:
    rps: float
    requests: int
    errors: int
    server_cpu: float  # % of one core, whole process tree
    generator_cpu: float  # % of one core
    cpu_us: float  # server CPU microseconds per completed request


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


def run_wrk(url: str, seconds: float, connections: int,
            cpus: list[int] | None) -> tuple[float, int, int, float]:
    """One bounded wrk run: (requests/s, requests, errors, generator CPU % of one core)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)

    def pin_self() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 30, preexec_fn=pin_self, check=False
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0 or not _RPS.search(out.stdout):
        raise RuntimeError(f"wrk failed on {url}: {out.stderr.strip() or out.stdout.strip()}")
    rps = float(_RPS.search(out.stdout).group(1))  # type: ignore[union-attr]
    requests = int(m.group(1)) if (m := _REQUESTS.search(out.stdout)) else round(rps * seconds)
    errors = 0
    if m := _NON2XX.search(out.stdout):
        errors += int(m.group(1))
    if m := _SOCKET.search(out.stdout):
        errors += sum(int(g) for g in m.groups())
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / seconds * 100
    return rps, requests, errors, cpu


def measure(target: Target, path: str, args: argparse.Namespace, load_cpus: list[int] | None) -> Sample:
    cpu_before = tree_cpu_seconds(target.pid)
    rps, requests, errors, gen_cpu = run_wrk(target.url + path, args.duration, args.connections, load_cpus)
    used = tree_cpu_seconds(target.pid) - cpu_before
    return Sample(rps, requests, errors, used / args.duration * 100, gen_cpu, used * 1e6 / max(requests, 1))


def start_bare(port: int, database_url: str, pool_size: int, log_dir: Path,
               wrapper: Sequence[str] = (), health_timeout: float = 30.0) -> subprocess.Popen[bytes]:
    log = open(log_dir / "bare.log", "wb")  # noqa: SIM115 - handed to the child
    cmd = [*wrapper, sys.executable, "-m", "lab.bench.bare_aiohttp", "--port", str(port),
           "--database-url", database_url, "--pool-size", str(pool_size)]
    popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        procs.wait_healthy(f"http://127.0.0.1:{port}", health_timeout)
    except procs.StartError:
        popen.kill()
        popen.wait(10)
        raise
    return popen


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
                bare = start_bare(port, url, args.pool_size, folder, wrap, bench_instructions.STARTUP_TIMEOUT)
                try:
                    yield bare.pid, f"http://127.0.0.1:{port}", prefix
                finally:
                    bare.terminate()
                    bare.wait(30)
                return
            server = procs.start_server(
                model, port=port, database_url=url, log_dir=folder, wrapper=wrap,
                env={"LAB_POOL_SIZE": str(args.pool_size), "LAB_METRICS": "1" if metrics_on else "0",
                     "PYTHONHASHSEED": "0"},  # the same start-up work in every run
                health_timeout=bench_instructions.STARTUP_TIMEOUT)
            try:
                yield server.pid, server.url, prefix
            finally:
                procs.stop_server(server, timeout=60)  # workers exit cleanly and dump their totals

        def load(seconds: float, target: str) -> int:
            return run_wrk(target, seconds, args.connections, load_cpus)[1]

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
    env_flag(p, "--duration", "LAB_BENCH_DURATION", "5", "seconds per measurement", env, type=float)
    env_flag(p, "--reps", "LAB_BENCH_REPS", "3", "repetitions per figure; the median is reported", env,
             type=int)
    env_flag(p, "--connections", "LAB_BENCH_CONNECTIONS", "64", "open connections of the load generator", env,
             type=int)
    env_flag(p, "--pool-size", "LAB_POOL_SIZE", "10", "database pool size of every server and the bare "
             "handler", env, type=int)
    env_flag(p, "--server-cpus", "LAB_SERVER_CPUS", "0", "CPUs for the servers, e.g. 0 or 0-1", env)
    env_flag(p, "--load-cpus", "LAB_LOAD_CPUS", "1", "CPUs for the load generator", env)
    p.add_argument("--instructions", action="store_true",
                   default=env.get("LAB_BENCH_INSTRUCTIONS", "") not in ("", "0"),
                   help="also count instructions per request under callgrind and judge the two targets on "
                        "them: repeatable where wall-clock figures are noisy (adds ~5 min) "
                        "[LAB_BENCH_INSTRUCTIONS=1]")
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
    except cpu_budget.BudgetError as exc:
        print(str(exc), file=sys.stderr)
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
        server_cpus: list[int] | None = parse_cpus(args.server_cpus)
        load_cpus: list[int] | None = parse_cpus(args.load_cpus)
    except ValueError as exc:
        print(f"make bench: {exc} (LAB_SERVER_CPUS / LAB_LOAD_CPUS)", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("warning: one CPU only: server and load generator share it; pinning is off")
        server_cpus = load_cpus = None

    run_id = time.strftime("bench-%Y%m%d-%H%M%S")
    out_dir = Path(args.reports_dir).absolute() / run_id
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True)
    url = database.provision()

    targets: dict[str, Target] = {}
    budgets: list[cpu_budget.CpuBudget] = []
    started: list[procs.ServerProcess] = []
    bare: subprocess.Popen[bytes] | None = None
    base_env = {"LAB_POOL_SIZE": str(args.pool_size)}
    try:
        for model in models:
            for metrics_on in (True, False):
                name = model if metrics_on else f"{model} (metrics off)"
                print(f"starting {name} ...", flush=True)
                server = procs.start_server(
                    model, port=procs.free_port(), database_url=url,
                    log_dir=log_dir / ("metrics-on" if metrics_on else "metrics-off"),
                    env={**base_env, "LAB_METRICS": "1" if metrics_on else "0"},
                )
                started.append(server)
                targets[name] = Target(name, server.url, server.pid)
        if "asyncio" in models:
            print("starting the bare aiohttp + asyncpg handler ...", flush=True)
            port = procs.free_port()
            bare = start_bare(port, url, args.pool_size, log_dir)
            targets["bare aiohttp+asyncpg"] = Target("bare aiohttp+asyncpg", f"http://127.0.0.1:{port}",
                                                     bare.pid)
        if server_cpus:
            for t in targets.values():
                pin_tree(t.pid, server_cpus)
        if args.budget is not None:
            for t in targets.values():
                budgets.append(cpu_budget.CpuBudget(args.budget).create())
                budgets[-1].add([p.pid for p in tree(t.pid)])
        pg = database.status()
        if load_cpus and pg.running and pg.pid and not os.environ.get("LAB_DATABASE_URL"):
            pin_tree(pg.pid, load_cpus)  # backends fork from the postmaster and inherit this

        plan: list[tuple[str, str]] = [(n, "/json") for n in targets if not n.startswith("bare")]
        plan += [(n, "/db") for n in targets if "metrics off" not in n]
        results: dict[tuple[str, str], Series] = {key: Series() for key in plan}
        total = len(plan) * args.reps
        print(f"warming up {len(plan)} targets ...", flush=True)
        for name, path in plan:
            run_wrk(targets[name].url + path, 1, args.connections, load_cpus)
        began = time.monotonic()
        done = 0
        for rep in range(args.reps):
            for name, path in plan:
                sample = measure(targets[name], path, args, load_cpus)
                results[(name, path)].samples.append(sample)
                done += 1
                left = (time.monotonic() - began) / done * (total - done)
                print(f"[{done}/{total}] rep {rep + 1} {name:<28} {path:<6} {sample.rps:>7.0f} rps "
                      f"{sample.cpu_us:6.1f} us cpu/req  server cpu {sample.server_cpu:4.0f}%  "
                      f"wrk cpu {sample.generator_cpu:3.0f}%  errors {sample.errors}  ~{left:.0f}s left",
                      flush=True)
    except cpu_budget.BudgetError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        for server in started:
            procs.stop_server(server)
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        for budget in budgets:
            budget.remove()

    instructions: dict[str, float] | None = None
    if args.instructions:
        why = bench_instructions.available()
        if why:
            print(why, file=sys.stderr)
            return 2
        instructions = instructions_pass(models, url, args, out_dir, server_cpus, load_cpus)
    report = build_report(results, models, args, server_cpus, load_cpus, instructions)
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


def build_report(results: dict[tuple[str, str], Series], models: list[str], args: argparse.Namespace,
                 server_cpus: list[int] | None, load_cpus: list[int] | None,
                 instructions: dict[str, float] | None = None) -> dict[str, Any]:
    def get(name: str, path: str) -> Series | None:
        return results.get((name, path))

    budget: float | None = vars(args).get("budget")  # cores per server; None: unbudgeted
    lines = [
        f"# make bench: {args.reps} x {args.duration:g} s per figure, wrk -t1 -c{args.connections}, "
        f"pool size {args.pool_size}",
        "",
        f"Servers pinned to CPUs {server_cpus or 'all'}; wrk and the embedded PostgreSQL to CPUs "
        f"{load_cpus or 'all'}; {cpu_budget.describe(budget)}.",
        "Figures are medians of the repetitions; spread is (max - min) / median. CPU per request is the",
        "server's process-tree CPU time over the requests completed: the verdicts use it (see lab/bench/).",
        "",
        "| server | /json rps (spread) | /json CPU us/req (spread) | metrics off: rps | metrics off: "
        "CPU us/req | metrics cost, CPU (rps) | /db rps (spread) | /db CPU us/req (spread) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    data: dict[str, Any] = {"settings": vars(args), "server_cpus": server_cpus, "load_cpus": load_cpus,
                            "machine": machine.facts(), "servers": {}, "verdicts": []}
    verdicts: list[tuple[str, bool]] = []
    generator_bound: list[str] = []
    unsaturated: list[str] = []
    errors = [f"{name} {path} ({s.errors})" for (name, path), s in results.items() if s.errors]
    cores = len(server_cpus) if server_cpus else (os.cpu_count() or 1)
    for model in models:
        on, off, db = get(model, "/json"), get(f"{model} (metrics off)", "/json"), get(model, "/db")
        assert on and off and db
        cost = on.cpu_us / off.cpu_us - 1
        rps_cost = 1 - on.median / off.median
        for label, s in (("/json", on), ("/json metrics off", off), ("/db", db)):
            if s.generator_bound:
                generator_bound.append(f"{model} {label}")
            if s.unsaturated(budget or (cores if model == "multiproc" else 1)):
                unsaturated.append(f"{model} {label}")
        lines.append(f"| {model} | {on.median:.0f} ({on.spread:.0%}) | "
                     f"{on.cpu_us:.1f} ({on.cpu_spread:.0%}) | "
                     f"{off.median:.0f} ({off.spread:.0%}) | {off.cpu_us:.1f} ({off.cpu_spread:.0%}) | "
                     f"{cost:+.1%} ({rps_cost:+.1%}) | {db.median:.0f} ({db.spread:.0%}) | "
                     f"{db.cpu_us:.1f} ({db.cpu_spread:.0%}) |")
        data["servers"][model] = {"json_rps": on.median, "json_rps_metrics_off": off.median,
                                  "json_cpu_us": on.cpu_us, "json_cpu_us_metrics_off": off.cpu_us,
                                  "metrics_cost": cost, "metrics_cost_rps": rps_cost, "db_rps": db.median,
                                  "db_cpu_us": db.cpu_us,
                                  "samples": {k: [vars(x) for x in v.samples] for k, v in
                                              (("json", on), ("json_metrics_off", off), ("db", db))}}
        noise = max(on.cpu_spread, off.cpu_spread)
        unsettled = cost > OVERHEAD_LIMIT and cost - OVERHEAD_LIMIT < noise
        verdicts.append((f"{model}: metrics cost {cost:+.1%} of /json throughput per CPU "
                         f"({on.cpu_us:.1f} vs {off.cpu_us:.1f} us per request; by rps {rps_cost:+.1%}) "
                         f"(target at most {OVERHEAD_LIMIT:.0%})"
                         + (f"; within the repetitions' {noise:.0%} spread, so not settled: more --reps "
                            "or --instructions will tell" if unsettled else ""), cost <= OVERHEAD_LIMIT))
    bare = get("bare aiohttp+asyncpg", "/db")
    if bare is not None:
        lines.append(f"| bare aiohttp+asyncpg | | | | | | {bare.median:.0f} ({bare.spread:.0%}) | "
                     f"{bare.cpu_us:.1f} ({bare.cpu_spread:.0%}) |")
        mine = results[("asyncio", "/db")]
        ratio = bare.cpu_us / mine.cpu_us
        rps_ratio = mine.median / bare.median
        data["bare_db_rps"] = bare.median
        data["bare_db_cpu_us"] = bare.cpu_us
        data["asyncio_vs_bare_db"] = ratio
        data["asyncio_vs_bare_db_rps"] = rps_ratio
        verdicts.append((f"asyncio /db is {ratio:.2f}x the bare aiohttp + asyncpg handler's throughput "
                         f"per CPU ({mine.cpu_us:.1f} vs {bare.cpu_us:.1f} us per request; "
                         f"by rps {rps_ratio:.2f}x) "
                         f"(target at least {BARE_RATIO_MIN:.2f}x)", ratio >= BARE_RATIO_MIN))
    if instructions:
        lines += ["", "Instructions per request under callgrind (repeatable; the verdicts below use these, "
                  "and the CPU-time ones above are shown for reference):", "",
                  "| target | instructions per request |", "|---|---:|"]
        lines += [f"| {name} | {value:,.0f} |" for name, value in instructions.items()]
        data["instructions_per_request"] = instructions
        data["verdicts_by_cpu_time"] = [{"text": t, "holds": ok} for t, ok in verdicts]
        lines += ["", "By CPU time (for reference):"]
        lines += [f"- {'pass' if ok else 'miss'}: {t}" for t, ok in verdicts]
        verdicts = []
        for model in [m for m in models if f"{m} /json" in instructions]:
            i_on, i_off = instructions[f"{model} /json"], instructions[f"{model} (metrics off) /json"]
            cost = i_on / i_off - 1
            data["servers"][model]["metrics_cost_instructions"] = cost
            verdicts.append((f"{model}: metrics cost {cost:+.1%} of /json throughput by instructions "
                             f"({i_on:,.0f} vs {i_off:,.0f} per request) "
                             f"(target at most {OVERHEAD_LIMIT:.0%})",
                             cost <= OVERHEAD_LIMIT))
        if "asyncio /db" in instructions:
            ratio = instructions["bare aiohttp+asyncpg /db"] / instructions["asyncio /db"]
            data["asyncio_vs_bare_db_instructions"] = ratio
            verdicts.append((f"asyncio /db is {ratio:.2f}x the bare aiohttp + asyncpg handler's throughput "
                             f"by instructions ({instructions['asyncio /db']:,.0f} vs "
                             f"{instructions['bare aiohttp+asyncpg /db']:,.0f} per request) "
                             f"(target at least {BARE_RATIO_MIN:.2f}x)", ratio >= BARE_RATIO_MIN))
    lines.append("")
    for text, ok in verdicts:
        lines.append(f"- {'PASS' if ok else 'MISS'}: {text}")
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
    data["verdicts"] = [{"text": t, "holds": ok} for t, ok in verdicts]
    data["errors"] = {f"{name} {path}": s.errors for (name, path), s in results.items()}
    data["unsaturated"] = unsaturated
    data["generator_bound"] = generator_bound
    data["all_hold"] = all(ok for _, ok in verdicts)
    return {"markdown": "\n".join(lines) + "\n", "data": data}


if __name__ == "__main__":
    sys.exit(main())
