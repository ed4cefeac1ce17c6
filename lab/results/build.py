"""Build results.json from a run's raw files alone: `python -m lab results reports/<run-id>`.

Reads what lab/load/runner.py stored (settings.json, machine.json, calibration.json, status.json and per
server x scenario: scenario.json and rep-<n>/{run.json, samples.jsonl, records/}) and writes
results.json as documented in lab/results/schema.md. Nothing here talks to a server, Locust or the
database, so a report can be rebuilt, or rebuilt differently, long after the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from lab import files
from lab.load import sampler
from lab.results import drift, matrix, stats
from lab.results.generator import generator_cpu, generator_verdict, worker_heartbeats, worker_reasons
from lab.results.openmodel import capacity, merge_steps, open_steps
from lab.results.records import ResultsError, encode, latency_ms, load_records, merge, read_json
from lab.results.resources import cost, resource_timeline, resources

SCHEMA = "serverlab-results"
SCHEMA_VERSION = 1
# With the budget lifted a server answers at least what it did under it; one capped by its pool or a
# wait (hold: 10 connections x 50/s) answers the same, give or take a per cent (478-489/s beside
# 480-490/s in the quiet A/A pair of 2026-12-07 22:01 UTC). A full-core phase short by more than this
# share means the generator did not keep up.
FULL_CORE_SHORTFALL = 0.05


# --- one repetition -----------------------------------------------------------------------------


def starved(full_core_rps: float, budget_rps: float) -> bool:
    """Did the full-core phase answer fewer requests/s than the budgeted window, past FULL_CORE_SHORTFALL?"""
    return full_core_rps < budget_rps * (1 - FULL_CORE_SHORTFALL)


def _overlap(second: int, start: float, end: float) -> float:
    return max(0.0, min(second + 1, end) - max(second, start))


def _costs(samples: list[dict[str, Any]], start: float, end: float, ok: int, shape: dict[str, Any],
           run: dict[str, Any], records: list[dict[str, Any]], rep_dir: Path) -> dict[str, Any]:
    """A repetition's `cost` (CPU per request) and the speed probe's reading over the same window.
    With a full-core phase (lab/load/full_core.py) the cost is that phase's, split from the budgeted
    window at the runner's exact reading of the group's counter, and `cost_budget` the budgeted one's."""
    window = shape.get("full_core") or {}
    mark = (run.get("full_core") or {}).get("mark") or {}
    if not (window.get("end") and mark.get("lifted_at") and mark.get("cgroup_cpu_seconds") is not None):
        return {"cost": {**cost(samples, start, end, ok), "phase": "budget" if run.get("cpu_budget") else
                         "unbudgeted"}, "cost_budget": None, "full_core": None,
                "speed": drift.rep_speed(rep_dir, start, end)}
    at, full_end = float(mark["lifted_at"]), float(window["end"])
    marked = sorted([*samples, {"t": at, "cgroup_cpu_seconds": mark["cgroup_cpu_seconds"]}],
                    key=lambda x: float(x["t"]))
    n = sum((r.get("full") or {}).get("requests", 0) for r in records)
    fails = sum((r.get("full") or {}).get("failures", 0) for r in records)
    seconds = max(0.0, full_end - at)
    return {"cost": {**cost(marked, at, full_end, n - fails), "phase": "full-core"},
            "cost_budget": {**cost(marked, start, at, ok), "phase": "budget"},
            "full_core": {"start": at, "end": full_end, "seconds": round(seconds, 3), "requests": n,
                          "failures": fails, "rps": round(n / seconds, 1) if seconds else None,
                          "late_ms": mark.get("late_ms")},
            "speed": drift.rep_speed(rep_dir, at, full_end)}


