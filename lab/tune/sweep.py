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
import dataclasses
import json
import math
import os
import secrets
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import psycopg2

from lab import knobs
from lab.load import calibrate, plan, runner
from lab.load import settings as load_settings
from lab.report import run_report as report
from lab.report import svgplot
from lab.results import build as results
from lab.stack import database
from lab.tune import recommend
from lab.tune.recommend import Budget, Demand, Point, Recommendation, fmt_ms, fmt_pct, fmt_rps, fmt_value
from loadtests import catalogue
from servers import settings as server_settings

SCHEMA = "serverlab-tune"
SCHEMA_VERSION = 1
MAX_VALUES = 20
DEFAULT_SERVER = "asyncio"
DEFAULT_PARAM = "pool_size"
DEFAULT_SCENARIO = "hold"
DEFAULT_SLO_MS = 100.0
DEFAULT_REPS = 2
DEFAULT_DURATION = 5.0
DEFAULT_WARMUP = 1.0
BUSY_LOAD = 1.5  # load average per CPU above which the report says other programs competed
RUNNER_PROFILE = "quick"  # the runner needs a profile; duration, warm-up and reps are always given


class TuneError(RuntimeError):
    """A mistake a person can fix; the message says what to do."""


@dataclass(frozen=True)
class Param:
    name: str
    env_var: str
    kind: type
    defaults: str
    meaning: str


PARAMS = {p.name: p for p in (
    Param("pool_size", "LAB_POOL_SIZE", int, "1,2,4,8,16,32,64,128", "database connections per process"),
    Param("max_inflight", "LAB_MAX_INFLIGHT", int, "1,2,4,8,16,32,64,256",
          "requests in progress per process"),
    Param("workers", "LAB_WORKERS", int, "1,2,4", "multiproc worker processes"),
    Param("acquire_timeout", "LAB_ACQUIRE_TIMEOUT", float, "0.05,0.1,0.25,0.5,1,2",
          "seconds to wait for a pool connection or in-flight slot before a 503"),
)}


def say(message: str) -> None:
    print(message, flush=True)


def env_text(param: Param, value: float) -> str:
    """The value as the server's environment variable takes it."""
    return str(int(value)) if param.kind is int else fmt_value(value)


# --- the sweep's definition ----------------------------------------------------------------------------


@dataclass
class Sweep:
    param: Param
    values: list[float]
    servers: list[str]
    scenario: str
    slo_p99_ms: float
    base: load_settings.Settings  # the runner's settings every run starts from (one repetition each)
    tune_id: str
    rounds: int = 2  # REPS: passes over all values, each running every value once
    force: bool = False

    @property
    def tune_dir(self) -> Path:
        return self.base.reports_dir / self.tune_id

    def point_id(self, value: float) -> str:
        return f"{self.param.name}-{fmt_value(value)}"

    def env_text(self, value: float) -> str:
        return env_text(self.param, value)

    def run_settings(self, value: float, rnd: int) -> load_settings.Settings:
        """One run: this value, one repetition, into <tune>/<param>-<value>-r<round>/."""
        env = {**self.base.server_env, self.param.env_var: self.env_text(value)}
        return dataclasses.replace(self.base, run_id=f"{self.point_id(value)}-r{rnd}", reps=1,
                                   run_token=secrets.token_hex(4), server_env=env, reports_dir=self.tune_dir)

    def schedule(self) -> list[tuple[int, float]]:
        """(round, value) in run order: round-robin, every other round backwards, so that a slow spell
        of the machine (another program's load) hits one repetition of several values, not all of one."""
        return [(r, v) for r in range(1, self.rounds + 1)
                for v in (self.values if r % 2 else list(reversed(self.values)))]


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m lab tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", "--servers", dest="servers",
                   default=env.get("SERVER") or env.get("SERVERS") or DEFAULT_SERVER,
                   help=f"comma-separated; one curve each: {','.join(server_settings.MODELS)} "
                        f"[SERVER, default {DEFAULT_SERVER}]")
    p.add_argument("--param", default=env.get("PARAM") or DEFAULT_PARAM,
                   help=f"the knob swept: {', '.join(PARAMS)} [PARAM, default {DEFAULT_PARAM}]")
    p.add_argument("--values", default=env.get("VALUES", ""),
                   help="comma-separated values of the knob [VALUES, default per knob: "
                        + "; ".join(f"{k} {v.defaults}" for k, v in PARAMS.items()) + "]")
    p.add_argument("--scenario", default=env.get("SCENARIO") or DEFAULT_SCENARIO,
                   help=f"one scenario of the catalogue [SCENARIO, default {DEFAULT_SCENARIO}]")
    p.add_argument("--slo-p99-ms", default=env.get("SLO_P99_MS", ""),
                   help="p99 latency a recommended value must stay under "
                        f"[SLO_P99_MS, default {DEFAULT_SLO_MS:g}]")
    p.add_argument("--reps", default=env.get("REPS", ""),
                   help=f"repetitions per value; their spread is the noise [REPS, default {DEFAULT_REPS}]")
    p.add_argument("--duration", default=env.get("DURATION", ""),
                   help=f"measured seconds per repetition [DURATION, default {DEFAULT_DURATION:g}]")
    p.add_argument("--warmup", default=env.get("WARMUP", ""),
                   help=f"uncounted seconds at full load first [WARMUP, default {DEFAULT_WARMUP:g}]")
    p.add_argument("--users", default=env.get("USERS", ""),
                   help="concurrent users (default: the scenario's own) [USERS]")
    p.add_argument("--tune-id", default=env.get("TUNE_ID", ""),
                   help="name of the tune folder (default <date>-<time>-tune-<param>) [TUNE_ID]")
    p.add_argument("--reports-dir", default=env.get("LAB_REPORTS_DIR", str(load_settings.REPO / "reports")),
                   help="where the tune folder goes [LAB_REPORTS_DIR, default reports/]")
    p.add_argument("--calibrate", default=env.get("CALIBRATE", "auto"), choices=("auto", "force", "skip"),
                   help="the load generator's calibration, as for make load [CALIBRATE]")
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL to use (default: lab.stack.database.provision(): LAB_DATABASE_URL or the "
                        "embedded one)")
    p.add_argument("--force", action="store_true", default=env.get("FORCE", "") not in ("", "0"),
                   help="sweep even when a value would exceed PostgreSQL's max_connections [FORCE=1]")
    p.add_argument("--plan", action="store_true", help="print the plan and the connection check, run nothing")
    p.add_argument("--report", metavar="TUNE_DIR", default=None,
                   help="rebuild tune.json's recommendation, tune.html and tune.md of a finished tune "
                        "(e.g. with another --slo-p99-ms), run nothing")
    return p


