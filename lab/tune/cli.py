"""`make tune`: sweep one server knob, measure each value with the load runner, recommend a value.

    python -m lab tune [--server asyncio[,threaded]] [--param pool_size] [--values 1,2,4,8,16,32,64,128]
        [--scenario hold] [--slo-p99-ms 100] [--reps 2] [--duration 5] [--users N] [--force] [--plan]
    python -m lab tune --report reports/<tune-id> [--slo-p99-ms 50]   # rebuild tune.html/tune.md

Each value is measured REPS times, round-robin: every round runs each value once (every other round
backwards), so that a slow spell of the shared machine lands on one repetition of several values,
not on all repetitions of one. Each run is lab.load.runner with one repetition, every selected server
started fresh (one at a time, everything but the knob fixed), into a normal run folder
reports/<tune-id>/<param>-<value>-r<round>/ (results.json, index.html; `make report` and
`make compare` work on it). A point's figures combine its runs: median and spread of the runs'
rates, latency percentiles from their HDR histograms merged, peaks maxed. Before the sweep, the
database connections each value implies are checked against PostgreSQL's max_connections. Then
reports/<tune-id>/ gets tune.json (the sweep, its points and runs, the recommendation), tune.html
(self-contained: inline CSS and SVG) and tune.md. The recommendation rule is in lab/tune/recommend.py.

Every flag also reads an environment variable (the Makefile passes them through): SERVER (or
SERVERS), PARAM, VALUES, SCENARIO, SLO_P99_MS, REPS, DURATION, WARMUP, USERS, TUNE_ID, FORCE,
CALIBRATE, LAB_REPORTS_DIR; the runner's own knobs (LAB_SERVER_CPUS, LAB_LOAD_CPUS, LOCUST_WORKERS,
SHAPE) and the servers' LAB_* knobs other than the swept one apply to every run unchanged.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import psycopg2

from lab.knobs import env_flag
from lab.load import calibrate
from lab.load import settings as load_settings
from lab.results import stats
from lab.stack import pg_config
from lab.tune import budget as budgets
from lab.tune.plan import (
    DEFAULT_DURATION,
    DEFAULT_PARAM,
    DEFAULT_REPS,
    DEFAULT_SCENARIO,
    DEFAULT_SERVER,
    DEFAULT_SLO_MS,
    DEFAULT_WARMUP,
    PARAMS,
    TuneError,
    sweep_from,
)
from lab.tune.sweep import needs_calibration, print_plan, rebuild, run, say
from servers import settings as server_settings


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m lab tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", "--servers", dest="servers",
                   default=env.get("SERVER") or env.get("SERVERS") or DEFAULT_SERVER,
                   help=f"comma-separated; one curve each: {','.join(server_settings.MODELS)} "
                        f"[SERVER, default {DEFAULT_SERVER}]")
    env_flag(p, "--param", "PARAM", DEFAULT_PARAM,
             f"the knob swept: {', '.join(PARAMS)} (default {DEFAULT_PARAM})")
    env_flag(p, "--values", "VALUES", "", "comma-separated values of the knob (default per knob: "
             + "; ".join(f"{k} {v.defaults}" for k, v in PARAMS.items()) + ")")
    env_flag(p, "--scenario", "SCENARIO", DEFAULT_SCENARIO,
             f"one scenario of the catalogue (default {DEFAULT_SCENARIO})")
    env_flag(p, "--slo-p99-ms", "SLO_P99_MS", "",
             f"p99 latency a recommended value must stay under (default {DEFAULT_SLO_MS:g})")
    env_flag(p, "--reps", "REPS", "", f"repetitions per value; the rule that judges two values needs "
             f"{stats.MIN_REPS} (default {DEFAULT_REPS})")
    env_flag(p, "--duration", "DURATION", "", f"measured seconds per repetition "
             f"(default {DEFAULT_DURATION:g})")
    env_flag(p, "--warmup", "WARMUP", "", f"uncounted seconds at full load first "
             f"(default {DEFAULT_WARMUP:g})")
    env_flag(p, "--users", "USERS", "", "concurrent users (default: the scenario's own)")
    env_flag(p, "--tune-id", "TUNE_ID", "", "name of the tune folder (default <date>-<time>-tune-<param>)")
    env_flag(p, "--reports-dir", "LAB_REPORTS_DIR", str(load_settings.REPO / "reports"),
             "where the tune folder goes (default reports/)")
    env_flag(p, "--calibrate", "CALIBRATE", "auto", "the load generator's calibration, as for make load",
             env, choices=load_settings.CALIBRATE_MODES)
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL to use (default: lab.stack.database.provision(): LAB_DATABASE_URL or the "
                        "embedded one)")
    p.add_argument("--force", action="store_true", default=env.get("FORCE", "") not in ("", "0"),
                   help="sweep even when a value would exceed PostgreSQL's max_connections [FORCE=1]")
    stats.add_margin_flag(p, stats.WITHIN)
    p.add_argument("--plan", action="store_true", help="print the plan and the connection check, run nothing")
    p.add_argument("--report", metavar="TUNE_DIR", default=None,
                   help="rebuild tune.json's recommendation, tune.html and tune.md of a finished tune "
                        "(e.g. with another --slo-p99-ms), run nothing")
    return p


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        margin = stats.margin(stats.WITHIN, args.margin_within) if args.margin_within else None
    except ValueError as exc:
        p.error(str(exc))
    try:
        if args.report:
            return rebuild(args.report, args.slo_p99_ms, margin)
        sweep = sweep_from(args)
        if margin is not None:
            sweep.base = sweep.base.replace(margin_within=margin)
        if args.plan:
            print_plan(sweep, needs_calibration(sweep))
            try:
                limits = budgets.read_budget(sweep.base.database_url or pg_config.database_url())
            except psycopg2.Error as exc:
                say(f"PostgreSQL not reachable ({str(exc).strip()}): database connections not checked")
                return 0
            shown, refusal = budgets.check_connections(sweep, limits)
            say("\n".join(shown + refusal))
            return 0
        signal.signal(signal.SIGTERM, _sigterm)
        return run(sweep)
    except (TuneError, pg_config.PostgresError, calibrate.CalibrationError) as exc:
        print(f"lab tune: {exc}", file=sys.stderr)
        return 2