def build_rep(rep_dir: Path, meta: dict[str, Any], calibration: dict[str, Any] | None) -> dict[str, Any]:
    run = read_json(rep_dir / "run.json") or {}
    rec_dir = rep_dir / "records"
    records = load_records(rec_dir)
    shape = read_json(rec_dir / "shape.json") or {}
    problems: list[str] = list(run.get("problems") or [])
    if run.get("status") not in (None, "ok"):
        problems.append(f"run status {run.get('status')}: {run.get('error') or 'see run.json'}")
    if not records and not problems:
        problems.append(f"no latency records in {rec_dir} (Locust wrote none)")
    start = shape.get("measure_start") or min((r["measure_start"] or 0 for r in records), default=0.0)
    end = shape.get("measure_end") or max((r["measure_end"] or 0 for r in records), default=0.0)
    window = max(0.0, end - start)
    if shape and not shape.get("spawn_complete", True):
        problems.append("not every user was spawned before the measured phase began")

    requests = sum(r["requests"] for r in records)
    failures = sum(r["failures"] for r in records)
    kinds: dict[str, int] = {}
    by_name: dict[str, dict[str, int]] = {}
    for r in records:
        for kind, n in r["failures_by_kind"].items():
            kinds[kind] = kinds.get(kind, 0) + n
        for name, c in r["by_name"].items():
            slot = by_name.setdefault(name, {"requests": 0, "failures": 0})
            slot["requests"] += c["requests"]
            slot["failures"] += c["failures"]
    ok_h = merge(r["latency_ok_us"] for r in records)
    failed_h = merge(r["latency_failed_us"] for r in records)

    # Per-second timeline, merged over processes by epoch second.
    seconds: dict[int, list[Any]] = {}
    for rec in records:
        for sec, n, fails, blob in rec["timeline"]:
            acc = seconds.setdefault(sec, [0, 0, []])
            acc[0] += n
            acc[1] += fails
            acc[2].append(blob)
    timeline: dict[str, list[Any]] = {"t": [], "rps": [], "failures_per_s": [], "p50_ms": [], "p99_ms": [],
                                      "max_ms": []}
    merged_seconds: dict[int, HdrHistogram] = {}
    for sec in sorted(seconds):
        n, fails, blobs = seconds[sec]
        cover = _overlap(sec, start, end) if window else 1.0
        if cover < 0.2:  # a sliver of a second at the edges says nothing about a rate
            continue
        h = merge(blobs, digits=2)
        merged_seconds[sec] = h
        lat = latency_ms(h)
        timeline["t"].append(round(sec - start, 3))
        timeline["rps"].append(round(n / cover, 1))
        timeline["failures_per_s"].append(round(fails / cover, 1))
        timeline["p50_ms"].append(lat["p50"] if lat else None)
        timeline["p99_ms"].append(lat["p99"] if lat else None)
        timeline["max_ms"].append(lat["max"] if lat else None)

    open_model = any(r.get("open_model") for r in records)
    slo = float(meta.get("slo_p99_ms") or 100.0)
    steps = open_steps(shape, merge_steps(records), start, run, calibration, slo) if open_model else []
    stages = []
    for i, st in enumerate([] if open_model else shape.get("stages") or []):
        lo, hi = start + st["start"], start + st["end"]
        secs = [s for s in seconds if lo <= s + 0.5 < hi]
        cover = sum(_overlap(s, max(lo, start), min(hi, end)) for s in secs)
        n = sum(seconds[s][0] for s in secs)
        fails = sum(seconds[s][1] for s in secs)
        lat = latency_ms(merge((b for s in secs for b in seconds[s][2]), digits=2))
        stages.append({"index": i, "users": st["users"], "start_s": st["start"], "end_s": st["end"],
                       "rps": round(n / cover, 1) if cover else None,
                       "ok_rps": round((n - fails) / cover, 1) if cover else None,
                       "failures": fails, "p50_ms": lat["p50"] if lat else None,
                       "p99_ms": lat["p99"] if lat else None})

    samples_path = rep_dir / "samples.jsonl"
    samples: list[dict[str, Any]] = []
    sampler_footer = None
    if samples_path.exists():
        try:
            _header, samples, sampler_footer = sampler.read_samples(samples_path)
        except ValueError as exc:
            problems.append(str(exc))
    else:
        problems.append(f"no samples: {samples_path} is missing")
    idle = run.get("rss_idle_bytes") or meta.get("rss_idle_bytes")  # this repetition's process, if fresh
    res = resources(samples, start, end, idle)
    if samples and records and window and not res["samples"]:
        problems.append("the sampler recorded no sample inside the measured window")
    gen = generator_cpu(run, start, end)
    gen["workers"] = workers = worker_heartbeats(rep_dir / "records", start, end)
    rps = round(requests / window, 1) if window else None
    cap = capacity(steps, slo, (calibration or {}).get("open_sustainable_rps"),
                   shape.get("extension")) if open_model else None
    if open_model:  # the ceiling is a closed-loop figure; the steps say whether the rate was kept
        bound = bool(cap and cap["limited_by"] == "generator")
        reasons = [cap["note"]] if bound and cap else []
        ceiling = (calibration or {}).get("ceiling_rps")
    else:
        bound, reasons, ceiling = generator_verdict(gen["cpu_percent_mean"], rps, calibration)
        reasons += worker_reasons(workers)
        bound = bound or bool(reasons)

    warnings = []
    remote = (run.get("locust") or {}).get("remote_workers") or 0
    if remote and not any(w["heartbeats"] for w in workers):
        warnings.append(f"{remote} Locust workers ran on other machines: their CPU was not measured, so "
                        "only the calibrated ceiling can flag a generator-bound result")
    costs = _costs(samples, start, end, requests - failures, shape, run, records, rep_dir)
    full = costs["full_core"]
    if full and rps and starved(full["rps"] or 0, rps):
        warnings.append(f"the full-core phase answered {full['rps'] or 0:,.0f} requests/s, fewer than the "
                        f"budgeted window's {rps:,.0f}: the load generator was starved (a busy machine?), so "
                        "this repetition's CPU per request is at a lower load than the others'")
    acks = sum(r.get("acks", 0) for r in records)
    writes = run.get("writes")
    if meta.get("writes") and writes is None:
        problems.append("writes were not checked against the database")
    elif writes is not None and not writes.get("ok"):
        problems.append(f"writes check failed: {writes.get('message')}")

    return {
        "rep": run.get("rep") or int(rep_dir.name.split("-")[-1]),
        "status": "ok" if not problems else "problem",
        "problems": problems,
        "warnings": warnings,
        "window": {"start": start, "end": end, "seconds": round(window, 3)},
        "requests": requests,
        "failures": failures,
        "failure_rate": round(failures / requests, 6) if requests else None,
        "failures_by_kind": dict(sorted(kinds.items())),
        "by_name": by_name,
        "rps": rps,
        "ok_rps": round((requests - failures) / window, 1) if window else None,
        "warmup_requests": sum(r["warmup"]["requests"] for r in records),
        "tail_requests": sum(r.get("tail", {}).get("requests", 0) for r in records),
        "latency_ms": latency_ms(ok_h),
        "latency_failed_ms": latency_ms(failed_h),
        **costs,
        "open_model": {
            "offered": sum(r.get("offered", 0) for r in records),
            "late": sum(r.get("late", 0) for r in records),
            "dropped": sum(r.get("dropped", 0) for r in records),
            "late_ms": max((r.get("late_ms") or 0 for r in records), default=None),
            "latency_uncorrected_ms": latency_ms(merge(r["latency_ok_uncorrected_us"] for r in records
                                                       if r.get("latency_ok_uncorrected_us"))),
            "steps": steps,
        } if open_model else None,
        "capacity": cap,
        "cpu_budget": run.get("cpu_budget"),
        "locust_processes": len(records),
        "resources": res,
        "generator": {**gen, "bound": bound, "reasons": reasons, "ceiling_rps": ceiling,
                      "share_of_ceiling": round(rps / ceiling, 3) if ceiling and rps else None},
        "acks_recorded": acks,
        "writes": writes,
        "stages": stages,
        "timeline": timeline,
        "resource_timeline": resource_timeline(samples, start, end),
        "sampler": sampler_footer,
        "locust_exit_code": (run.get("locust") or {}).get("exit_code"),
        "_ok_hist": ok_h,  # merged across repetitions by build_entry, then dropped
    }