def parse_values(text: str, param: Param) -> list[float]:
    values: list[float] = []
    for raw in (x.strip() for x in text.split(",")):
        if not raw:
            continue
        try:
            v = float(raw)
        except ValueError:
            raise TuneError(f"VALUES: {raw!r} is not a number; write them like 2,5,10,20,40") from None
        if not math.isfinite(v):
            raise TuneError(f"VALUES: {raw!r} is not a finite number")
        if param.kind is int and v != int(v):
            raise TuneError(f"VALUES: {param.name} takes whole numbers, got {raw!r}")
        values.append(int(v) if param.kind is int else v)
    if not values:
        raise TuneError(f"VALUES is empty: give the values of {param.name} to sweep, e.g. {param.defaults}")
    values = sorted(set(values))
    if len(values) > MAX_VALUES:
        raise TuneError(f"VALUES: {len(values)} values; sweep at most {MAX_VALUES} at once")
    return values


def _number(raw: str, name: str, default: float, low: float, high: float) -> float:
    try:
        value = knobs.number(raw, name, low, high)
    except ValueError as exc:
        raise TuneError(str(exc)) from None
    return default if value is None else value


def server_config(model: str, env: dict[str, str]) -> server_settings.Settings:
    """The settings a server of the sweep will run with (validates the swept value, too)."""
    return server_settings.load(model, env={"LAB_DATABASE_URL": server_settings.DEFAULT_DATABASE_URL, **env})


def processes(model: str, cfg: server_settings.Settings, env: dict[str, str],
              server_cpus: list[int] | None) -> int:
    """Processes of one server: multiproc without LAB_WORKERS sizes itself to the server CPUs it is
    pinned to (the runner starts it with that affinity), not to the CPUs this process may use."""
    if model == "multiproc" and not env.get("LAB_WORKERS") and server_cpus:
        return len(server_cpus)
    return cfg.workers


def sweep_from(args: argparse.Namespace) -> Sweep:
    param = PARAMS.get(args.param.strip())
    if param is None:
        raise TuneError(f"PARAM={args.param!r} is unknown; choose from {', '.join(PARAMS)}")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [s for s in servers if s not in server_settings.MODELS]
    if bad or not servers:
        raise TuneError(f"SERVER: unknown {', '.join(bad) or '(none)'}; choose from "
                        f"{', '.join(server_settings.MODELS)} (comma-separated for one curve each)")
    servers = list(dict.fromkeys(servers))
    if param.name == "workers" and servers != ["multiproc"]:
        raise TuneError("PARAM=workers changes only the multiproc server (the others always run one "
                        "process); use SERVER=multiproc")
    scenario = args.scenario.strip()
    if "," in scenario:
        raise TuneError(f"SCENARIO={scenario!r}: a sweep runs one scenario; run one tune per scenario")
    if scenario not in catalogue.SCENARIOS:
        raise TuneError(f"SCENARIO={scenario!r} is unknown; choose from {', '.join(catalogue.SCENARIOS)}")
    values = parse_values(args.values or param.defaults, param)
    slo = _number(args.slo_p99_ms, "SLO_P99_MS", DEFAULT_SLO_MS, 0.001, 3_600_000)
    reps = int(_number(args.reps, "REPS", DEFAULT_REPS, 1, 100))
    if args.reps.strip() and float(args.reps) != reps:
        raise TuneError(f"REPS must be a whole number, got {args.reps!r}")
    duration = _number(args.duration, "DURATION", DEFAULT_DURATION, 1, 24 * 3600)
    warmup = _number(args.warmup, "WARMUP", DEFAULT_WARMUP, 0, 3600)
    tune_id = args.tune_id.strip() or time.strftime("%Y%m%d-%H%M%S") + f"-tune-{param.name}"
    if tune_id in {".", "..", "latest"} or not all(c.isalnum() or c in "-_." for c in tune_id):
        raise TuneError(f"TUNE_ID={tune_id!r}: use letters, digits, '-', '_' and '.' only (and not 'latest')")
    argv = ["--profile", RUNNER_PROFILE, "--servers", ",".join(servers), "--scenarios", scenario,
            "--duration", f"{duration:g}", "--warmup", f"{warmup:g}", "--reps", "1",
            "--calibrate", args.calibrate, "--reports-dir", args.reports_dir, "--users", args.users.strip(),
            "--run-id", "", "--server-cpu", os.environ.get("LAB_SERVER_CPU") or "none"]
    if args.database_url:
        argv += ["--database-url", args.database_url]
    try:
        base = load_settings.from_args(load_settings.build_parser().parse_args(argv))
    except load_settings.RunError as exc:
        raise TuneError(str(exc)) from None
    for value in values:  # each value against the servers' own limits (servers/settings.py)
        env = {**base.server_env, param.env_var: env_text(param, value)}
        for model in servers:
            try:
                server_config(model, env)
            except server_settings.SettingsError as exc:
                raise TuneError(f"VALUES: {param.name}={fmt_value(value)} is not valid for the {model} "
                                f"server: {exc}") from None
    return Sweep(param, values, servers, scenario, slo, base, tune_id, rounds=reps,
                 force=bool(args.force))


# --- database connections --------------------------------------------------------------------------------


def read_budget(url: str) -> Budget:
    """max_connections, the slots the servers' role may not use, and client sessions open now."""
    conn = database.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('max_connections')::int, "
                        "current_setting('superuser_reserved_connections')::int, "
                        "coalesce(current_setting('reserved_connections', true), '0')::int, "
                        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
                        "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                        " AND pid <> pg_backend_pid())")
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        raise TuneError("PostgreSQL returned no settings for max_connections")
    max_conn, su_reserved, reserved, superuser, others = row
    return Budget(max_connections=int(max_conn),
                  reserved=0 if superuser else int(su_reserved) + int(reserved), others=int(others))


