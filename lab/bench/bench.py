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
client that turns around as Locust's does (docs/bench.md has the figures), and the load-vs-bench
self-check uses 1 ms.

The load generator is wrk (C, one thread), pinned to its own CPUs; the servers are pinned to
others, so the generator is not the limit (its CPU use is recorded and flagged if it was).
Repetitions run round-robin over the targets, each server next to its reference, so that drift
on a noisy machine spreads evenly.
"""
import argparse
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lab import files, machine
from lab.bench import ablation, peers, versus
from lab.bench import instructions as bench_instructions
from lab.bench.bench_report import ENDPOINTS, TARGET_CONNECTIONS, build_report
from lab.bench.fleet import REPO, Fleet, reference_of
from lab.bench.instructions_pass import instructions_pass
from lab.bench.wrk import HEADS, WARM_SECONDS, WRK_OVERHEAD, Series, measure, run_wrk
from lab.cpus import database_cpus, parse_cpus
from lab.fmt import fmt_seconds
from lab.knobs import env_flag, integer
from lab.results import stats
from lab.stack import cpu_budget, database, idle
from servers.ablation import GUARANTEES
from servers.ablation import parse as guarantee_names
from servers.settings import MODELS


def parse_endpoints(raw: str) -> list[str]:
    """The paths named by LAB_BENCH_ENDPOINTS (json, db, queries, fortunes), in the bench's order."""
    names = {n.strip() for n in raw.split(",") if n.strip()}
    unknown = names - set(ENDPOINTS)
    if unknown or not names:
        raise ValueError(f"endpoints {sorted(unknown) if unknown else raw!r}: choose from "
                         f"{', '.join(ENDPOINTS)} (comma-separated)")
    return [path for name, path in ENDPOINTS.items() if name in names]


def parse_guarantees(raw: str) -> list[str]:
    """The guarantees --ablation switches off in turn (LAB_BENCH_GUARANTEES), in GUARANTEES' order;
    ValueError saying what to name."""
    try:
        names = guarantee_names(raw)
    except ValueError as exc:
        raise ValueError(f"make bench: --guarantees {raw!r}: {exc} (LAB_BENCH_GUARANTEES)") from None
    if not names:
        raise ValueError(f"make bench: --guarantees {raw!r} names none: name at least one of "
                         f"{', '.join(GUARANTEES)}, or all (LAB_BENCH_GUARANTEES)")
    return [g for g in GUARANTEES if g in names]


def plan_targets(models: Sequence[str], paths: Sequence[str],
                 references: bool = True, with_peers: bool = False) -> list[tuple[str, str]]:
    """(target, path) in measuring order: per path, each server, its metrics-off twin on /json, then
    its reference and (with_peers) its peers (each once per path), so the figures set side by side are
    measured back to back within every repetition; references=False: the servers alone."""
    plan: list[tuple[str, str]] = []
    for path in paths:
        for model in models:
            plan.append((model, path))
            if not references:
                continue
            if path == "/json":
                plan.append((f"{model} (metrics off)", path))
            for name in [reference_of(model), *(peers.names_of(model) if with_peers else [])]:
                if (name, path) not in plan:
                    plan.append((name, path))
    return plan


def estimate_seconds(figures: int, reps: int, duration: float, fresh: bool = True) -> float:
    """Wall time of the measuring part: a warm-up per figure at each start, then reps x duration each."""
    starts = reps if fresh else 1
    return figures * (starts * (WARM_SECONDS + WRK_OVERHEAD) + reps * (duration + WRK_OVERHEAD))


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
    env_flag(p, "--peers", "LAB_BENCH_PEERS", "yes", "'yes': with the references, each server's peers "
             "(production servers of its model: lab/bench/peers.py) are measured too; 'no': not", env,
             choices=("yes", "no"))
    p.add_argument("--ablation", action="store_true",
                   default=env.get("LAB_BENCH_ABLATION", "") not in ("", "0"),
                   help="instead: what each guarantee costs. Every server on /json and /db with all "
                        "its guarantees on, each switched off in turn (LAB_ABLATE), all off, beside its "
                        "floor and peers, one server at a time (see lab/bench/ablation.py) "
                        "[LAB_BENCH_ABLATION=1]")
    env_flag(p, "--against", "LAB_BENCH_AGAINST", "", "instead: each server beside the same server at this "
             "git revision (a hash, a branch, HEAD~1), alternating, with this checkout's over its CPU per "
             "request and the interval (see lab/bench/versus.py)", env)
    env_flag(p, "--guarantees", "LAB_BENCH_GUARANTEES", "all", "with --ablation: the guarantees switched off "
             f"in turn, comma-separated, of {', '.join(GUARANTEES)}, or all (all on and all off are measured "
             "whatever this says)", env)
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
        args.ablated = parse_guarantees(args.guarantees)
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

    if args.ablation:
        return _ablation(models, url, args, out_dir, server_cpus, load_cpus, db_cpus)
    if args.against:
        return _against(models, paths, url, args, out_dir, server_cpus, load_cpus, db_cpus)
    plan = plan_targets(models, paths, args.references == "yes", args.peers == "yes")
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


