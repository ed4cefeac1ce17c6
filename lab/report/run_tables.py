"""The text of a run's report shared by its HTML and Markdown: tables, notes, settings and the tie rule."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lab.fmt import fmt_bytes, fmt_ms, fmt_num, fmt_pct
from lab.load import variants
from lab.report.runs import Entry
from lab.results import bounds, generator, openmodel
from lab.stack import idle


def tie_rule(margin: float) -> str:
    return (f"A server wins, or is cheaper, only when its repetitions show it differs from the other's by "
            f"more than the margin between servers, {margin:.0%} (LAB_MARGIN_WITHIN; a figure's own floor "
            f"where larger: p99 30%, memory 10%, memory per connection 50%): a t-test on the logs, one-sided "
            f"against that margin, p < 0.05, at least 4 repetitions a side; otherwise it is a tie, printed "
            f"with its confidence (ratio, 95% interval, p) and the change it could have seen (the minimum "
            f"detectable effect at 80% power) with the repetitions a side 5% would take. A result limited "
            f"by the load generator claims no throughput winner: CPU per request decides (rules: "
            f"lab/results/headline.py, lab/results/stats.py).")



_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def value_text(v: Any) -> str:
    """A setting as text; a password in a URL is masked."""
    if v is None:
        return "-"
    text = (json.dumps(v, separators=(", ", ": ")) if v else "-") if isinstance(v, list | dict) else str(v)
    return _PASSWORD.sub(r"\1***@", text)


def when(ts: Any) -> str:
    if isinstance(ts, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return value_text(ts)


@dataclass(frozen=True)
class Column:
    header: str
    hint: str
    cell: Callable[[Entry], str]


def _lat(key: str) -> Callable[[Entry], str]:
    return lambda e: fmt_num((e.get("latency_ms") or {}).get(key))


def _mem(key: str) -> Callable[[Entry], str]:
    return lambda e: fmt_bytes((e.get("memory") or {}).get(key))


def _cost(e: Entry) -> str:
    return fmt_num(((e.get("cost") or {}).get("cpu_us_per_request") or {}).get("median"))


def capacity_cell(e: Entry) -> str:
    cap = e.get("capacity") or {}
    if not cap:
        return "-"
    limited = cap.get("limited_by") or []
    value = fmt_num(cap.get("median"))
    if cap.get("median") is None:
        return "generator-limited" if "generator" in limited else value
    held, tested = bounds.lower_bounds(e), bounds.values(e)
    if not held:
        return value
    return f">= {value}" if held >= tested else f"{value} ({held} of {tested} lower bounds)"


def _note(e: Entry) -> str:
    flags = (("generator-bound", e.get("generator_bound")), ("problem", e.get("problems")))
    return ", ".join(name for name, on in flags if on)


COLUMNS = (
    Column("server", "", lambda e: str(e["server"])),
    Column("rps", "all completed requests per second: median of the repetitions",
           lambda e: fmt_num(e["rps"]["median"])),
    Column("spread", "(max - min) / median of the repetitions' rps: the noise",
           lambda e: fmt_pct(e["rps"].get("spread"))),
    Column("CPU µs/req", "server process tree CPU time per successful request, median of the repetitions",
           _cost),
    Column("capacity", "capacity at the SLO (open model): the highest offered rate whose p99 and failures "
                       "stayed within the SLO", capacity_cell),
    Column("p50 ms", "latency of successful requests, all repetitions merged", _lat("p50")),
    Column("p90 ms", "", _lat("p90")),
    Column("p99 ms", "", _lat("p99")),
    Column("p99.9 ms", "", _lat("p99_9")),
    Column("max ms", "", _lat("max")),
    Column("failed", "failed requests / all requests", lambda e: fmt_pct(e.get("failure_rate"))),
    Column("peak RSS", "server process tree", _mem("rss_peak_bytes")),
    Column("mean RSS", "", _mem("rss_mean_bytes")),
    Column("RSS/conn", "(peak - baseline RSS) / peak client connections", _mem("rss_per_connection_bytes")),
    Column("threads", "peak threads of the process tree", lambda e: fmt_num(e.get("threads_peak"))),
    Column("clients", "peak open client connections", lambda e: fmt_num(e.get("client_connections_peak"))),
    Column("db conns", "peak database sessions", lambda e: fmt_num(e.get("db_connections_peak"))),
    Column("CPU %", "mean CPU of the server tree, percent of one core",
           lambda e: fmt_num((e.get("cpu_percent") or {}).get("mean"))),
    Column("note", "", _note),
)


def table_rows(entries: Sequence[Entry]) -> list[list[str]]:
    return [[c.cell(e) for c in COLUMNS] for e in entries]


def _budget_text(e: Entry) -> str:
    budget = (e.get("cost") or {}).get("cpu_budget") or {}
    cores = budget.get("cores")
    return (f"CPU budget {fmt_num(cores)} core per server (quota {budget.get('quota_us')} µs per "
            f"{budget.get('period_us')} µs)" if cores else "no CPU budget")


def scenario_meta(entries: Sequence[Entry]) -> str:
    e = entries[0]
    reps = e.get("reps")
    if e.get("open_model"):
        steps = (e.get("open_model") or {}).get("steps") or []
        return " · ".join(["open model (requests start on a schedule)",
                           f"{len(steps)} offered rates, {fmt_num(e.get('duration_s'))} s each after "
                           f"{fmt_num(e.get('warmup_s'))} s warm-up",
                           f"SLO p99 < {fmt_num((e.get('capacity') or {}).get('slo_p99_ms'))} ms",
                           f"{reps} repetition{'' if reps == 1 else 's'}", _budget_text(e)])
    full = (f", then {fmt_num(e.get('full_core_s'))} s at a full core (the budget lifted: CPU per request)"
            if e.get("full_core_s") else "")
    return " · ".join([f"{e.get('shape') or '?'} shape", f"{e.get('users')} users",
                       f"{fmt_num(e.get('duration_s'))} s measured after "
                       f"{fmt_num(e.get('warmup_s'))} s warm-up{full}",
                       (e.get("rounds") or {}).get("text") or f"{reps} repetition{'' if reps == 1 else 's'}",
                       "uses the database" if e.get("uses_db") else "no database", _budget_text(e)])


def scenario_notes(entries: Sequence[Entry]) -> list[tuple[str, str]]:
    """(kind, text) lines under a scenario's table: kind is problem, warning or info."""
    notes: list[tuple[str, str]] = []
    for e in entries:
        s = e["server"]
        notes += [("problem", f"{s}: {p}") for p in e.get("problems") or []]
        if e.get("generator_bound"):
            notes.append(("warning", f"{s}: limited by the load generator, not the server: "
                                     f"{e.get('generator_bound_reason')}"))
        notes += [("warning", f"{s}: {w}") for w in e.get("warnings") or []]
        w = e.get("writes")
        if w:
            outcome = "nothing acknowledged was lost" if w.get("ok") else "ORDERS LOST OR UNACKNOWLEDGED"
            notes.append(("info" if w.get("ok") else "problem",
                          f"{s}: writes check: {w['acknowledged']:,} acknowledged, {w['rows']:,} rows, "
                          f"{w['missing']:,} missing, {w['unacknowledged_rows']:,} unacknowledged: "
                          f"{outcome}"))
        sat = e.get("saturation")
        if sat:
            notes.append(("info", f"{s}: saturation: the most successful requests/s, "
                                  f"{fmt_num(sat['ok_rps'])}, at {sat['users']} users "
                                  f"(p99 {fmt_ms(sat['p99_ms'])})"))
        cap = e.get("capacity")
        if cap:
            unsteady = any(r is not None for r in cap.get("held_again_rates") or [])
            notes.append(("warning" if unsteady or "generator" in (cap.get("limited_by") or []) else "info",
                          f"{s}: capacity at p99 < {fmt_num(cap.get('slo_p99_ms'))} ms: "
                          + openmodel.notes_by_rep(cap.get("notes") or [])))
        om = e.get("open_model")
        if om and (om.get("late") or om.get("dropped")):
            notes.append(("info", f"{s}: of {om['offered']:,} scheduled starts, {om['late']:,} started late "
                                  f"and {om['dropped']:,} were dropped (too many in flight); latency counts "
                                  "from the scheduled start"))
        rejections = (e.get("pool") or {}).get("rejections")
        if rejections:
            notes.append(("info", f"{s}: {rejections:,} requests rejected with 503 by the pool, in-flight or "
                                  "connection limits"))
    return notes