def demands(sweep: Sweep, value: float) -> list[Demand]:
    env = {**sweep.base.server_env, sweep.param.env_var: sweep.env_text(value)}
    out = []
    for model in sweep.servers:
        cfg = server_config(model, env)
        out.append(Demand(model, cfg.pool_size, processes(model, cfg, env, sweep.base.server_cpus)))
    return out


def connection_totals(sweep: Sweep, budget: Budget) -> list[recommend.ConnectionTotal]:
    # The runner starts one server at a time and stops it before the next: one server runs at once.
    return [recommend.connection_total(v, demands(sweep, v), budget, concurrent=1) for v in sweep.values]


def check_connections(sweep: Sweep, budget: Budget) -> list[str]:
    """Print each value's connections; the refusal message when some exceed the limit, else []."""
    totals = connection_totals(sweep, budget)
    say(f"database connections: max_connections {budget.max_connections}"
        + (f", {budget.reserved} reserved for superusers" if budget.reserved else "")
        + f"; {budget.others} client sessions open now, {budget.lab_sessions} for the lab during the sweep")
    for t in totals:
        say(f"  {'OK  ' if t.fits else 'OVER'} {t.describe(sweep.param.name)}")
    over = [t for t in totals if not t.fits]
    if not over:
        return []
    worst = max(over, key=lambda t: t.total)
    need = int(math.ceil(worst.total * 1.2 / 50.0) * 50) + worst.budget.reserved
    procs_per = max(d.processes for d in worst.demands)
    lines = [f"{', '.join(f'{sweep.param.name}={fmt_value(t.value)}' for t in over)} would need up to "
             f"{worst.total} database connections, more than PostgreSQL allows ({budget.limit})."]
    if sweep.param.name == "pool_size":
        fit = recommend.largest_fitting_pool(procs_per, budget)
        lines.append(f"Lower VALUES (pool_size up to {fit} fits now), or")
    else:
        lines.append("Lower VALUES, or")
    if os.environ.get("LAB_DATABASE_URL"):
        lines.append(f"raise max_connections to at least {need} on the server of LAB_DATABASE_URL and "
                     "restart it, or")
    else:
        lines.append(f"raise LAB_PG_MAX_CONNECTIONS (e.g. LAB_PG_MAX_CONNECTIONS={need}) and restart the "
                     "embedded PostgreSQL: `make down` (or python -m lab database down), then run the tune "
                     f"with LAB_PG_MAX_CONNECTIONS={need} set (it starts PostgreSQL again), or")
    if budget.others:
        lines.append(f"stop the programs holding the {budget.others} other sessions (e.g. `make down`), or")
    lines.append("pass --force (FORCE=1) to sweep anyway: the servers will get `too many clients` errors.")
    return lines


# --- points ------------------------------------------------------------------------------------------------


def _entry(data: dict[str, Any], server: str, scenario: str) -> dict[str, Any] | None:
    for e in data.get("results") or []:
        if e.get("server") == server and e.get("scenario") == scenario:
            return dict(e)
    return None


def point_figures(value: float, entry: dict[str, Any] | None, param: Param) -> dict[str, Any]:
    """One server's figures at one value, for tune.json (a Point plus what the table shows)."""
    if entry is None:
        pt = Point(value=value, ok_rps=None, ok=False, problems=("no result for this server",))
        return {**dataclasses.asdict(pt), "extra": {}}
    pt = recommend.point_from_entry(value, entry)
    config = entry.get("server_config") or {}
    applied = config.get(param.name)
    problems = list(pt.problems)
    if applied is not None and float(applied) != value:
        problems.append(f"the server reported {param.name}={applied}, not the swept {fmt_value(value)}")
        pt = dataclasses.replace(pt, ok=False, problems=tuple(problems))
    pool = entry.get("pool") or {}
    extra = {"applied": applied, "pool_size": config.get("pool_size"), "workers": config.get("workers"),
             "pool_in_use_peak": pool.get("in_use_peak"), "pool_waiting_peak": pool.get("waiting_peak"),
             "rejections": pool.get("rejections"),
             "cpu_percent_mean": (entry.get("cpu_percent") or {}).get("mean"),
             "client_connections_peak": entry.get("client_connections_peak"),
             "rps_values": (entry.get("ok_rps") or {}).get("values"), "users": entry.get("users"),
             "generator_cpu_percent": (entry.get("generator") or {}).get("cpu_percent_mean"),
             "failures_by_kind": entry.get("failures_by_kind")}
    return {**dataclasses.asdict(pt), "problems": list(pt.problems), "extra": extra}


def to_point(fig: dict[str, Any]) -> Point:
    names = {f.name for f in dataclasses.fields(Point)}
    data = {k: v for k, v in fig.items() if k in names}
    data["problems"] = tuple(data.get("problems") or ())
    return Point(**data)


