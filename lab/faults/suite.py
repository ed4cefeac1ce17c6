"""`make faults` (`python -m lab faults`): every server through overload, database faults, slow
clients and hostile input, each case bounded in time; writes reports/<faults-id>/faults.json,
faults.md and faults.html.

The suite provisions its own database (lab.stack.database, database `serverlab_faults`), puts a
fault proxy (lab/faults/proxy.py) between each server and PostgreSQL, and starts the servers
itself on free loopback ports, with the defaults a user gets (pool 10, acquire timeout 1 s) but a
short receive deadline and statement timeout, so that the slow-client and slow-database cases end
within seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from lab import knobs
from lab.faults import cases, report
from lab.faults.proxy import FaultProxy
from lab.faults.target import Result, Target
from lab.stack import database, pg_config, procs
from lab.stack.procs import ServerProcess
from servers.settings import MODELS

REPO = Path(__file__).resolve().parents[2]
QUICK_CASES = (
    "bad_input",
    "idempotency_race",
    "overload",
    "sessions_killed",
    "database_down",
    "database_blackhole",
    "disconnects",
    "slowloris",
    "worker_killed",
    "sigterm",
    "schemathesis",
)
POOL_SIZE, ACQUIRE_TIMEOUT, REQUEST_TIMEOUT, STATEMENT_TIMEOUT = 10, 1.0, 2.0, 2.0


def say(message: str) -> None:
    print(f"[faults] {message}", flush=True)


def _env_list(name: str, default: Sequence[str]) -> list[str]:
    raw = os.environ.get(name, "")
    return [x.strip() for x in raw.split(",") if x.strip()] or list(default)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab faults", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("LAB_FAULTS_QUICK") == "1",
        help="shorter cases, for CI [env LAB_FAULTS_QUICK=1]",
    )
    parser.add_argument(
        "--servers",
        default=",".join(_env_list("LAB_FAULTS_SERVERS", MODELS)),
        help="comma-separated servers [env LAB_FAULTS_SERVERS, default all four]",
    )
    parser.add_argument(
        "--cases",
        default=",".join(_env_list("LAB_FAULTS_CASES", QUICK_CASES)),
        help=f"comma-separated cases of {', '.join(cases.CASES)} [env LAB_FAULTS_CASES]",
    )
    parser.add_argument(
        "--soak",
        default=os.environ.get("LAB_FAULTS_SOAK", "0"),
        help="seconds of the soak at half capacity, 0 for none; ignored with --quick "
        "[env LAB_FAULTS_SOAK, e.g. 600]",
    )
    parser.add_argument(
        "--reports",
        default=os.environ.get("LAB_REPORTS_DIR", str(REPO / "reports")),
        help="where the run folder goes [env LAB_REPORTS_DIR]",
    )
    args = parser.parse_args(list(argv))
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for name in args.servers:
        if name not in MODELS:
            parser.error(f"unknown server {name!r}; choose from {', '.join(MODELS)}")
    for name in args.cases:
        if name not in cases.CASES:
            parser.error(f"unknown case {name!r}; choose from {', '.join(cases.CASES)}")
    try:
        args.soak = knobs.number(args.soak, "--soak / LAB_FAULTS_SOAK", 0, 86_400) or 0.0
    except ValueError as exc:
        parser.error(str(exc))
    return args


def start(model: str, database_url: str, log_dir: Path, env: dict[str, str]) -> ServerProcess:
    for attempt in range(3):
        try:
            return procs.start_server(
                model,
                port=procs.free_port(),
                database_url=database_url,
                log_dir=log_dir,
                env=env,
                health_timeout=60.0,
            )
        except procs.PortInUseError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> int:
    run_id = datetime.now().strftime("faults-%Y%m%d-%H%M%S")
    folder = Path(args.reports) / run_id
    folder.mkdir(parents=True, exist_ok=True)
    say(
        f"run {run_id}: servers {', '.join(args.servers)}; cases {', '.join(args.cases)}"
        + (" (quick)" if args.quick else "")
    )
    direct = database.provision("serverlab_faults")
    results: list[Result] = []
    began = time.monotonic()
    for model in args.servers:
        results += run_model(model, direct, folder, args)
    results += cases_across_models(results)
    if args.soak and not args.quick:
        for model in args.servers:
            results += run_model(model, direct, folder, args, soak=args.soak)
    meta = {
        "id": run_id,
        "quick": args.quick,
        "servers": args.servers,
        "cases": args.cases,
        "seconds": round(time.monotonic() - began, 1),
        "pool_size": POOL_SIZE,
        "acquire_timeout": ACQUIRE_TIMEOUT,
        "request_timeout": REQUEST_TIMEOUT,
        "statement_timeout": STATEMENT_TIMEOUT,
        "command": "python -m lab faults " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["faults"] else []),
    }
    paths = report.write(folder, meta, results)
    print(report.markdown_table(results))
    say(f"wrote {', '.join(str(p) for p in paths)}")
    failed = [r for r in results if r.passed is False]
    say(
        f"{len(failed)} of {sum(r.passed is not None for r in results)} case runs failed"
        if failed
        else "every case passed"
    )
    return 1 if failed else 0


def run_model(
    model: str, direct: str, folder: Path, args: argparse.Namespace, soak: float = 0.0
) -> list[Result]:
    app_name = f"faults-{model}"
    env = {
        "LAB_POOL_SIZE": str(POOL_SIZE),
        "LAB_ACQUIRE_TIMEOUT": str(ACQUIRE_TIMEOUT),
        "LAB_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        "LAB_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
        "LAB_APP_NAME": app_name,
        "LAB_LOG_LEVEL": "warning",
    }
    workers = 2 if model == "multiproc" else 1
    if model == "multiproc":
        env["LAB_WORKERS"] = str(workers)
    results: list[Result] = []
    extra: list[ServerProcess] = []
    with FaultProxy.to_url(direct) as proxy:
        url = proxy.url_for(direct)
        logs = folder / "logs" / model
        proc = start(model, url, logs, env)

        def fresh(more: dict[str, str]) -> ServerProcess:
            server = start(model, url, logs / f"fresh-{len(extra) + 1}", {**env, **more})
            extra.append(server)
            return server

        try:
            target = Target(
                model,
                proc,
                proxy,
                direct,
                app_name,
                POOL_SIZE,
                workers,
                ACQUIRE_TIMEOUT,
                REQUEST_TIMEOUT,
                STATEMENT_TIMEOUT,
                args.quick,
                fresh,
            )
            todo = (
                [("soak", lambda t: cases.soak(t, soak))]
                if soak
                else [(name, cases.CASES[name]) for name in args.cases]
            )
            for name, case in todo:
                say(f"{model}: {name} ...")
                started = time.monotonic()
                try:
                    result = case(target)
                except Exception as exc:  # a case that breaks is a failed case, with its reason
                    traceback.print_exc()
                    result = Result(
                        name, model, False, failed=[f"the case raised {type(exc).__name__}: {exc}"]
                    )
                result.seconds = round(time.monotonic() - started, 1)
                proxy.heal()
                for server in extra:
                    procs.stop_server(server)
                extra.clear()
                if not proc.alive():
                    result.passed = False
                    result.failed.append(
                        f"the server died (exit {proc.popen.returncode}); see {proc.log_path}"
                    )
                    proc = start(model, url, logs / f"restart-{name}", env)
                    target.proc = proc
                say(f"{model}: {name}: {verdict(result)} {result.failed or ''}")
                results.append(result)
        finally:
            for server in [proc, *extra]:
                procs.stop_server(server)
    return results


def cases_across_models(results: list[Result]) -> list[Result]:
    """The bad-input table once more, across servers: the same status from all four."""
    tables = {r.model: r.figures.get("statuses", {}) for r in results if r.case == "bad_input" and r.figures}
    if len(tables) < 2:
        return []
    kinds = sorted(set().union(*tables.values()))
    differ = {
        k: {m: t.get(k) for m, t in tables.items()}
        for k in kinds
        if len({t.get(k) for t in tables.values()}) > 1
    }
    figures = {"servers": len(tables), "kinds": len(kinds), "kinds_that_differ": differ}
    return [
        Result(
            "bad_input_same_everywhere",
            "all",
            not differ,
            figures,
            [f"{len(differ)} kinds differ between servers"] if differ else [],
        )
    ]


def verdict(result: Result) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[result.passed]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except (pg_config.PostgresError, procs.StartError) as exc:
        print(f"lab faults: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