STEP_HEADER = ("server", "offered/s", "achieved/s", "p50 ms", "p99 ms", "p99 ms uncorrected",
               "failed+dropped", "late starts", "Locust CPU %", "verdict")


def step_rows(entries: Sequence[Entry]) -> list[list[str]]:
    """Every offered rate of an open-model scenario: what each server did with it."""
    rows = []
    for e in entries:
        for st in (e.get("open_model") or {}).get("steps") or []:
            lagged = st.get("generator_limited")
            held = lagged and openmodel.step_holds(st)
            own = lagged and st.get("servers_miss")  # the server's miss, though the generator lagged
            verdict_text = ("meets the SLO, though the generator lagged" if held
                            else "misses the SLO (the generator lagged too)" if own
                            else "generator could not keep the rate" if lagged
                            else "meets the SLO" if st.get("meets_slo") else "misses the SLO")
            rows.append([e["server"], fmt_num(st["rate"]), fmt_num(st.get("achieved_rps")),
                         fmt_num(st.get("p50_ms")), fmt_num(st.get("p99_ms")),
                         fmt_num(st.get("p99_uncorrected_ms")), fmt_pct(st.get("failure_share")),
                         fmt_pct(st.get("late_share")), fmt_num(st.get("generator_cpu_percent")),
                         verdict_text])
    return rows