def _ablation(models: list[str], url: str, args: argparse.Namespace, out_dir: Path,
              server_cpus: list[int] | None, load_cpus: list[int] | None, db_cpus: list[int] | None) -> int:
    """`--ablation`: the ablation table on the bench page (bench.md, bench.json)."""
    configs = ablation.configs_of(args.ablated)
    figures = sum(len(ablation.rows_of(m, "", configs)) for m in models) * len(ablation.PATHS)
    print(f"ablation: {figures} figures x {args.reps} repetitions x {args.duration:g} s: about "
          f"{fmt_seconds(estimate_seconds(figures, args.reps, args.duration))} of measuring besides "
          "start-ups",
          flush=True)
    with contextlib.ExitStack() as cleanup:
        held = _held_and_pinned(cleanup, args, db_cpus)
        if held is None:
            return 2
        samples = ablation.run(models, url, args, out_dir / "logs", server_cpus, load_cpus, configs)
    lines, data = ablation.report(samples, args, server_cpus, load_cpus)
    return _write_table(out_dir, "--ablation", args, server_cpus, load_cpus, held, lines,
                        {"kind": "ablation", "ablation": data})


def _against(models: list[str], paths: list[str], url: str, args: argparse.Namespace, out_dir: Path,
             server_cpus: list[int] | None, load_cpus: list[int] | None, db_cpus: list[int] | None) -> int:
    """`--against REV`: this checkout's servers beside REV's (bench.md, bench.json)."""
    try:
        short, folder = versus.export(args.against, REPO)
    except ValueError as exc:
        print(f"make bench: {exc}", file=sys.stderr)
        return 2
    references = args.references == "yes"

    def rows_of(model: str) -> list[ablation.Row]:
        return versus.rows(model, short, folder, references)

    figures = sum(len(rows_of(m)) for m in models) * len(paths)
    print(f"against {short}: {figures} figures x {args.reps} repetitions x {args.duration:g} s: about "
          f"{fmt_seconds(estimate_seconds(figures, args.reps, args.duration))} of measuring besides "
          "start-ups", flush=True)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, folder, True)
        held = _held_and_pinned(cleanup, args, db_cpus)
        if held is None:
            return 2
        samples = ablation.run(models, url, args, out_dir / "logs", server_cpus, load_cpus,
                               paths=tuple(paths), rows_for=rows_of)
    margin = stats.margin(stats.WITHIN)
    lines, data = versus.report(samples, short, paths, margin)
    return _write_table(out_dir, f"--against {args.against}", args, server_cpus, load_cpus, held, lines,
                        {"kind": "against", "revision": short, "against": data})


def _held_and_pinned(cleanup: contextlib.ExitStack, args: argparse.Namespace,
                     db_cpus: list[int] | None) -> idle.Idle | None:
    """Idle CPUs held polling and the lab's PostgreSQL pinned, until `cleanup` closes; None (said why)
    when polling was asked for and cannot be held."""
    try:
        held = cleanup.enter_context(idle.polling(args.idle_poll))
    except idle.IdleError as exc:
        print(str(exc), file=sys.stderr)
        return None
    print(f"while measuring, {held.describe()} (LAB_IDLE_POLL)", flush=True)
    args.pinned_database_cpus = cleanup.enter_context(database.pinned(db_cpus))
    return held


def _write_table(out_dir: Path, mode: str, args: argparse.Namespace, server_cpus: list[int] | None,
                 load_cpus: list[int] | None, held: idle.Idle, lines: list[str],
                 payload: dict[str, object]) -> int:
    """bench.md and bench.json of an --ablation or --against run, and the table printed."""
    head = [f"# make bench {mode}: {args.reps} x {args.duration:g} s per figure, wrk -t1 "
            f"-c{args.connections}, pool size {args.pool_size}", "",
            f"Servers and references pinned to CPUs {server_cpus or 'all'}; wrk to CPUs "
            f"{load_cpus or 'all'}; the lab's PostgreSQL to CPUs "
            f"{args.pinned_database_cpus or 'all (not pinned)'}; {held.describe()}."]
    markdown = "\n".join(head + lines) + "\n"
    files.write_text(out_dir / "bench.md", markdown)
    files.write_json(out_dir / "bench.json", {**payload, "settings": vars(args), "machine": machine.facts(),
                                              "idle": held.as_dict()}, indent=2, default=str)
    print()
    print(markdown)
    print(f"saved {_shown(out_dir)}/bench.md and bench.json")
    return 0


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


if __name__ == "__main__":
    sys.exit(main())
