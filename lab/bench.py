"""`make bench`: requests per second of /json and /db on every server, side by side in one run.

Two figures are checked, each as a ratio of medians measured in the same run:
- instrumentation cost: /json with metrics on vs off, per server (target: at most 5 %);
- the asyncio server's /db against a bare aiohttp + asyncpg handler (lab/bare_aiohttp.py)
  doing the same query with the same pool size (target: at least 0.9x).

The load generator is wrk (C, one thread), pinned to its own CPUs; the servers are pinned to
others, so the generator is not the limit (its CPU use is recorded and flagged if it was).
Repetitions run round-robin over the targets so that drift on a noisy machine spreads evenly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lab import database, machine, procs
from servers.settings import MODELS

REPO = Path(__file__).resolve().parent.parent
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
    errors: int
    server_cpu: float  # % of one core, whole process tree
    generator_cpu: float  # % of one core


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.rps for s in self.samples)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repetitions: how noisy this figure is."""
        values = [s.rps for s in self.samples]
        return (max(values) - min(values)) / self.median if self.median else 0.0

    @property
    def generator_bound(self) -> bool:
        return any(s.generator_cpu >= GENERATOR_BOUND_CPU for s in self.samples)

    def unsaturated(self, server_cores: int) -> bool:
        """The server had CPU to spare: something else (a busy machine, the database) was the limit."""
        return statistics.median(s.server_cpu for s in self.samples) < SATURATED_CPU * server_cores