def read_run(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """A run folder's results.json (rebuilt from its raw files if missing), or {} and why not."""
    out = run_dir / "results.json"
    try:
        if not out.exists() and (run_dir / "settings.json").exists():
            results.write(run_dir)
        data = json.loads(out.read_text(encoding="utf-8"))
    except (results.ResultsError, OSError, ValueError) as exc:
        return {}, f"cannot read {out}: {exc}"
    return (data, None) if isinstance(data, dict) else ({}, f"{out} is not a results file")


def _median_spread(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "spread": None, "values": []}
    med = statistics.median(values)
    return {"median": round(med, 1), "spread": round((max(values) - min(values)) / med, 4) if med else None,
            "values": list(values)}


def combine(entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """One results-like entry from the same server x scenario x value over several runs (rounds):
    medians and spread of the runs' rates, latency from their HDR histograms merged, totals summed,
    peaks maxed; the shape of a results.json entry, so recommend.point_from_entry reads it."""
    if not entries:
        return None
    if len(entries) == 1:
        return entries[0]

    def rate(key: str) -> dict[str, Any]:
        return _median_spread([v for e in entries if (v := (e.get(key) or {}).get("median")) is not None])

    def peak(*path: str) -> Any:
        vals = [v for e in entries if isinstance(v := _dig(e, path), int | float)]
        return max(vals) if vals else None

    hist = results.merge(e["latency_hdr"] for e in entries if e.get("latency_hdr"))
    requests = sum(int(e.get("requests") or 0) for e in entries)
    failures = sum(int(e.get("failures") or 0) for e in entries)
    kinds: dict[str, int] = {}
    for e in entries:
        for k, n in (e.get("failures_by_kind") or {}).items():
            kinds[k] = kinds.get(k, 0) + int(n)
    cpu = [v for e in entries if isinstance(v := _dig(e, ("cpu_percent", "mean")), int | float)]
    problems = [f"round {i}: {p}" for i, e in enumerate(entries, 1) for p in e.get("problems") or []]
    return {
        "server": entries[0].get("server"), "scenario": entries[0].get("scenario"),
        "users": entries[0].get("users"), "server_config": entries[0].get("server_config"),
        "reps": sum(int(e.get("reps") or 0) for e in entries),
        "status": "ok" if all(e.get("status") == "ok" for e in entries) else "problem", "problems": problems,
        "rps": rate("rps"), "ok_rps": rate("ok_rps"), "latency_ms": results.latency_ms(hist),
        "requests": requests, "failures": failures,
        "failure_rate": round(failures / requests, 6) if requests else None, "failures_by_kind": kinds,
        "db_connections_peak": peak("db_connections_peak"),
        "client_connections_peak": peak("client_connections_peak"),
        "pool": {"in_use_peak": peak("pool", "in_use_peak"), "waiting_peak": peak("pool", "waiting_peak"),
                 "rejections": peak("pool", "rejections")},
        "cpu_percent": {"mean": round(statistics.fmean(cpu), 2) if cpu else None},
        "generator": {"cpu_percent_mean": peak("generator", "cpu_percent_mean")},
        "generator_bound": any(e.get("generator_bound") for e in entries),
    }


def _dig(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def read_point(tune_dir: Path, rec: dict[str, Any], servers: Sequence[str], scenario: str,
               param: Param) -> dict[str, Any]:
    """A point's figures per server, combined over its runs (one per round)."""
    per_server: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
    errors = []
    for run in rec["runs"]:
        data, error = read_run(tune_dir / run["dir"])
        if error:
            errors.append(error)
        for s in servers:
            entry = _entry(data, s, scenario)
            if entry is not None:
                per_server[s].append(entry)
    rec["errors"] = errors
    rec["figures"] = {s: point_figures(rec["value"], combine(per_server[s]), param) for s in servers}
    return rec


def curves(doc: dict[str, Any]) -> dict[str, list[Point]]:
    return {s: [to_point(p["figures"][s]) for p in doc["points"] if s in p.get("figures", {})]
            for s in doc["servers"]}


def decide(doc: dict[str, Any]) -> dict[str, Recommendation]:
    """Each server's recommendation, stored into doc with the connections the value implies."""
    recs = {s: recommend.recommend(pts, doc["slo_p99_ms"], doc["param"]) for s, pts in curves(doc).items()}
    budget_doc = (doc.get("connections") or {}).get("budget")
    doc["recommendations"] = {}
    for s, r in recs.items():
        item = r.as_dict()
        if r.value is not None and budget_doc:
            per = next((d for d in doc["connections"]["per_value"] if d["value"] == r.value), None)
            if per is not None:
                budget = Budget(**budget_doc)
                mine = [Demand(**d) for d in per["demands"] if d["server"] == s]
                if mine:
                    total = recommend.connection_total(r.value, mine, budget)
                    item["connections"] = total.describe(doc["param"])
        doc["recommendations"][s] = item
    return recs


# --- charts --------------------------------------------------------------------------------------------

W, H = svgplot.WIDTH, svgplot.HEIGHT
L, R, T, B = svgplot.LEFT, svgplot.RIGHT, svgplot.TOP, svgplot.BOTTOM
EXTRA_CSS = """
svg .ref{stroke:#b42318;stroke-width:1.2;stroke-dasharray:6 4}
svg .ref-label{fill:#b42318;font-size:11px}
svg .pick{stroke-width:1.5;stroke-dasharray:2 3;opacity:.8}
.rec{border-left:4px solid var(--accent);background:var(--accent-bg);padding:10px 14px;border-radius:6px;
  margin:10px 0}
.rec.miss{border-left-color:var(--warn);background:var(--warn-bg)}
.rec.none{border-left-color:var(--bad);background:var(--bad-bg)}
.rec p{margin:4px 0}
"""


def value_chart(plot_id: str, title: str, values: Sequence[float],
                series: Sequence[tuple[str, str, list[Any]]], *, param: str, y_label: str, fmt: svgplot.Fmt,
                log_y: bool = False,
                ref: tuple[float, str] | None = None, picks: Sequence[tuple[float, str, str]] = ()) -> str:
    """One line per server over the swept values, evenly spaced (sweeps are often geometric), with an
    optional horizontal reference (the SLO) and a dashed mark at each server's recommended value."""
    ys_all = [y for _n, _c, ys in series for y in ys if y is not None]
    if not ys_all or not values:
        return svgplot.empty_chart(plot_id, title, "no data recorded")
    if ref is not None:
        ys_all.append(ref[0])
    positive = [y for y in ys_all if y > 0]
    log_y = log_y and bool(positive) and len(positive) == len(ys_all)
    ticks = svgplot.log_ticks(min(positive), max(positive)) if log_y else svgplot.nice_ticks(
        min([*ys_all, 0.0]), max(ys_all))
    sy = svgplot.Scale(ticks[0], ticks[-1], H - B, T, log_y)
    step = (W - L - R) / len(values)

    def sx(i: int) -> float:
        return round(L + (i + 0.5) * step, 1)

    out = [f'<svg class="chart" data-plot="{escape(plot_id)}" viewBox="0 0 {W} {H}" role="img" '
           f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']
    for t in ticks:
        y = sy(t)
        out.append(f'<line class="grid" x1="{L}" x2="{W - R}" y1="{y}" y2="{y}"/><text class="tick" '
                   f'x="{L - 6}" y="{y + 4}" text-anchor="end">{escape(fmt(t))}</text>')
    for i, v in enumerate(values):
        out.append(f'<text class="tick" x="{sx(i)}" y="{H - B + 16}" text-anchor="middle">'
                   f"{escape(fmt_value(v))}</text>")
    out.append(f'<line class="axis" x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}"/>')
    for value, color, label in picks:
        if value in values:
            x = sx(list(values).index(value))
            out.append(f'<line class="pick" x1="{x}" x2="{x}" y1="{T}" y2="{H - B}" stroke="{color}">'
                       f"<title>{escape(label)}</title></line>")
    if ref is not None:
        y = sy(ref[0])
        out.append(f'<line class="ref" x1="{L}" x2="{W - R}" y1="{y}" y2="{y}"/>'
                   f'<text class="ref-label" x="{W - R - 4}" y="{y - 4}" text-anchor="end">'
                   f"{escape(ref[1])}</text>")
    for name, color, ys in series:
        d, pen = [], False
        for i, y in enumerate(ys):
            if y is None:
                pen = False
                continue
            d.append(f"{'L' if pen else 'M'}{sx(i)},{sy(y)}")
            pen = True
        if d:
            out.append(f'<path class="series" d="{"".join(d)}" stroke="{color}" fill="none">'
                       f"<title>{escape(name)}</title></path>")
        for i, y in enumerate(ys):
            if y is not None:
                out.append(f'<circle class="dot" cx="{sx(i)}" cy="{sy(y)}" r="3.5" fill="{color}"><title>'
                           f"{escape(name)}: {escape(fmt(y))} at {escape(param)}={fmt_value(values[i])}"
                           "</title></circle>")
    x = L
    for name, color, _ys in series:
        out.append(f'<rect class="swatch" x="{x}" y="12" width="12" height="12" rx="2" fill="{color}"/>'
                   f'<text class="legend" x="{x + 17}" y="22">{escape(name)}</text>')
        x += 17 + 7 * len(name) + 18
    out.append(f'<text class="axis-label" x="{L + (W - L - R) / 2}" y="{H - 8}" text-anchor="middle">'
               f"{escape(param)}</text>")
    out.append(f'<text class="axis-label" transform="translate(14 {T + (H - T - B) / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label + (" (log scale)" if log_y else ""))}</text></svg>')
    return "".join(out)


def charts(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(caption, note, svg) for throughput, p50, p99, failures and database connections."""
    values = [p["value"] for p in doc["points"]]
    palette = report.colors(doc["servers"])
    cur = curves(doc)
    by_value = {s: {p.value: p for p in pts} for s, pts in cur.items()}

    def col(s: str, get: Any) -> list[Any]:
        return [get(by_value[s][v]) if v in by_value[s] else None for v in values]

    picks = [(r["value"], palette[s], f"{s}: recommended {doc['param']}={fmt_value(r['value'])}")
             for s, r in (doc.get("recommendations") or {}).items()
             if r.get("value") is not None and r.get("verdict") == "recommended"]
    param = doc["param"]

    def series(get: Any) -> list[tuple[str, str, list[Any]]]:
        return [(s, palette[s], col(s, get)) for s in doc["servers"]]

    def wide(get: Any) -> bool:
        ys = [y for _n, _c, c in series(get) for y in c if y]
        return bool(ys) and max(ys) / max(min(ys), 1e-9) >= report.LOG_RATIO

    slo = float(doc["slo_p99_ms"])
    ms: svgplot.Fmt = lambda v: f"{fmt_ms(v)} ms"  # noqa: E731
    out = [
        ("Throughput", "successful requests per second, median of the repetitions; dashed: recommended value",
         value_chart("tune-rps", "throughput against " + param, values, series(lambda p: p.ok_rps),
                     param=param, y_label="successful rps", fmt=svgplot.short, picks=picks)),
        ("p50 latency", "median latency of successful requests",
         value_chart("tune-p50", "p50 against " + param, values, series(lambda p: p.p50_ms), param=param,
                     y_label="ms", fmt=ms, log_y=wide(lambda p: p.p50_ms), picks=picks)),
        ("p99 latency", f"successful requests; red: the {slo:g} ms SLO",
         value_chart("tune-p99", "p99 against " + param, values, series(lambda p: p.p99_ms), param=param,
                     y_label="ms", fmt=ms, log_y=wide(lambda p: p.p99_ms), ref=(slo, f"SLO {slo:g} ms"),
                     picks=picks)),
        ("Failures", f"share of requests that failed (503s from the pool or in-flight limits, timeouts); "
                     f"over {fmt_pct(recommend.MAX_FAILURE_RATE)} rules a value out",
         value_chart("tune-failures", "failures against " + param, values,
                     series(lambda p: None if p.failure_rate is None else p.failure_rate * 100), param=param,
                     y_label="% failed", fmt=lambda v: f"{v:.3g}%", picks=picks)),
        ("Database connections", "peak sessions of the server in pg_stat_activity during the measured window",
         value_chart("tune-db", "database connections against " + param, values,
                     series(lambda p: p.db_connections_peak), param=param, y_label="connections (peak)",
                     fmt=svgplot.short, picks=picks)),
    ]
    return out


# --- tune.md and tune.html -----------------------------------------------------------------------------

TABLE_HEADER = ("value", "ok rps", "spread", "all rps", "p50 ms", "p99 ms", "failed", "db conns",
                "pool waiting", "cpu %", "note", "run")


def _num(v: Any, spec: str = ".0f") -> str:
    return "-" if not isinstance(v, int | float) or isinstance(v, bool) else format(v, spec)


def table_rows(doc: dict[str, Any], server: str) -> list[list[str]]:
    rows = []
    rec = (doc.get("recommendations") or {}).get(server) or {}
    for p in doc["points"]:
        f = (p.get("figures") or {}).get(server)
        if f is None:
            continue
        x = f.get("extra") or {}
        notes = []
        if rec.get("value") == p["value"]:
            notes.append("RECOMMENDED" if rec.get("verdict") == "recommended" else "closest to SLO")
        if f.get("p99_ms") is not None and f["p99_ms"] > doc["slo_p99_ms"]:
            notes.append("over SLO")
        if (f.get("failure_rate") or 0) > recommend.MAX_FAILURE_RATE:
            notes.append(f"failing ({f.get('failure_kind') or '?'})")
        if f.get("generator_bound"):
            notes.append("generator-bound")
        if not f.get("ok"):
            notes.append("PROBLEM")
        rows.append([fmt_value(p["value"]), fmt_rps(f.get("ok_rps")),
                     "-" if f.get("spread") is None else f"{f['spread']:.1%}", fmt_rps(f.get("rps")),
                     fmt_ms(f.get("p50_ms")), fmt_ms(f.get("p99_ms")), fmt_pct(f.get("failure_rate")),
                     _num(f.get("db_connections_peak")), _num(x.get("pool_waiting_peak")),
                     _num(x.get("cpu_percent_mean")), ", ".join(notes),
                     " ".join(r["dir"] for r in p["runs"])])
    return rows


def _subtitle(doc: dict[str, Any]) -> str:
    users = doc.get("users") or "the scenario's own"
    values = ", ".join(fmt_value(v) for v in doc["values"])
    return (f"{doc['param']} ({doc['env_var']}) = {values} · scenario {doc['scenario']} · servers "
            f"{', '.join(doc['servers'])} · users {users} · {doc['reps']} x "
            f"{doc['duration']:g} s per value · SLO p99 {doc['slo_p99_ms']:g} ms")


RULE = (f"Rule: among values that failed at most {fmt_pct(recommend.MAX_FAILURE_RATE)} of requests and kept "
        "p99 under the SLO, take the best successful throughput; recommend the smallest value within noise "
        "of it. "
        f"Noise is the larger repetition spread of the two points compared (results.json), at least "
        f"{recommend.NOISE_FLOOR:.0%} and at most {recommend.NOISE_CAP:.0%}.")


def load_note(doc: dict[str, Any]) -> str | None:
    """How busy the machine was when each run started (other programs compete for the CPUs)."""
    loads = [r["loadavg"] for p in doc["points"] for r in p.get("runs") or [] if r.get("loadavg") is not None]
    if not loads:
        return None
    cpus = os.cpu_count() or 1
    text = (f"machine load average (1 min) when the runs started: {min(loads):.1f} to {max(loads):.1f} "
            f"on {cpus} CPUs")
    if max(loads) > BUSY_LOAD * cpus:  # a sweep's own run (server, Locust, PostgreSQL) adds about 1.5-2
        text += ("; other programs were competing for the CPUs, so CPU-bound figures are noisy: read the "
                 "spreads, and rerun when the machine is quiet")
    return text


def render_md(doc: dict[str, Any]) -> str:
    out = [f"# serverlab tune {doc['id']}", "", _subtitle(doc), "", f"Status: {doc['status']}.", "",
           "## Recommendation", ""]
    for s in doc["servers"]:
        r = (doc.get("recommendations") or {}).get(s) or {}
        out.append(f"- **{s}**: {r.get('sentence', 'no points')}")
        if r.get("connections"):
            out.append(f"  - connections: {r['connections']}")
        for note in r.get("notes") or []:
            out.append(f"  - note: {note}")
    out += ["", RULE, ""]
    note = load_note(doc)
    if note:
        out += [f"Note: {note}.", ""]
    for s in doc["servers"]:
        out += [f"## {s}", ""]
        out += report.md_table(TABLE_HEADER, table_rows(doc, s))
        out.append("")
    out += ["## Database connections", ""]
    conn = doc.get("connections") or {}
    out += [f"- {line}" for line in conn.get("lines") or ["not checked"]]
    out += ["", "## Reproduce", "", "```sh", doc.get("command") or "", "```", "",
            f"A point's own report: `make report RUN={doc['id']}/<point folder>`; compare two points: "
            f"`make compare A={doc['id']}/<point> B={doc['id']}/<point>`; this report with another SLO: "
            f"`python -m lab tune --report reports/{doc['id']} --slo-p99-ms 50`.", ""]
    return "\n".join(out)


def render_html(doc: dict[str, Any], tune_dir: Path) -> str:
    palette = report.colors(doc["servers"])
    h: list[str] = []
    add = h.append
    add('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>serverlab tune {escape(doc['id'])}</title><style>{report.CSS}{EXTRA_CSS}</style></head>"
        "<body><main>")
    ok = doc["status"] == "complete"
    add(f"<header><h1>serverlab tune: {escape(doc['param'])} on {escape(doc['scenario'])}</h1>"
        f'<p class="sub">{escape(doc["id"])} · {escape(_subtitle(doc))} · <span class="status '
        f'{"ok" if ok else "problem"}">{escape(doc["status"])}</span></p></header>')
    add('<section class="card" id="recommendation"><h2>Recommendation</h2>')
    for s in doc["servers"]:
        r = (doc.get("recommendations") or {}).get(s) or {}
        cls = {"recommended": "", "slo_not_met": " miss"}.get(r.get("verdict", ""), " none")
        add(f'<div class="rec{cls}"><p><span class="dot" style="background:{palette[s]}"></span>'
            f"<strong>{escape(s)}</strong>: {escape(r.get('sentence', 'no points'))}</p>")
        if r.get("connections"):
            add(f"<p>{escape(r['connections'])}</p>")
        if r.get("notes"):
            add('<ul class="notes">' + "".join(f'<li class="warning">{escape(n)}</li>' for n in r["notes"])
                + "</ul>")
        add("</div>")
    add(f'<p class="meta">{escape(RULE)}</p>')
    note = load_note(doc)
    if note:
        add(f'<p class="meta">{escape(note[0].upper() + note[1:])}.</p>')
    add("</section>")
    add('<section class="card" id="curves"><h2>Curves</h2><div class="plots">')
    for caption, note, svg in charts(doc):
        add(f"<figure><figcaption>{escape(caption)}<span>{escape(note)}</span></figcaption>{svg}</figure>")
    add("</div></section>")
    for s in doc["servers"]:
        add(f'<section class="card" id="points-{escape(s)}"><h2><span class="dot" style="background:'
            f'{palette[s]}"></span>{escape(s)}: the points</h2>')
        rows = table_rows(doc, s)
        body = []
        for row in rows:
            links = []
            for folder in row[-1].split():
                page = "index.html" if (tune_dir / folder / "index.html").exists() else "results.json"
                links.append(f'<a href="{escape(folder)}/{page}">{escape(folder)}</a>')
            cells = [escape(c) for c in row[:-1]] + [" ".join(links)]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        head = "".join(f"<th>{escape(c)}</th>" for c in TABLE_HEADER)
        add(f'<div class="table-wrap"><table class="servers"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div></section>")
    conn = doc.get("connections") or {}
    add('<section class="card" id="connections"><h2>Database connections</h2><ul class="notes">'
        + "".join(f"<li>{escape(line)}</li>" for line in conn.get("lines") or ["not checked"])
        + "</ul></section>")
    problems = doc.get("problems") or []
    if problems:
        add('<section class="card" id="problems"><h2>Problems</h2><ul class="notes">'
            + "".join(f'<li class="problem">{escape(p)}</li>' for p in problems) + "</ul></section>")
    add('<section class="card" id="reproduce"><h2>Reproduce</h2>'
        f"<pre>{escape(doc.get('command') or '')}</pre>"
        f'<p class="meta">A point\'s own report: make report RUN={escape(doc["id"])}/&lt;point folder&gt;. '
        f"This report with another SLO: python -m lab tune --report reports/{escape(doc['id'])} "
        "--slo-p99-ms 50.</p></section>")
    add(f"<footer>built {escape(time.strftime('%Y-%m-%d %H:%M:%S'))} by lab/tune/sweep.py</footer>"
        "</main></body></html>")
    return "".join(h)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_reports(doc: dict[str, Any], tune_dir: Path) -> tuple[Path, Path]:
    decide(doc)
    runner.write_json(tune_dir / "tune.json", doc)
    html_path, md_path = tune_dir / "tune.html", tune_dir / "tune.md"
    write_text(html_path, render_html(doc, tune_dir))
    write_text(md_path, render_md(doc))
    return html_path, md_path


def rebuild(tune_arg: str, slo: str) -> int:
    tune_dir = Path(tune_arg)
    if not tune_dir.is_dir():
        tune_dir = Path(os.environ.get("LAB_REPORTS_DIR") or load_settings.REPO / "reports") / tune_arg
    doc = results.read_json(tune_dir / "tune.json") if tune_dir.is_dir() else None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise TuneError(f"{tune_arg} is not a tune folder (no tune.json); pass reports/<tune-id>")
    if slo.strip():
        doc["slo_p99_ms"] = _number(slo, "SLO_P99_MS", DEFAULT_SLO_MS, 0.001, 3_600_000)
    param = PARAMS[doc["param"]]
    for rec in doc["points"]:
        read_point(tune_dir, rec, doc["servers"], doc["scenario"], param)
    html_path, md_path = write_reports(doc, tune_dir)
    print_outcome(doc)
    say(f"wrote {html_path}\nwrote {md_path}")
    return 0


# --- the sweep ---------------------------------------------------------------------------------------------


def reproduce(sweep: Sweep) -> str:
    s = sweep.base
    parts = [".venv/bin/python", "-m", "lab", "tune", "--server", ",".join(sweep.servers), "--param",
             sweep.param.name, "--values", ",".join(fmt_value(v) for v in sweep.values), "--scenario",
             sweep.scenario, "--slo-p99-ms", f"{sweep.slo_p99_ms:g}", "--reps", str(sweep.rounds),
             "--duration", f"{s.duration:g}", "--warmup", f"{s.warmup:g}"]
    if s.users:
        parts += ["--users", str(s.users)]
    env = {k: v for k, v in sorted(s.server_env.items()) if k != sweep.param.env_var}
    for k, v in (("LAB_SERVER_CPUS", s.server_cpus), ("LAB_LOAD_CPUS", s.load_cpus)):
        if v:
            env[k] = ",".join(map(str, v))
    if s.locust_workers:
        env["LOCUST_WORKERS"] = str(s.locust_workers)
    if s.shape:
        env["SHAPE"] = s.shape
    prefix = " ".join(f"{k}={v}" for k, v in env.items())
    return (prefix + " " if prefix else "") + " ".join(parts)


def new_doc(sweep: Sweep) -> dict[str, Any]:
    s = sweep.base
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "id": sweep.tune_id, "param": sweep.param.name,
        "env_var": sweep.param.env_var, "meaning": sweep.param.meaning, "values": sweep.values,
        "servers": sweep.servers, "scenario": sweep.scenario, "slo_p99_ms": sweep.slo_p99_ms,
        "users": s.users or catalogue.scenario(sweep.scenario).users, "reps": sweep.rounds,
        "order": "round-robin: each round runs every value once, every other round backwards",
        "duration": s.duration,
        "warmup": s.warmup, "server_env": {k: v for k, v in s.server_env.items() if k != sweep.param.env_var},
        "server_cpus": s.server_cpus, "load_cpus": s.load_cpus, "locust_workers": s.locust_workers,
        "command": reproduce(sweep), "argv": sys.argv, "started_at": time.time(), "finished_at": None,
        "status": "running", "problems": [], "connections": None, "points": [], "recommendations": {},
    }


def print_plan(sweep: Sweep, with_calibration: bool) -> float:
    per = [plan.total_seconds(sweep.run_settings(v, r), False) for r, v in sweep.schedule()]
    total = sum(per) + (calibrate.estimated_seconds() if with_calibration else 0)
    sc = sweep.base.scenario(sweep.scenario)
    values = ", ".join(fmt_value(v) for v in sweep.values)
    say(f"tune plan: {sweep.param.name} ({sweep.param.env_var}) = {values} "
        f"on {', '.join(sweep.servers)}, scenario {sweep.scenario} ({sc.users} users, {sc.shape}), "
        f"{sweep.rounds} x {sweep.base.duration:g} s per value after {sweep.base.warmup:g} s warm-up, "
        f"SLO p99 {sweep.slo_p99_ms:g} ms")
    say(f"  {len(per)} runs ({sweep.rounds} round(s) over {len(sweep.values)} values, round-robin) x "
        f"{len(sweep.servers)} server(s), ~{load_settings.fmt_seconds(per[0])} per run; planned total "
        f"~{load_settings.fmt_seconds(total)}"
        + ("; calibration first" if with_calibration else ""))
    say(f"  into {sweep.tune_dir}/")
    return total


def point_line(sweep: Sweep, figures: dict[str, Any]) -> str:
    parts = []
    for s in sweep.servers:
        f = figures.get(s) or {}
        spread = "" if f.get("spread") is None else f" ±{f['spread']:.1%}"
        parts.append(f"{s} {fmt_rps(f.get('ok_rps'))} ok rps{spread}, p50 {fmt_ms(f.get('p50_ms'))} ms, "
                     f"p99 {fmt_ms(f.get('p99_ms'))} ms, failed {fmt_pct(f.get('failure_rate'))}, db peak "
                     f"{_num(f.get('db_connections_peak'))}")
    return "; ".join(parts)


def print_outcome(doc: dict[str, Any]) -> None:
    for s in doc["servers"]:
        say(f"\n{s}: {doc['param']} on {doc['scenario']}")
        for row in report.md_table(TABLE_HEADER[:-1], [r[:-1] for r in table_rows(doc, s)]):
            say("  " + row)
        r = (doc.get("recommendations") or {}).get(s) or {}
        say(f"  => {r.get('sentence', 'no points')}")
        if r.get("connections"):
            say(f"     {r['connections']}")
        for note in r.get("notes") or []:
            say(f"     note: {note}")
    note = load_note(doc)
    if note:
        say(f"\nnote: {note}")


def run(sweep: Sweep) -> int:
    base = sweep.base
    base.reports_dir.mkdir(parents=True, exist_ok=True)
    if sweep.tune_dir.exists():
        raise TuneError(f"{sweep.tune_dir} exists already; choose another TUNE_ID or leave it empty")
    url = base.database_url or database.provision()
    sweep.base = base = base.replace(database_url=url)
    try:
        budget = read_budget(url)
    except psycopg2.Error as exc:
        raise TuneError(f"cannot read max_connections from PostgreSQL: {str(exc).strip()}") from None
    refusal = check_connections(sweep, budget)
    if refusal and not sweep.force:
        raise TuneError("\n".join(refusal))
    if refusal:
        say("warning (--force): " + " ".join(refusal[:1]))
    need_cal = base.calibrate == "force" or (base.calibrate == "auto" and calibrate.load_fresh(
        base.load_cpus, base.server_cpus, base.locust_workers) is None)
    planned = print_plan(sweep, need_cal)
    sweep.tune_dir.mkdir(parents=True)
    doc = new_doc(sweep)
    totals = connection_totals(sweep, budget)
    doc["connections"] = {
        "budget": dataclasses.asdict(budget), "limit": budget.limit,
        "per_value": [{"value": t.value, "total": t.total, "fits": t.fits,
                       "demands": [dataclasses.asdict(d) for d in t.demands]} for t in totals],
        "lines": [t.describe(sweep.param.name) for t in totals],
    }
    runner.write_json(sweep.tune_dir / "tune.json", doc)
    began = time.monotonic()
    exit_status = 0
    points: dict[float, dict[str, Any]] = {v: {"value": v, "runs": [], "figures": {}} for v in sweep.values}
    doc["points"] = list(points.values())
    runs = sweep.schedule()
    try:
        for i, (rnd, value) in enumerate(runs, 1):
            s = sweep.run_settings(value, rnd)
            left = max(0.0, planned - (time.monotonic() - began))
            tag = f"[tune {i}/{len(runs)}] round {rnd}/{sweep.rounds} {sweep.param.name}={fmt_value(value)}"
            say(f"\n{tag} ({sweep.param.env_var}={sweep.env_text(value)}) on {', '.join(sweep.servers)} / "
                f"{sweep.scenario}: tune {load_settings.fmt_seconds(time.monotonic() - began)} elapsed, "
                f"~{load_settings.fmt_seconds(left)} left")
            load = os.getloadavg()[0]
            code = runner.run(s, link_latest=False)
            rec = points[value]
            rec["runs"].append({"dir": s.run_id, "round": rnd, "exit_status": code,
                                "loadavg": round(load, 2)})
            read_point(sweep.tune_dir, rec, sweep.servers, sweep.scenario, sweep.param)
            if code == 130:
                raise KeyboardInterrupt
            if code != 0:
                doc["problems"].append(f"{sweep.param.name}={fmt_value(value)} round {rnd}: the run exited "
                                       f"with {code}; see {s.run_id}/results.json")
                exit_status = 1
            data, _error = read_run(sweep.tune_dir / s.run_id)
            this = {srv: point_figures(value, _entry(data, srv, sweep.scenario), sweep.param)
                    for srv in sweep.servers}
            say(f"{tag}: {point_line(sweep, this)}")
            runner.write_json(sweep.tune_dir / "tune.json", doc)
        doc["status"] = "complete" if exit_status == 0 else "problems"
    except KeyboardInterrupt:
        doc["status"] = "interrupted"
        doc["problems"].append("interrupted: the report covers the points measured so far")
        say("interrupted: the tune report covers the points measured so far")
        exit_status = 130
    finally:
        doc["finished_at"] = time.time()
        doc["wall_seconds"] = round(doc["finished_at"] - doc["started_at"], 1)
        html_path, md_path = write_reports(doc, sweep.tune_dir)
    print_outcome(doc)
    say(f"\ntune wall time {load_settings.fmt_seconds(doc['wall_seconds'])} "
        f"(planned ~{load_settings.fmt_seconds(planned)})")
    dirs = [r["dir"] for p in doc["points"] for r in p["runs"]]
    say(f"wrote {html_path}\nwrote {md_path}\nruns: {', '.join(dirs)} under {sweep.tune_dir}")
    return exit_status


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.report:
            return rebuild(args.report, args.slo_p99_ms)
        sweep = sweep_from(args)
        if args.plan:
            base = sweep.base
            print_plan(sweep, base.calibrate == "force" or (base.calibrate == "auto" and calibrate.load_fresh(
                base.load_cpus, base.server_cpus, base.locust_workers) is None))
            try:
                refusal = check_connections(sweep, read_budget(base.database_url or database.database_url()))
            except psycopg2.Error as exc:
                say(f"PostgreSQL not reachable ({str(exc).strip()}): database connections not checked")
                return 0
            if refusal:
                say("\n".join(refusal))
            return 0
        signal.signal(signal.SIGTERM, _sigterm)
        return run(sweep)
    except (TuneError, database.PostgresError, calibrate.CalibrationError) as exc:
        print(f"lab.tune.sweep: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
