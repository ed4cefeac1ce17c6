"""Running a sweep: check the connection budget, run each (round, value), keep tune.json and its pages."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2

from lab import files
from lab.fmt import fmt_ms, fmt_pct, fmt_rps, fmt_seconds, fmt_value
from lab.load import calibrate, plan, runner
from lab.load import settings as load_settings
from lab.report import markup
from lab.results.records import read_json
from lab.stack import database
from lab.tune import budget as budgets
from lab.tune import pages
from lab.tune.plan import PARAMS, Sweep, TuneError, reproduce, slo_ms
from lab.tune.points import decide, entry_of, point_figures, read_point, read_run
from loadtests import catalogue

SCHEMA = "serverlab-tune"
SCHEMA_VERSION = 1


def say(message: str) -> None:
    print(message, flush=True)


def write_reports(doc: dict[str, Any], tune_dir: Path) -> tuple[Path, Path]:
    decide(doc)
    files.write_json(tune_dir / "tune.json", doc, default=str)
    html_path, md_path = tune_dir / "tune.html", tune_dir / "tune.md"
    files.write_text(html_path, pages.render_html(doc, tune_dir))
    files.write_text(md_path, pages.render_md(doc))
    return html_path, md_path


def rebuild(tune_arg: str, slo: str, margin: float | None = None) -> int:
    tune_dir = Path(tune_arg)
    if not tune_dir.is_dir():
        tune_dir = Path(os.environ.get("LAB_REPORTS_DIR") or load_settings.REPO / "reports") / tune_arg
    doc = read_json(tune_dir / "tune.json") if tune_dir.is_dir() else None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise TuneError(f"{tune_arg} is not a tune folder (no tune.json); pass reports/<tune-id>")
    if slo.strip():
        doc["slo_p99_ms"] = slo_ms(slo)
    if margin is not None:
        doc["margin_within"] = margin
    param = PARAMS[doc["param"]]
    for rec in doc["points"]:
        read_point(tune_dir, rec, doc["servers"], doc["scenario"], param)
    html_path, md_path = write_reports(doc, tune_dir)
    print_outcome(doc)
    say(f"wrote {html_path}\nwrote {md_path}")
    return 0


def new_doc(sweep: Sweep) -> dict[str, Any]:
    s = sweep.base
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "id": sweep.tune_id, "param": sweep.param.name,
        "env_var": sweep.param.env_var, "meaning": sweep.param.meaning, "values": sweep.values,
        "servers": sweep.servers, "scenario": sweep.scenario, "slo_p99_ms": sweep.slo_p99_ms,
        "users": s.users or catalogue.scenario(sweep.scenario).users, "reps": sweep.rounds,
        "order": "round-robin: each round runs every value once, every other round backwards",
        "duration": s.duration, "margin_within": s.margin_within,
        "warmup": s.warmup, "server_env": {k: v for k, v in s.server_env.items() if k != sweep.param.env_var},
        "server_cpus": s.server_cpus, "load_cpus": s.load_cpus, "locust_workers": s.locust_workers,
        "command": reproduce(sweep), "argv": sys.argv, "started_at": time.time(), "finished_at": None,
        "status": "running", "problems": [], "connections": None, "points": [], "recommendations": {},
    }


def needs_calibration(sweep: Sweep) -> bool:
    return calibrate.needed(sweep.base)


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
        f"{len(sweep.servers)} server(s), ~{fmt_seconds(per[0])} per run; planned total "
        f"~{fmt_seconds(total)}"
        + ("; calibration first" if with_calibration else ""))
    say(f"  into {sweep.tune_dir}/")
    return total


def point_line(sweep: Sweep, figures: dict[str, Any]) -> str:
    parts = []
    for s in sweep.servers:
        f = figures.get(s) or {}
        spread = "" if f.get("spread") is None else f" ±{f['spread']:.1%}"
        parts.append(f"{s} {fmt_rps(f.get('ok_rps'))} ok rps{spread}, p50 {fmt_ms(f.get('p50_ms'))}, "
                     f"p99 {fmt_ms(f.get('p99_ms'))}, failed {fmt_pct(f.get('failure_rate'))}, db peak "
                     f"{pages.whole(f.get('db_connections_peak'))}")
    return "; ".join(parts)


def print_outcome(doc: dict[str, Any]) -> None:
    for s in doc["servers"]:
        say(f"\n{s}: {doc['param']} on {doc['scenario']}")
        for row in markup.md_table(pages.TABLE_HEADER[:-1], [r[:-1] for r in pages.table_rows(doc, s)]):
            say("  " + row)
        r = (doc.get("recommendations") or {}).get(s) or {}
        say(f"  => {r.get('sentence', 'no points')}")
        if r.get("connections"):
            say(f"     {r['connections']}")
        for note in r.get("notes") or []:
            say(f"     note: {note}")
    note = pages.load_note(doc)
    if note:
        say(f"\nnote: {note}")


def run(sweep: Sweep) -> int:
    base = sweep.base
    base.reports_dir.mkdir(parents=True, exist_ok=True)
    if sweep.tune_dir.exists():
        raise TuneError(f"{sweep.tune_dir} exists already; choose another TUNE_ID or leave it empty")
    url = base.database_url or database.provision()
    sweep.base = base = dataclasses.replace(base, database_url=url)
    try:
        budget = budgets.read_budget(url)
    except psycopg2.Error as exc:
        raise TuneError(f"cannot read max_connections from PostgreSQL: {str(exc).strip()}") from None
    shown, refusal = budgets.check_connections(sweep, budget)
    say("\n".join(shown))
    if refusal and not sweep.force:
        raise TuneError("\n".join(refusal))
    if refusal:
        say("warning (--force): " + " ".join(refusal[:1]))
    planned = print_plan(sweep, needs_calibration(sweep))
    sweep.tune_dir.mkdir(parents=True)
    doc = new_doc(sweep)
    totals = budgets.connection_totals(sweep, budget)
    doc["connections"] = {
        "budget": dataclasses.asdict(budget), "limit": budget.limit,
        "per_value": [{"value": t.value, "total": t.total, "fits": t.fits,
                       "demands": [dataclasses.asdict(d) for d in t.demands]} for t in totals],
        "lines": [t.describe(sweep.param.name) for t in totals],
    }
    files.write_json(sweep.tune_dir / "tune.json", doc, default=str)
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
                f"{sweep.scenario}: tune {fmt_seconds(time.monotonic() - began)} elapsed, "
                f"~{fmt_seconds(left)} left")
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
            this = {srv: point_figures(value, entry_of(data, srv, sweep.scenario), sweep.param)
                    for srv in sweep.servers}
            say(f"{tag}: {point_line(sweep, this)}")
            files.write_json(sweep.tune_dir / "tune.json", doc, default=str)
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
    say(f"\ntune wall time {fmt_seconds(doc['wall_seconds'])} "
        f"(planned ~{fmt_seconds(planned)})")
    dirs = [r["dir"] for p in doc["points"] for r in p["runs"]]
    say(f"wrote {html_path}\nwrote {md_path}\nruns: {', '.join(dirs)} under {sweep.tune_dir}")
    return exit_status