def parse_cpus(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def pin(pid: int, cpus: list[int]) -> None:
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            proc.cpu_affinity(cpus)


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
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def run_wrk(url: str, seconds: float, connections: int, cpus: list[int] | None) -> tuple[float, int, float]:
    """One bounded wrk run: (requests/s, errors, generator CPU % of one core)."""
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
    errors = 0
    if m := _NON2XX.search(out.stdout):
        errors += int(m.group(1))
    if m := _SOCKET.search(out.stdout):
        errors += sum(int(g) for g in m.groups())
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / seconds * 100
    return rps, errors, cpu


def measure(target: Target, path: str, args: argparse.Namespace, load_cpus: list[int] | None) -> Sample:
    cpu_before = tree_cpu_seconds(target.pid)
    rps, errors, gen_cpu = run_wrk(target.url + path, args.duration, args.connections, load_cpus)
    server_cpu = (tree_cpu_seconds(target.pid) - cpu_before) / args.duration * 100
    return Sample(rps, errors, server_cpu, gen_cpu)


def start_bare(port: int, database_url: str, pool_size: int, log_dir: Path) -> subprocess.Popen[bytes]:
    log = open(log_dir / "bare.log", "wb")  # noqa: SIM115 - handed to the child
    cmd = [sys.executable, "-m", "lab.bare_aiohttp", "--port", str(port),
           "--database-url", database_url, "--pool-size", str(pool_size)]
    popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs.wait_healthy(f"http://127.0.0.1:{port}", 30.0)
    return popen


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ
    p = argparse.ArgumentParser(prog="make bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=env.get("LAB_BENCH_MODELS", ",".join(MODELS)),
                   help="servers to measure [LAB_BENCH_MODELS]")
    p.add_argument("--duration", type=float, default=float(env.get("LAB_BENCH_DURATION", "5")),
                   help="seconds per measurement [LAB_BENCH_DURATION]")
    p.add_argument("--reps", type=int, default=int(env.get("LAB_BENCH_REPS", "3")),
                   help="repetitions per figure; the median is reported [LAB_BENCH_REPS]")
    p.add_argument("--connections", type=int, default=int(env.get("LAB_BENCH_CONNECTIONS", "64")),
                   help="open connections of the load generator [LAB_BENCH_CONNECTIONS]")
    p.add_argument("--pool-size", type=int, default=int(env.get("LAB_POOL_SIZE", "10")),
                   help="database pool size of every server and the bare handler [LAB_POOL_SIZE]")
    p.add_argument("--server-cpus", default=env.get("LAB_SERVER_CPUS", "0"),
                   help="CPUs for the servers, e.g. 0 or 0-1 [LAB_SERVER_CPUS]")
    p.add_argument("--load-cpus", default=env.get("LAB_LOAD_CPUS", "1"),
                   help="CPUs for the load generator [LAB_LOAD_CPUS]")
    p.add_argument("--no-check", action="store_true", help="report only; exit 0 even if a target is missed")
    args = p.parse_args(argv)

    if shutil.which("wrk") is None:
        print("make bench needs wrk, the load generator: `apt-get install wrk` "
              "(or `brew install wrk`), then run it again.", file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(MODELS)
    if unknown:
        print(f"unknown models {sorted(unknown)}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    server_cpus: list[int] | None = parse_cpus(args.server_cpus)
    load_cpus: list[int] | None = parse_cpus(args.load_cpus)
    if (os.cpu_count() or 1) < 2:
        print("warning: one CPU only: server and load generator share it; pinning is off")
        server_cpus = load_cpus = None

    run_id = time.strftime("bench-%Y%m%d-%H%M%S")
    out_dir = REPO / "reports" / run_id
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True)
    url = database.provision()

    targets: dict[str, Target] = {}
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
                pin(t.pid, server_cpus)
        pg = database.status()
        if load_cpus and pg.running and pg.pid and not os.environ.get("LAB_DATABASE_URL"):
            pin(pg.pid, load_cpus)  # backends fork from the postmaster and inherit this

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
                print(f"[{done}/{total}] rep {rep + 1} {name:<28} {path:<6} {sample.rps:>9.0f} rps  "
                      f"server cpu {sample.server_cpu:4.0f}%  wrk cpu {sample.generator_cpu:4.0f}%  "
                      f"errors {sample.errors}  ~{left:.0f}s left", flush=True)
    finally:
        for server in started:
            procs.stop_server(server)
        if bare is not None:
            bare.terminate()
            bare.wait(10)

    report = build_report(results, models, args, server_cpus, load_cpus)
    (out_dir / "bench.md").write_text(report["markdown"])
    (out_dir / "bench.json").write_text(json.dumps(report["data"], indent=2))
    print()
    print(report["markdown"])
    print(f"saved {out_dir.relative_to(REPO)}/bench.md and bench.json")
    if report["data"]["all_hold"] or args.no_check:
        return 0
    print("a target was missed: see the verdicts above", file=sys.stderr)
    return 1


def build_report(results: dict[tuple[str, str], Series], models: list[str], args: argparse.Namespace,
                 server_cpus: list[int] | None, load_cpus: list[int] | None) -> dict[str, Any]:
    def get(name: str, path: str) -> Series | None:
        return results.get((name, path))

    lines = [
        f"# make bench: {args.reps} x {args.duration:g} s per figure, wrk -t1 -c{args.connections}, "
        f"pool size {args.pool_size}",
        "",
        f"Servers pinned to CPUs {server_cpus or 'all'}; wrk and the embedded PostgreSQL to CPUs "
        f"{load_cpus or 'all'}.",
        "Figures are medians of the repetitions; spread is (max - min) / median.",
        "",
        "| server | /json rps | spread | /json rps, metrics off | spread | metrics cost | /db rps | spread |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    data: dict[str, Any] = {"settings": vars(args), "server_cpus": server_cpus, "load_cpus": load_cpus,
                            "machine": machine.facts(), "servers": {}, "verdicts": []}
    verdicts: list[tuple[str, bool]] = []
    generator_bound: list[str] = []
    unsaturated: list[str] = []
    cores = len(server_cpus) if server_cpus else (os.cpu_count() or 1)
    for model in models:
        on, off, db = get(model, "/json"), get(f"{model} (metrics off)", "/json"), get(model, "/db")
        assert on and off and db
        cost = 1 - on.median / off.median
        for label, s in (("/json", on), ("/json metrics off", off), ("/db", db)):
            if s.generator_bound:
                generator_bound.append(f"{model} {label}")
            if s.unsaturated(cores if model == "multiproc" else 1):
                unsaturated.append(f"{model} {label}")
        lines.append(f"| {model} | {on.median:.0f} | {on.spread:.0%} | {off.median:.0f} | {off.spread:.0%} | "
                     f"{cost:+.1%} | {db.median:.0f} | {db.spread:.0%} |")
        data["servers"][model] = {"json_rps": on.median, "json_rps_metrics_off": off.median,
                                  "metrics_cost": cost, "db_rps": db.median,
                                  "samples": {k: [vars(x) for x in v.samples] for k, v in
                                              (("json", on), ("json_metrics_off", off), ("db", db))}}
        verdicts.append((f"{model}: metrics cost {cost:+.1%} of /json throughput "
                         f"(target at most {OVERHEAD_LIMIT:.0%})", cost <= OVERHEAD_LIMIT))
    bare = get("bare aiohttp+asyncpg", "/db")
    if bare is not None:
        lines.append(f"| bare aiohttp+asyncpg | | | | | | {bare.median:.0f} | {bare.spread:.0%} |")
        ratio = results[("asyncio", "/db")].median / bare.median
        data["bare_db_rps"] = bare.median
        data["asyncio_vs_bare_db"] = ratio
        verdicts.append((f"asyncio /db is {ratio:.2f}x the bare aiohttp + asyncpg handler "
                         f"(target at least {BARE_RATIO_MIN:.2f}x)", ratio >= BARE_RATIO_MIN))
    lines.append("")
    for text, ok in verdicts:
        lines.append(f"- {'PASS' if ok else 'MISS'}: {text}")
    if generator_bound:
        lines.append(f"- WARNING: the load generator was near 100 % CPU for {', '.join(generator_bound)}: "
                     "those figures are the generator's limit, not the server's.")
    if unsaturated:
        lines.append(f"- WARNING: the server used under {SATURATED_CPU:.0f} % of its CPUs for "
                     f"{', '.join(unsaturated)}: something else was the limit (a busy machine or the "
                     "database), so those figures understate the server; rerun on a quiet machine.")
    data["verdicts"] = [{"text": t, "holds": ok} for t, ok in verdicts]
    data["unsaturated"] = unsaturated
    data["generator_bound"] = generator_bound
    data["all_hold"] = all(ok for _, ok in verdicts)
    return {"markdown": "\n".join(lines) + "\n", "data": data}


if __name__ == "__main__":
    sys.exit(main())