def all_warnings(data: dict[str, Any]) -> list[str]:
    out = [f"{e['server']}/{e['scenario']}: {w}" for e in data["results"] for w in e.get("warnings") or []]
    out += [f"{e['server']}/{e['scenario']}: limited by the load generator: {e.get('generator_bound_reason')}"
            for e in data["results"] if e.get("generator_bound")]
    return out


def settings_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    run = data["run"]
    wall = f"{fmt_num(run.get('wall_seconds'))} s (planned {fmt_num(run.get('planned_seconds'))} s)"
    rows = [("run id", value_text(run.get("id"))), ("profile", value_text(run.get("profile"))),
            ("started", when(run.get("started_at"))), ("finished", when(run.get("finished_at"))),
            ("wall time", wall), ("exit status", value_text(run.get("exit_status")))]
    skip = {"run_id", "profile", "planned_seconds", "scenario_defs", "argv", "command", "variants"}
    def text(k: str, v: Any) -> str:
        return idle.Idle.from_dict(v).describe() if k == "idle" and isinstance(v, dict) else value_text(v)
    settings = run.get("settings") or {}
    rows += [(k, text(k, v)) for k, v in settings.items() if k not in skip]
    return rows + [(f"variant {name}", variants.what(rec)) for name, rec in _variant_records(data).items()]


def _variant_records(data: dict[str, Any]) -> dict[str, Any]:
    return (data["run"].get("settings") or {}).get("variants") or {}


def variant_lines(data: dict[str, Any]) -> list[str]:
    """'asyncio-pool20: asyncio with LAB_POOL_SIZE=20' for each variant of the run (LAB_VARIANTS)."""
    return [variants.describe(name, rec) for name, rec in _variant_records(data).items()]


SCENARIO_DEF_HEADER = ("scenario", "user class", "shape", "users", "spawn rate", "database", "description")


def scenario_def_rows(data: dict[str, Any]) -> list[list[str]]:
    defs = (data["run"].get("settings") or {}).get("scenario_defs") or {}
    return [[name, *(value_text(d.get(k)) for k in ("user_class", "shape", "users", "spawn_rate")),
             "yes" if d.get("uses_db") else "no", value_text(d.get("description"))]
            for name, d in defs.items() if isinstance(d, dict)]


def machine_rows(machine: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not machine:
        return [("machine", "not recorded")]
    rows = [(k, fmt_bytes(v) if k == "memory_bytes" else value_text(v))
            for k, v in machine.items() if k != "packages"]
    return rows + [(f"package {k}", value_text(v)) for k, v in (machine.get("packages") or {}).items()]


CALIBRATION_NOTE = (f"What the load generator alone can drive on this machine; a result at "
                    f"{generator.CEILING_SHARE:.0%} of it, or a Locust process at "
                    f"{generator.GENERATOR_CPU_LIMIT:.0f}% of a core, is flagged as generator-bound.")


def calibration_rows(cal: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not cal:
        return [("calibration", "skipped: a generator-bound result is judged by the generator's CPU alone")]
    lat = cal.get("latency_ms") or {}
    target = f"{fmt_num(cal.get('target_cpu_percent'))}% of a core"
    if cal.get("target_bound"):
        target += " (the target, not the generator, was the limit)"
    return [("ceiling", f"{fmt_num(cal.get('ceiling_rps'))} requests/s"),
            ("generator CPU", f"{fmt_num(cal.get('generator_cpu_percent'))}% of a core"),
            ("target CPU", target), ("users", value_text(cal.get("users"))),
            ("user class", value_text(cal.get("user_class"))),
            ("Locust workers", value_text(cal.get("locust_workers"))),
            ("load CPUs", value_text(cal.get("load_cpus"))),
            ("latency", f"p50 {fmt_ms(lat.get('p50'))}, p99 {fmt_ms(lat.get('p99'))}"),
            ("measured at", value_text(cal.get("measured_at")))]


def rebuild_command(run_id: str) -> str:
    return f".venv/bin/python -m lab report reports/{run_id}"