# --- one server x scenario -------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "spread": None, "values": []}
    med = statistics.median(values)
    return {"median": round(med, 1), "min": min(values), "max": max(values),
            "spread": round((max(values) - min(values)) / med, 4) if med else None, "values": list(values)}


def _cpu_sources(reps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """CPU per request by each source the repetitions had, and how far /metrics is from the cgroup's
    exact counter (median over repetitions of metrics / cgroup - 1; None without both)."""
    by: dict[str, list[float]] = {}
    ratios = []
    for r in reps:
        found = r["cost"].get("cpu_us_per_request_by_source") or {}
        for source, value in found.items():
            by.setdefault(source, []).append(value)
        if found.get("metrics") is not None and found.get("cgroup"):
            ratios.append(found["metrics"] / found["cgroup"] - 1)
    return {"cpu_us_per_request_by_source": {k: spread(v) for k, v in sorted(by.items())},
            "metrics_vs_cgroup": round(statistics.median(ratios), 4) if ratios else None}


def _max_of(reps: Sequence[dict[str, Any]], key: str) -> Any:
    vals = [r["resources"][key] for r in reps if r["resources"].get(key) is not None]
    return max(vals) if vals else None


def _mean_of(reps: Sequence[dict[str, Any]], key: str) -> Any:
    vals = [r["resources"][key] for r in reps if r["resources"].get(key) is not None]
    if not vals:
        return None
    mean = statistics.fmean(vals)
    return round(mean) if key.endswith("_bytes") else round(mean, 2)


def build_entry(scen_dir: Path, calibration: dict[str, Any] | None) -> dict[str, Any]:
    meta = read_json(scen_dir / "scenario.json")
    if not isinstance(meta, dict):
        raise ResultsError(f"{scen_dir / 'scenario.json'} is missing")
    rep_dirs = sorted((p for p in scen_dir.glob("rep-*") if p.is_dir()), key=lambda p: int(p.name[4:]))
    reps = [build_rep(d, meta, calibration) for d in rep_dirs]
    problems = list(meta.get("problems") or [])
    for r in reps:
        problems += [f"rep {r['rep']}: {p}" for p in r["problems"]]
    error = meta.get("error") or "see scenario.json"
    if meta.get("status") not in (None, "ok") and not any(error in p for p in problems):
        problems.append(f"{meta.get('status')}: {error}")
    if not reps and not problems:
        problems.append("no repetition ran")

    all_ok = merge(())
    for r in reps:
        all_ok.add(r.pop("_ok_hist"))
    requests = sum(r["requests"] for r in reps)
    failures = sum(r["failures"] for r in reps)
    kinds: dict[str, int] = {}
    for r in reps:
        for k, n in r["failures_by_kind"].items():
            kinds[k] = kinds.get(k, 0) + n
    rps = spread([r["rps"] for r in reps if r["rps"] is not None])
    ok_rps = spread([r["ok_rps"] for r in reps if r["ok_rps"] is not None])
    cpu_per = spread([c for r in reps if (c := r["cost"]["cpu_us_per_request"]) is not None])
    cpu_budgeted = spread([c for r in reps if (c := (r["cost_budget"] or {}).get("cpu_us_per_request"))])
    caps = [r["capacity"] for r in reps if r["capacity"]]
    gen_cpu = [g for r in reps if (g := r["generator"]["cpu_percent_mean"]) is not None]
    gen_peak = [g for r in reps if (g := r["generator"]["cpu_percent_peak"]) is not None]
    reasons: list[str] = []
    if meta.get("open_model"):
        bound, ceiling = False, (calibration or {}).get("ceiling_rps")
    else:
        bound, reasons, ceiling = generator_verdict(max(gen_cpu) if gen_cpu else None, rps["median"],
                                                    calibration)
    # A closed-loop repetition that was bound makes the figure suspect too; a capacity the generator
    # stopped is a lower bound instead, judged as such (lab/results/bounds.py).
    for r in [] if meta.get("open_model") else reps:
        if r["generator"]["bound"] and not bound:
            bound, reasons = True, [f"rep {r['rep']}: {x}" for x in r["generator"]["reasons"]]
    saturation = None
    if meta.get("shape") == "ramp":
        stages = [s for r in reps for s in r["stages"] if s["ok_rps"] is not None]
        if stages:
            best = max(stages, key=lambda s: s["ok_rps"])
            saturation = {"users": best["users"], "ok_rps": best["ok_rps"], "p99_ms": best["p99_ms"]}
    writes = [r["writes"] for r in reps if r["writes"] is not None]
    warnings: list[str] = sorted({w for r in reps for w in r["warnings"]})
    warnings += [f"rep {a['rep']} missed the SLO at every step from {a['first_step']:g}/s and ran again with "
                 f"lower steps (the first attempt: {a['set_aside']})" for a in meta.get("again") or []]
    other = int(meta.get("db_sessions_before_start") or 0)
    db_peak, db_mean = _max_of(reps, "db_connections_peak"), _mean_of(reps, "db_connections_mean")
    if other:
        warnings.append(f"{other} database sessions of another serverlab-{meta['server']} were open before "
                        "this server started; they are subtracted from the database connection counts")
        db_peak = max(0, db_peak - other) if db_peak is not None else None
        db_mean = max(0.0, round(db_mean - other, 2)) if db_mean is not None else None
    return {
        "server": meta["server"],
        "scenario": meta["scenario"],
        "description": meta.get("description"),
        "shape": meta.get("shape"),
        "users": meta.get("users"),
        "spawn_rate": meta.get("spawn_rate"),
        "duration_s": meta.get("duration"),
        "full_core_s": meta.get("full_core_seconds") or None,
        "warmup_s": meta.get("warmup"),
        "uses_db": meta.get("uses_db"),
        "server_config": meta.get("server_config"),
        "status": "ok" if not problems else "problem",
        "problems": problems,
        "warnings": warnings,
        "reps": len(reps),
        "rounds": meta.get("rounds"),
        "rps": rps,
        "ok_rps": ok_rps,
        "requests": requests,
        "failures": failures,
        "failure_rate": round(failures / requests, 6) if requests else None,
        "failures_by_kind": dict(sorted(kinds.items())),
        "latency_ms": latency_ms(all_ok),
        "latency_hdr": encode(all_ok) if all_ok.get_total_count() else None,
        "cost": {"cpu_us_per_request": cpu_per,
                 "cpu_phase": sorted({r["cost"]["phase"] for r in reps}) or None,
                 "cpu_us_per_request_budget": cpu_budgeted if cpu_budgeted["values"] else None,
                 "cpu_source": sorted({r["cost"]["cpu_source"] for r in reps}) or None,
                 **_cpu_sources(reps),
                 "cpu_budget": meta.get("cpu_budget")},
        "open_model": _open_summary(reps) if meta.get("open_model") else None,
        "capacity": _capacity_summary(caps) if caps else None,
        "memory": {
            "rss_peak_bytes": _max_of(reps, "rss_peak_bytes"),
            "rss_mean_bytes": _mean_of(reps, "rss_mean_bytes"),
            "rss_baseline_bytes": _mean_of(reps, "rss_baseline_bytes"),
            "rss_per_connection_bytes": _mean_of(reps, "rss_per_connection_bytes"),
            "uss_peak_bytes": _max_of(reps, "uss_peak_bytes"),
            "pss_peak_bytes": _max_of(reps, "pss_peak_bytes"),
        },
        "threads_peak": _max_of(reps, "threads_peak"),
        "processes_peak": _max_of(reps, "processes_peak"),
        "fds_peak": _max_of(reps, "fds_peak"),
        "client_connections_peak": _max_of(reps, "client_connections_peak"),
        "db_connections_peak": db_peak,
        "db_connections_mean": db_mean,
        "db_sessions_other": other,
        "pool": {
            "size": _max_of(reps, "pool_size"),
            "in_use_peak": _max_of(reps, "pool_in_use_peak"),
            "waiting_peak": _max_of(reps, "pool_waiting_peak"),
            "rejections": _max_of(reps, "rejections"),
        },
        "cpu_percent": {"mean": _mean_of(reps, "cpu_percent_mean"),
                        "peak": _max_of(reps, "cpu_percent_peak")},
        "generator": {
            "cpu_percent_mean": max(gen_cpu) if gen_cpu else None,
            "cpu_percent_peak": max(gen_peak) if gen_peak else None,
            "ceiling_rps": ceiling,
            "share_of_ceiling": round(rps["median"] / ceiling, 3) if ceiling and rps["median"] else None,
            "workers_cpu_percent_max": max((w["cpu_percent_mean"] for r in reps
                                            for w in r["generator"].get("workers") or []
                                            if w["cpu_percent_mean"] is not None), default=None),
        },
        "generator_bound": bound,
        "generator_bound_reason": "; ".join(reasons) if reasons else None,
        "saturation": saturation,
        "writes": _writes_summary(writes) if writes else None,
        "repetitions": reps,
    }


def _open_summary(reps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The repetitions' steps as one curve: per offered rate, the median of each figure."""
    by_rate: dict[float, list[dict[str, Any]]] = {}
    for r in reps:
        for st in (r.get("open_model") or {}).get("steps") or []:
            by_rate.setdefault(st["rate"], []).append(st)
    keys = ("achieved_rps", "ok_rps", "p50_ms", "p99_ms", "max_ms", "p50_uncorrected_ms",
            "p99_uncorrected_ms", "failure_share", "late_share", "start_lag_p99_ms", "generator_cpu_percent")
    steps = []
    for rate in sorted(by_rate):
        group = by_rate[rate]
        step: dict[str, Any] = {"rate": rate, "reps": len(group)}
        for key in keys:
            vals = [s[key] for s in group if s.get(key) is not None]
            step[key] = round(statistics.median(vals), 3) if vals else None
        for key in ("offered", "requests", "failures", "late", "dropped", "unanswered"):
            step[key] = sum(int(s.get(key) or 0) for s in group)
        step["generator_limited"] = any(s["generator_limited"] for s in group)
        step["servers_miss"] = any(s.get("servers_miss") for s in group)  # in some repetition
        step["meets_slo"] = all(s["meets_slo"] for s in group)
        steps.append(step)
    totals = {k: sum(int((r.get("open_model") or {}).get(k) or 0) for r in reps)
              for k in ("offered", "late", "dropped")}
    return {**totals, "steps": steps}


def _capacity_summary(caps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    values = [c["capacity_rps"] for c in caps if c["capacity_rps"] is not None]
    limited = sorted({c["limited_by"] for c in caps})
    return {"median": statistics.median(values) if values else None, "values": values,
            "lower_bounds": [c["limited_by"] != "server" for c in caps if c["capacity_rps"] is not None],
            "slo_p99_ms": caps[0]["slo_p99_ms"], "limited_by": limited,
            "knee_rates": [c["knee_rate"] for c in caps], "notes": [c["note"] for c in caps],
            "held_again_rates": [c.get("held_again_rate") for c in caps]}


def _writes_summary(checks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    keys = ("acknowledged", "rows", "missing", "unacknowledged_rows")
    out: dict[str, Any] = {k: sum(int(c.get(k) or 0) for c in checks) for k in keys}
    out["ok"] = all(c.get("ok") for c in checks)
    return out


# --- the run ----------------------------------------------------------------------------------------


def scenario_dirs(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in run_dir.glob("*/*/scenario.json"))


def build(run_dir: Path, margin_within: float | None = None) -> dict[str, Any]:
    """results.json's content from a run folder's raw files; `margin_within`: the verdicts' margin between
    servers (default: the run's own, settings.json's margin_within, else LAB_MARGIN_WITHIN)."""
    run_dir = Path(run_dir)
    settings = read_json(run_dir / "settings.json")
    if not isinstance(settings, dict):
        raise ResultsError(f"{run_dir} is not a run folder (no settings.json); pass reports/<run-id>")
    calibration = read_json(run_dir / "calibration.json")
    status = read_json(run_dir / "status.json") or {}
    entries = [build_entry(d, calibration) for d in scenario_dirs(run_dir)]
    order_s = {name: i for i, name in enumerate(settings.get("servers") or [])}
    order_c = {name: i for i, name in enumerate(settings.get("scenarios") or [])}
    entries.sort(key=lambda e: (order_c.get(e["scenario"], 99), order_s.get(e["server"], 99)))
    problems = list(status.get("problems") or [])
    problems += [f"{e['server']}/{e['scenario']}: {p}" for e in entries for p in e["problems"]]
    machine_speed = drift.run_speed(entries)
    drift.adjust(entries, (machine_speed or {}).get("work_per_cpu_ms"), spread)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": {
            "id": settings.get("run_id") or run_dir.name,
            "profile": settings.get("profile"),
            "started_at": status.get("started_at"),
            "finished_at": status.get("finished_at"),
            "wall_seconds": status.get("wall_seconds"),
            "planned_seconds": settings.get("planned_seconds"),
            "exit_status": status.get("exit_status"),
            "command": settings.get("command"),
            "settings": settings,
            "machine": read_json(run_dir / "machine.json"),
            "calibration": calibration,
            "speed": machine_speed,
        },
        "servers": settings.get("servers") or sorted({e["server"] for e in entries}),
        "scenarios": settings.get("scenarios") or sorted({e["scenario"] for e in entries}),
        "results": entries,
        "generator_bound": [f"{e['server']}/{e['scenario']}" for e in entries if e["generator_bound"]],
        "problems": problems,
        "ok": not problems,
        "verdicts": matrix.as_json(entries, _margin(settings, margin_within)),
    }


def _margin(settings: dict[str, Any], given: float | None) -> float:
    recorded = settings.get("margin_within")
    if given is not None:
        return given
    return float(recorded) if isinstance(recorded, int | float) else stats.margin(stats.WITHIN)


def write(run_dir: Path, margin_within: float | None = None) -> Path:
    data = build(run_dir, margin_within)
    out = Path(run_dir) / "results.json"
    files.write_json(out, data)
    return out


def summary_lines(data: dict[str, Any]) -> list[str]:
    """A compact table for the terminal."""
    lines = [f"{'server':<10} {'scenario':<14} {'rps':>8} {'spread':>7} {'p50':>8} {'p99':>8} {'p99.9':>8} "
             f"{'fail%':>6} {'rss MB':>7} {'conns':>6} {'db':>4} {'cpu%':>5} {'us/req':>7} {'gen%':>5}  note"]
    for e in data["results"]:
        lat = e["latency_ms"] or {}
        rss = e["memory"]["rss_peak_bytes"]

        def fmt(v: Any, spec: str) -> str:
            width = int(spec.split(".")[0] or 0)
            return format(v, spec) if isinstance(v, int | float) else "-".rjust(width)

        note = "GENERATOR-BOUND" if e["generator_bound"] else ""
        cap = e.get("capacity")
        if cap:
            note = (f"capacity {fmt(cap['median'], '.0f').strip()}/s at p99<{cap['slo_p99_ms']:g}ms "
                    f"({', '.join(cap['limited_by'])}) {note}").strip()
        if e["problems"]:
            note = (note + " PROBLEM").strip()
        lines.append(
            f"{e['server']:<10} {e['scenario']:<14} {fmt(e['rps']['median'], '8.0f')} "
            f"{fmt(e['rps']['spread'], '7.1%')} {fmt(lat.get('p50'), '8.2f')} {fmt(lat.get('p99'), '8.2f')} "
            f"{fmt(lat.get('p99_9'), '8.2f')} {fmt((e['failure_rate'] or 0) * 100, '6.2f')} "
            f"{fmt(rss / 1e6 if rss else None, '7.1f')} {fmt(e['client_connections_peak'], '6.0f')} "
            f"{fmt(e['db_connections_peak'], '4.0f')} {fmt(e['cpu_percent']['mean'], '5.0f')} "
            f"{fmt(((e.get('cost') or {}).get('cpu_us_per_request') or {}).get('median'), '7.1f')} "
            f"{fmt(e['generator']['cpu_percent_mean'], '5.0f')}  {note}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a run folder, e.g. reports/latest or reports/<run-id>")
    p.add_argument("--quiet", action="store_true", help="do not print the summary table")
    stats.add_margin_flag(p, stats.WITHIN)
    args = p.parse_args(argv)
    try:
        margin = stats.margin(stats.WITHIN, args.margin_within) if args.margin_within else None
    except ValueError as exc:
        p.error(str(exc))
    try:
        out = write(args.run_dir, margin)
        data = json.loads(out.read_text(encoding="utf-8"))
    except ResultsError as exc:
        print(f"lab.results.build: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print("\n".join(summary_lines(data)))
    print(f"wrote {out}")
    for problem in data["problems"]:
        print(f"problem: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
