"""A sweep's points: each value's runs read and combined into one figure set per server, and decided on."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

from lab.fmt import fmt_value
from lab.results import build as results
from lab.results import stats
from lab.results.records import ResultsError, latency_ms, merge
from lab.results.schema import Entry, Latency, Rates, Results
from lab.tune import budget, recommend
from lab.tune.plan import Param
from lab.tune.recommend import Point, Recommendation


def entry_of(data: Results, server: str, scenario: str) -> Entry | None:
    """A copy of the results entry of this server x scenario, if the run has one."""
    for e in data.get("results") or []:
        if e.get("server") == server and e.get("scenario") == scenario:
            return e.copy()
    return None


def point_figures(value: float, entry: Entry | None, param: Param) -> dict[str, Any]:
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
    data["values"] = tuple(data.get("values") or ())
    return Point(**data)


def read_run(run_dir: Path) -> tuple[Results, str | None]:
    """A run folder's results.json (rebuilt from its raw files if missing), or {} and why not."""
    out = run_dir / "results.json"
    try:
        if not out.exists() and (run_dir / "settings.json").exists():
            results.write(run_dir)
        data = json.loads(out.read_text(encoding="utf-8"))
    except (ResultsError, OSError, ValueError) as exc:
        return {}, f"cannot read {out}: {exc}"
    return (cast(Results, data), None) if isinstance(data, dict) else ({}, f"{out} is not a results file")


def _median_spread(values: Sequence[float]) -> Rates:
    if not values:
        return {"median": None, "spread": None, "values": []}
    med = statistics.median(values)
    return {"median": round(med, 1), "spread": round((max(values) - min(values)) / med, 4) if med else None,
            "values": list(values)}


def combine(entries: Sequence[Entry]) -> Entry | None:
    """One results-like entry from the same server x scenario x value over several runs (rounds):
    medians and spread of the runs' rates, latency from their HDR histograms merged, totals summed,
    peaks maxed; the shape of a results.json entry, so recommend.point_from_entry reads it."""
    if not entries:
        return None
    if len(entries) == 1:
        return entries[0]

    def rate(key: Literal["rps", "ok_rps"]) -> Rates:
        """Over every repetition of every round (the rule tests repetitions), a run's median where its
        repetitions' values are not recorded."""
        found: list[Any] = []
        for e in entries:
            rates = e.get(key) or {}
            found += rates.get("values") or [rates.get("median")]
        return _median_spread([float(v) for v in found if isinstance(v, int | float)])

    def peak(*path: str) -> Any:
        vals = [v for e in entries if isinstance(v := _dig(e, path), int | float)]
        return max(vals) if vals else None

    hist = merge(h for e in entries if (h := e.get("latency_hdr")))
    requests = sum(int(e.get("requests") or 0) for e in entries)
    failures = sum(int(e.get("failures") or 0) for e in entries)
    kinds: dict[str, int] = {}
    for e in entries:
        for k, n in (e.get("failures_by_kind") or {}).items():
            kinds[k] = kinds.get(k, 0) + int(n)
    cpu = [v for e in entries if isinstance(v := _dig(e, ("cpu_percent", "mean")), int | float)]
    problems = [f"round {i}: {p}" for i, e in enumerate(entries, 1) for p in e.get("problems") or []]
    first = entries[0]
    combined: Entry = {
        "server": first.get("server", ""), "scenario": first.get("scenario", ""),
        "users": first.get("users", 0), "server_config": first.get("server_config"),
        "reps": sum(int(e.get("reps") or 0) for e in entries),
        "status": "ok" if all(e.get("status") == "ok" for e in entries) else "problem", "problems": problems,
        "rps": rate("rps"), "ok_rps": rate("ok_rps"),
        "latency_ms": cast("Latency | None", latency_ms(hist)),
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
    return combined


def _dig(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def read_point(tune_dir: Path, rec: dict[str, Any], servers: Sequence[str], scenario: str,
               param: Param) -> dict[str, Any]:
    """A point's figures per server, combined over its runs (one per round)."""
    per_server: dict[str, list[Entry]] = {s: [] for s in servers}
    errors = []
    for run in rec["runs"]:
        data, error = read_run(tune_dir / run["dir"])
        if error:
            errors.append(error)
        for s in servers:
            entry = entry_of(data, s, scenario)
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
    margin = doc.get("margin_within")
    margin = float(margin) if isinstance(margin, int | float) else stats.margin(stats.WITHIN)
    recs = {s: recommend.recommend(pts, doc["slo_p99_ms"], doc["param"], margin)
            for s, pts in curves(doc).items()}
    budget_doc = (doc.get("connections") or {}).get("budget")
    doc["recommendations"] = {}
    for s, r in recs.items():
        item = r.as_dict()
        if r.value is not None and budget_doc:
            per = next((d for d in doc["connections"]["per_value"] if d["value"] == r.value), None)
            if per is not None:
                limits = budget.Budget(**budget_doc)
                mine = [budget.Demand(**d) for d in per["demands"] if d["server"] == s]
                if mine:
                    total = budget.connection_total(r.value, mine, limits)
                    item["connections"] = total.describe(doc["param"])
        doc["recommendations"][s] = item
    return recs
