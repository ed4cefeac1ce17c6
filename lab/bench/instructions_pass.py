"""Instructions per request of each checked bench figure, one target at a time under callgrind."""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import psutil

from lab.bench import instructions as bench_instructions
from lab.bench.fleet import start_bare
from lab.bench.wrk import run_wrk
from lab.cpus import pin_tree
from lab.stack import procs


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
