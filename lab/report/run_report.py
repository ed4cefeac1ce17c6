"""One run's report: `python -m lab report reports/<run-id>` writes index.html and summary.md there.

Built from the run's results.json and raw files alone (results.json is rebuilt first with lab.results.build
when it is missing or older than the raw files). index.html is self-contained: inline CSS and SVG
charts (lab.report.svgplot), no network; summary.md carries the same tables and verdicts for terminals and
pull requests. Verdicts and their noise rules: lab.results.headline.

Over-time charts show each server's median repetition (by rps): throughput and latency per second from
results.json's timeline (exact, from the per-second HDR histograms Locust's processes recorded; Locust's
own stats-history CSV rounds percentiles into buckets), resources from the repetition's samples.jsonl
(the whole repetition, measured window shaded; results.json's window-only resource_timeline when the
raw samples are not there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from lab.files import write_text
from lab.fmt import fmt_bytes, fmt_ms, fmt_num, fmt_pct, fmt_us
from lab.load import sampler
from lab.report import svgplot
from lab.results import build as results
from lab.results.headline import Verdict, verdict
from lab.stack import idle

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = frozenset({"results.json", ".results.json.tmp", "index.html", "summary.md", "screenshot.png"})
KNOWN_SERVERS = ("threaded", "gevent", "asyncio", "multiproc")
PLOT_KINDS = ("rps", "cost", "memory-per-connection", "latency-percentiles", "throughput-time",
              "latency-time", "rss-time", "connections-time", "db-time", "cpu-time")
MAX_POINTS = 300
LOG_RATIO = 30  # latency charts use a log scale when the largest value is this many times the least
TIE_RULE = ("A server wins, or is cheaper, only when its repetitions show it differs from the other's by "
            "more than the figure's minimum effect (15% for throughput and CPU per request): a t-test on "
            "the logs, one-sided against that margin, p < 0.05, at least 4 repetitions a side; otherwise "
            "it is a tie, printed with its confidence (ratio, 95% interval, p). A result limited by the "
            "load generator claims no throughput winner: CPU per "
            "request decides (rules: lab/results/headline.py, lab/results/stats.py).")

Entry = dict[str, Any]


class ReportError(RuntimeError):
    """Something a person can fix: the message says what."""


# --- loading ---------------------------------------------------------------------------------------------


def reports_dir() -> Path:
    return Path(os.environ.get("LAB_REPORTS_DIR") or REPO / "reports")


def find_run(arg: str | Path) -> Path:
    """A run folder from a path or a run id under reports/ (`latest` included), resolved."""
    for candidate in (Path(arg), reports_dir() / str(arg)):
        if candidate.is_dir():
            return candidate.resolve()
    raise ReportError(f"no run folder {str(arg)!r}: pass reports/<run-id> or a run id under {reports_dir()} "
                      "(make load writes one)")


def _raw_files(run_dir: Path) -> Iterable[Path]:
    for root, _dirs, files in os.walk(run_dir):
        for name in files:
            if not (Path(root) == run_dir and name in OUTPUTS):
                yield Path(root) / name


def load_results(run_dir: Path) -> dict[str, Any]:
    """results.json of a run, rebuilt from the raw files first when missing or older than them."""
    out = run_dir / "results.json"
    if (run_dir / "settings.json").exists():
        newest = max((p.stat().st_mtime for p in _raw_files(run_dir)), default=0.0)
        if not out.exists() or out.stat().st_mtime < newest:
            try:
                results.write(run_dir)
            except results.ResultsError as exc:
                raise ReportError(f"cannot rebuild results.json: {exc}") from None
    if not out.exists():
        raise ReportError(f"{run_dir} has neither results.json nor the raw files of a run (settings.json)")
    try:
        data = json.loads(out.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReportError(f"{out} is not JSON ({exc}); rebuild it: python -m lab results {run_dir}") from None
    if not isinstance(data, dict) or data.get("schema") != results.SCHEMA:
        raise ReportError(f"{out} is not a serverlab results file")
    if data.get("schema_version") != results.SCHEMA_VERSION:
        raise ReportError(f"{out} has schema version {data.get('schema_version')}, this lab reads "
                          f"{results.SCHEMA_VERSION}; rebuild it: python -m lab results {run_dir}")
    return data


def by_scenario(data: dict[str, Any]) -> list[tuple[str, list[Entry]]]:
    """(scenario, entries in server order), in the run's scenario order."""
    order = list(data.get("scenarios") or []) + [e["scenario"] for e in data["results"]]
    groups = [(s, [e for e in data["results"] if e["scenario"] == s]) for s in dict.fromkeys(order)]
    return [(s, es) for s, es in groups if es]


def colors(servers: Sequence[str]) -> dict[str, str]:
    """The same colour for a known server in every chart of every report."""
    spare = iter(svgplot.PALETTE[len(KNOWN_SERVERS):] * 4)
    return {s: svgplot.PALETTE[KNOWN_SERVERS.index(s)] if s in KNOWN_SERVERS else next(spare)
            for s in servers}


# --- text shared by HTML and Markdown ---------------------------------------------------------------------

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


def _capacity(e: Entry) -> str:
    cap = e.get("capacity") or {}
    if not cap:
        return "-"
    limited = cap.get("limited_by") or []
    value = fmt_num(cap.get("median"))
    if "generator" in limited:
        return f">= {value}" if cap.get("median") is not None else "generator-limited"
    return f">= {value}" if "not reached" in limited else value


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
                       "stayed within the SLO", _capacity),
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
    return " · ".join([f"{e.get('shape') or '?'} shape", f"{e.get('users')} users",
                       f"{fmt_num(e.get('duration_s'))} s measured after "
                       f"{fmt_num(e.get('warmup_s'))} s warm-up",
                       f"{reps} repetition{'' if reps == 1 else 's'}",
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
                          + "; ".join(cap.get("notes") or [])))
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
            verdict_text = ("meets the SLO, though the generator lagged" if lagged and results.step_holds(st)
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
    skip = {"run_id", "profile", "planned_seconds", "scenario_defs", "argv", "command"}
    def text(k: str, v: Any) -> str:
        return idle.Idle.from_dict(v).describe() if k == "idle" and isinstance(v, dict) else value_text(v)
    return rows + [(k, text(k, v)) for k, v in (run.get("settings") or {}).items() if k not in skip]


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
                    f"{results.CEILING_SHARE:.0%} of it, or a Locust process at "
                    f"{results.GENERATOR_CPU_LIMIT:.0f}% of a core, is flagged as generator-bound.")


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


# --- plots -------------------------------------------------------------------------------------------------


def median_rep(entry: Entry) -> dict[str, Any] | None:
    """The repetition whose rps is nearest the median: what the over-time charts show."""
    reps = [r for r in entry.get("repetitions") or [] if r.get("rps") is not None]
    med = entry["rps"].get("median")
    if not reps or med is None:
        return (entry.get("repetitions") or [None])[0]
    return min(reps, key=lambda r: (abs(r["rps"] - med), r["rep"]))


def _thin(cols: dict[str, list[Any]]) -> dict[str, list[Any]]:
    step = max(1, -(-len(cols["t"]) // MAX_POINTS))
    return {k: v[::step] for k, v in cols.items()}


def _less(values: Iterable[Any], other: float) -> list[Any]:
    return [max(0, v - other) if isinstance(v, int | float) else None for v in values]


def resource_series(run_dir: Path, entry: Entry, rep: dict[str, Any]) -> tuple[dict[str, list[Any]], bool]:
    """Resource columns of a repetition, t from the measured window's start, and whether they span the
    whole repetition (from samples.jsonl) or only the window (results.json's resource_timeline).
    Database sessions of another server (db_sessions_other) are subtracted, as in results.json."""
    path = run_dir / entry["server"] / entry["scenario"] / f"rep-{rep['rep']}" / "samples.jsonl"
    other = entry.get("db_sessions_other") or 0
    samples: list[dict[str, Any]] = []
    if path.exists():
        try:
            samples = sampler.read_samples(path)[1]
        except ValueError:
            samples = []
    samples = [s for s in samples if not s.get("server_gone") and isinstance(s.get("t"), int | float)]
    if samples:
        start = rep["window"]["start"]
        return _thin({
            "t": [round(s["t"] - start, 3) for s in samples],
            "rss_bytes": [s.get("rss_bytes") for s in samples],
            "client_connections": [results.client_connections(s) for s in samples],
            "db_connections": _less(((s.get("db") or {}).get("total") for s in samples), other),
            "cpu_percent": [s.get("cpu_percent") for s in samples],
        }), True
    tl = rep.get("resource_timeline") or {}
    cols = {k: list(tl.get(k) or []) for k in ("t", "rss_bytes", "client_connections", "cpu_percent")}
    cols["db_connections"] = _less(tl.get("db_connections") or [], other)
    return cols, False


def _log_wanted(values: Iterable[float | None]) -> bool:
    pos = [v for v in values if v is not None and v > 0]
    return bool(pos) and max(pos) / min(pos) >= LOG_RATIO


@dataclass(frozen=True)
class Plot:
    plot_id: str
    caption: str
    note: str
    svg: str


def _cost_plot(scenario: str, entries: Sequence[Entry], palette: dict[str, str]) -> Plot:
    pid = f"{scenario}/cost"
    bars = []
    for e in entries:
        c = (e.get("cost") or {}).get("cpu_us_per_request") or {}
        bars.append(svgplot.Bars(e["server"], [c.get("median")], palette[e["server"]], [c.get("min")],
                                 [c.get("max")]))
    return Plot(pid, "Cost: CPU per request", "server process tree CPU time over the measured window / "
                "successful requests; median of the repetitions, whiskers min to max. It does not depend "
                "on the load generator outrunning the server",
                svgplot.bar_chart(pid, f"{scenario}: CPU time per successful request", ["CPU per request"],
                                  bars, y_label="µs", fmt_value=fmt_us))


def _conn_plot(scenario: str, entries: Sequence[Entry], palette: dict[str, str]) -> Plot:
    pid = f"{scenario}/memory-per-connection"
    kib = [(e.get("memory") or {}).get("rss_per_connection_bytes") for e in entries]
    bars = [svgplot.Bars(e["server"], [None if v is None else v / 1024], palette[e["server"]])
            for e, v in zip(entries, kib, strict=True)]
    note = ("(peak - baseline RSS of the server tree) / peak open client connections, mean of the "
            "repetitions")
    chart = svgplot.bar_chart(pid, f"{scenario}: memory per open client connection", ["RSS per connection"],
                              bars, y_label="KiB", fmt_value=lambda v: fmt_bytes(v * 1024))
    return Plot(pid, "Cost: memory per open connection", note, chart)


def capacity_plots(scenario: str, entries: Sequence[Entry], palette: dict[str, str]) -> list[Plot]:
    """Latency against offered rate, one curve per server, the SLO as a line: the knee is where a curve
    crosses it."""
    curves = [(e, (e.get("open_model") or {}).get("steps") or []) for e in entries]
    slo = next((e["capacity"]["slo_p99_ms"] for e in entries if e.get("capacity")), None)
    knees = "; ".join(f"{e['server']} {_capacity(e)}/s" for e in entries if e.get("capacity"))
    plots = []
    for kind, key, caption in (("capacity-p99", "p99_ms", "p99 against offered rate"),
                               ("capacity-p50", "p50_ms", "p50 against offered rate")):
        lines = [svgplot.Line(e["server"], [s["rate"] for s in steps], [s.get(key) for s in steps],
                              palette[e["server"]]) for e, steps in curves]
        rates = [s["rate"] for _, steps in curves for s in steps]
        if slo is not None and rates and key == "p99_ms":
            lines.append(svgplot.Line(f"SLO {fmt_num(slo)} ms", [min(rates), max(rates)], [slo, slo],
                                      "#b42318"))
        pid = f"{scenario}/{kind}"
        note = ("latency from each request's scheduled start (coordinated omission corrected), per "
                f"offered rate; capacity at SLO: {knees or '-'}")
        chart = svgplot.line_chart(pid, f"{scenario}: {caption}", lines, x_label="offered requests/s",
                                   y_label="ms", fmt_point=fmt_ms,
                                   log_y=_log_wanted(v for ln in lines for v in ln.ys))
        plots.append(Plot(pid, caption, note, chart))
    lines = [svgplot.Line(e["server"], [s["rate"] for s in steps], [s.get("ok_rps") for s in steps],
                          palette[e["server"]]) for e, steps in curves]
    pid = f"{scenario}/capacity-achieved"
    chart = svgplot.line_chart(pid, f"{scenario}: served against offered", lines,
                               x_label="offered requests/s", y_label="successful requests/s",
                               fmt_point=fmt_num)
    note = "successful requests/s per offered rate: a server keeping up follows the diagonal"
    plots.append(Plot(pid, "Served against offered", note, chart))
    return plots


def _summary_plots(scenario: str, entries: Sequence[Entry], palette: dict[str, str]) -> list[Plot]:
    rps_id, lat_id = f"{scenario}/rps", f"{scenario}/latency-percentiles"
    rps = [svgplot.Bars(e["server"], [e["rps"]["median"], e["ok_rps"]["median"]], palette[e["server"]],
                        [e["rps"]["min"], e["ok_rps"]["min"]], [e["rps"]["max"], e["ok_rps"]["max"]])
           for e in entries]
    keys = ("p50", "p90", "p99", "p99_9", "max")
    lat = [svgplot.Bars(e["server"], [(e.get("latency_ms") or {}).get(k) for k in keys], palette[e["server"]])
           for e in entries]
    return [
        Plot(rps_id, "Throughput", "median of the repetitions; whiskers: min to max",
             svgplot.bar_chart(rps_id, f"{scenario}: requests per second", ["all requests", "successful"],
                               rps, y_label="requests/s", fmt_value=fmt_num)),
        _cost_plot(scenario, entries, palette),
        _conn_plot(scenario, entries, palette),
        Plot(lat_id, "Latency percentiles", "successful requests, all repetitions merged (HDR histogram)",
             svgplot.bar_chart(lat_id, f"{scenario}: latency percentiles",
                               ["p50", "p90", "p99", "p99.9", "max"], lat, y_label="ms", fmt_value=fmt_ms,
                               log_y=_log_wanted(v for b in lat for v in b.values))),
    ]


def scenario_plots(run_dir: Path, scenario: str, entries: Sequence[Entry],
                   palette: dict[str, str]) -> list[Plot]:
    """Every chart of a scenario, in PLOT_KINDS order (capacity curves first for open-model ones)."""
    plots = capacity_plots(scenario, entries, palette) if any(e.get("open_model") for e in entries) else []
    plots += _summary_plots(scenario, entries, palette)
    reps = [median_rep(e) or {} for e in entries]
    which = "each server's median repetition (by rps): " + ", ".join(
        f"{e['server']} rep {r.get('rep', '?')} of {e.get('reps')}"
        for e, r in zip(entries, reps, strict=True))

    def line_plot(kind: str, caption: str, note: str, columns: Sequence[dict[str, list[Any]]], key: str,
                  y_label: str, fmt: Callable[[float], str], scale: float = 1.0, log: bool = False,
                  **extra: Any) -> Plot:
        def scaled(values: Iterable[Any]) -> list[float | None]:
            return [v / scale if isinstance(v, int | float) else None for v in values]

        lines = [svgplot.Line(e["server"], cols.get("t") or [], scaled(cols.get(key) or []),
                              palette[e["server"]]) for e, cols in zip(entries, columns, strict=True)]
        pid = f"{scenario}/{kind}"
        if log:
            extra["log_y"] = _log_wanted(v for ln in lines for v in ln.ys)
        return Plot(pid, caption, f"{note}; {which}",
                    svgplot.line_chart(pid, f"{scenario}: {caption}", lines, y_label=y_label, fmt_point=fmt,
                                       **extra))

    timelines = [r.get("timeline") or {} for r in reps]
    per_second: dict[str, Any] = {"x_label": "seconds into the measured window"}
    plots.append(line_plot("throughput-time", "Throughput over time", "per second", timelines, "rps",
                           "requests/s", fmt_num, **per_second))
    plots.append(line_plot("latency-time", "p99 latency over time", "per second", timelines, "p99_ms", "ms",
                           fmt_ms, log=True, **per_second))

    series = [resource_series(run_dir, e, r) if r else ({"t": []}, False)
              for e, r in zip(entries, reps, strict=True)]
    columns = [cols for cols, _ in series]
    window = max((r.get("window") or {}).get("seconds") or 0 for r in reps)
    whole = any(full for _, full in series) and window
    note = ("sampler, the whole repetition; shaded: the measured window" if whole
            else "sampler, the measured window")
    sampled: dict[str, Any] = {"x_label": "seconds from the start of the measured window",
                               "band": (0.0, float(window)) if whole else None,
                               "band_label": "measured" if whole else ""}
    plots.append(line_plot("rss-time", "Memory (RSS) over time", note, columns, "rss_bytes", "MiB",
                           lambda v: f"{fmt_num(v)} MiB", scale=2**20, **sampled))
    plots.append(line_plot("connections-time", "Client connections over time", note, columns,
                           "client_connections", "open connections", fmt_num, **sampled))
    plots.append(line_plot("db-time", "Database connections over time", note, columns, "db_connections",
                           "sessions", fmt_num, **sampled))
    plots.append(line_plot("cpu-time", "Server CPU over time", note, columns, "cpu_percent", "% of one core",
                           lambda v: f"{fmt_num(v)}%", **sampled))
    return plots


# --- HTML --------------------------------------------------------------------------------------------------

CSS = """
:root{--fg:#1f2328;--muted:#5b6470;--bg:#f5f6f8;--card:#fff;--line:#dde2e8;--accent:#0b5cad;
  --accent-bg:#edf4fb;--warn:#8a5a00;--warn-bg:#fff6d6;--bad:#b42318;--bad-bg:#fdeceb;--good:#1a7f37}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
  font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:28px 20px 64px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:0 0 8px}
h3{font-size:15px;margin:18px 0 8px}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
.sub{color:var(--muted);margin:0 0 16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:20px 24px;margin:18px 0}
nav.toc ol{margin:6px 0 0;padding-left:22px;columns:2 260px}
.status{display:inline-block;padding:1px 10px;border-radius:12px;font-size:13px;font-weight:600}
.status.ok{background:#e6f4ea;color:var(--good)}
.status.problem{background:var(--bad-bg);color:var(--bad)}
.headline{border-left:4px solid var(--accent);background:var(--accent-bg);padding:10px 14px;
  border-radius:6px;margin:10px 0 14px}
.verdicts dt{font-weight:600;margin-top:8px}
.verdicts dd{margin:2px 0 0 0}
.meta{color:var(--muted);font-size:13px;margin:0 0 8px}
.table-wrap{overflow-x:auto;margin:8px 0}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{padding:5px 7px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{font-weight:600;color:var(--muted);border-bottom:2px solid var(--line);white-space:normal;
  vertical-align:bottom;line-height:1.25}
th[title]{cursor:help;text-decoration:underline dotted}
td:first-child,th:first-child{text-align:left}
table.servers td:last-child,table.servers th:last-child{text-align:left}
table.kv td,table.kv th,table.wide td,table.wide th{text-align:left;white-space:normal}
table.kv td:first-child{color:var(--muted);white-space:nowrap}
tr:hover td{background:#fafbfc}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px}
.tag{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;margin-left:2px}
.tag.bound{background:var(--warn-bg);color:var(--warn)}
.tag.problem{background:var(--bad-bg);color:var(--bad)}
ul.notes{padding-left:20px;margin:8px 0}
ul.notes li{margin:2px 0}
li.problem{color:var(--bad)}
li.warning{color:var(--warn)}
li.info{color:var(--muted)}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(430px,1fr));gap:14px;margin-top:14px}
figure{margin:0;border:1px solid var(--line);border-radius:8px;padding:10px 12px 6px;background:#fff;
  min-width:0}
figcaption{font-weight:600;font-size:14px}
figcaption span{display:block;font-weight:400;color:var(--muted);font-size:12px}
svg.chart{width:100%;height:auto;display:block;margin-top:4px}
svg .grid{stroke:#e9ecf0}
svg .axis{stroke:#8c959f}
svg .tick{fill:#5b6470;font-size:11px}
svg .legend{font-size:12px;fill:#1f2328}
svg .axis-label{font-size:12px;fill:#5b6470}
svg .series{stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
svg .band{fill:#eef1f5}
svg .band-label{font-size:11px;fill:#8c959f}
svg .whisker{stroke:#1f2328;stroke-width:1.2;fill:none}
pre{background:#f0f2f5;padding:10px 12px;border-radius:6px;white-space:pre-wrap;word-break:break-all;
  font-size:13px}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:18px;align-items:start;
  margin:18px 0}
.facts .card{margin:0}
.facts>div{display:grid;gap:18px}
footer{color:var(--muted);font-size:12px;margin-top:24px}
@media (max-width:700px){main{padding:16px 10px}.card{padding:14px}.plots,.facts{grid-template-columns:1fr}}
"""

# Render self-check, the page's only script: marks each chart data-drawn="yes" once the browser has laid
# out a mark of non-zero size, and records the page height (tests/test_report_browser.py reads both).
SELF_CHECK = """
(function(){var n=0,all=document.querySelectorAll('svg[data-plot]'),root=document.documentElement;
all.forEach(function(svg){var ok=false;
svg.querySelectorAll('path.series,rect.bar,circle.dot').forEach(function(m){var b=m.getBBox();
if(b.width>0||b.height>0)ok=true;});svg.setAttribute('data-drawn',ok?'yes':'no');if(ok)n++;});
root.setAttribute('data-plots',String(all.length));root.setAttribute('data-plots-drawn',String(n));
root.setAttribute('data-height',String(root.scrollHeight));})();
"""


def anchor(scenario: str) -> str:
    return "scenario-" + "".join(c if c.isalnum() else "-" for c in scenario)


def _head(header: Sequence[str], hints: Sequence[str] = ()) -> str:
    hints = [*hints, *[""] * len(header)]
    return "".join(f'<th title="{escape(h)}">{escape(t)}</th>' if h else f"<th>{escape(t)}</th>"
                   for t, h in zip(header, hints, strict=False))


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<div class="table-wrap"><table class="{cls}"><thead><tr>{_head(header)}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<div class="table-wrap"><table class="kv"><tbody>{body}</tbody></table></div>'


def server_table(entries: Sequence[Entry], palette: dict[str, str]) -> str:
    """The scenario's table: a colour dot per server (as in the charts), notes as tags."""
    body = []
    for row in table_rows(entries):
        dot = f'<span class="dot" style="background:{palette.get(row[0], "#888")}"></span>'
        tags = "".join(f'<span class="tag {"bound" if t == "generator-bound" else "problem"}">'
                       f"{escape(t)}</span>" for t in row[-1].split(", ") if t)
        cells = [dot + escape(row[0]), *(escape(c) for c in row[1:-1]), tags]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = _head([c.header for c in COLUMNS], [c.hint for c in COLUMNS])
    return (f'<div class="table-wrap"><table class="servers"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _status(data: dict[str, Any]) -> str:
    return "clean run" if data.get("ok") else f"{len(data.get('problems') or [])} problem(s)"


def _subtitle(data: dict[str, Any]) -> str:
    run = data["run"]
    return (f"profile {value_text(run.get('profile'))} · servers {', '.join(data.get('servers') or [])} · "
            f"started {when(run.get('started_at'))} · {fmt_num(run.get('wall_seconds'))} s wall")


def latest_faults(run_dir: Path, page: str = "faults.html") -> tuple[str, str] | None:
    """(link relative to run_dir, text) to the newest `make faults` report beside it, if any."""
    found = sorted(reports_dir().glob(f"faults-*/{page}"))
    if not found:
        return None
    return os.path.relpath(found[-1], run_dir), f"latest make faults run: {found[-1].parent.name}"


def render_html(data: dict[str, Any], run_dir: Path) -> str:
    run = data["run"]
    run_id = str(run.get("id") or run_dir.name)
    palette = colors(list(dict.fromkeys([*(data.get("servers") or []),
                                         *(e["server"] for e in data["results"])])))
    groups = by_scenario(data)
    verdicts = {s: verdict(s, es) for s, es in groups}
    problems, warnings = data.get("problems") or [], all_warnings(data)
    h: list[str] = []
    add = h.append
    add('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>serverlab report {escape(run_id)}</title><style>{CSS}</style></head><body><main>")
    add(f'<header><h1>serverlab report: {escape(run_id)}</h1><p class="sub">{escape(_subtitle(data))} · '
        f'<span class="status {"ok" if data.get("ok") else "problem"}">{escape(_status(data))}</span></p>'
        "</header>")
    add(claims_link(run_dir))

    toc = [("verdicts", "Verdicts")]
    if problems or warnings:
        toc.append(("problems", "Problems and warnings"))
    toc += [(anchor(s), f"Scenario {s}") for s, _ in groups]
    toc += [("settings", "Settings"), ("machine", "Machine"), ("calibration", "Calibration"),
            ("reproduce", "Reproduce")]
    add('<nav class="card toc"><strong>Contents</strong><ol>'
        + "".join(f'<li><a href="#{a}">{escape(t)}</a></li>' for a, t in toc) + "</ol></nav>")

    add('<section class="card" id="verdicts"><h2>Verdicts</h2><dl class="verdicts">')
    add("".join(f'<dt><a href="#{anchor(s)}">{escape(s)}</a></dt><dd>{escape(verdicts[s].text)}</dd>'
                for s, _ in groups))
    add(f'</dl><p class="meta">{escape(TIE_RULE)}</p></section>')
    if problems or warnings:
        add('<section class="card" id="problems"><h2>Problems and warnings</h2><ul class="notes">'
            + "".join(f'<li class="problem">{escape(p)}</li>' for p in problems)
            + "".join(f'<li class="warning">{escape(w)}</li>' for w in warnings) + "</ul></section>")

    for s, entries in groups:
        add(f'<section class="card scenario" id="{anchor(s)}" data-scenario="{escape(s)}">'
            f"<h2>Scenario {escape(s)}</h2>")
        if entries[0].get("description"):
            add(f"<p>{escape(entries[0]['description'])}</p>")
        add(f'<p class="meta">{escape(scenario_meta(entries))}</p>'
            f'<div class="headline">{escape(verdicts[s].text)}</div>{server_table(entries, palette)}')
        notes = scenario_notes(entries)
        if notes:
            add('<ul class="notes">' + "".join(f'<li class="{k}">{escape(t)}</li>' for k, t in notes)
                + "</ul>")
        steps = step_rows(entries)
        if steps:
            add("<h3>Offered rates</h3>" + html_table(STEP_HEADER, steps, cls="steps"))
        add('<div class="plots">')
        add("".join(f"<figure><figcaption>{escape(p.caption)}<span>{escape(p.note)}</span></figcaption>"
                    f"{p.svg}</figure>" for p in scenario_plots(run_dir, s, entries, palette)))
        add("</div></section>")

    add('<div class="facts"><section class="card" id="settings"><h2>Settings</h2>'
        + kv_table(settings_rows(data)))
    defs = scenario_def_rows(data)
    if defs:
        add("<h3>Scenarios as defined for this run</h3>" + html_table(SCENARIO_DEF_HEADER, defs, cls="wide"))
    add('</section><div><section class="card" id="machine"><h2>Machine</h2>'
        f'{kv_table(machine_rows(run.get("machine")))}</section>'
        '<section class="card" id="calibration"><h2>Calibration</h2>'
        f'<p class="meta">{escape(CALIBRATION_NOTE)}</p>{kv_table(calibration_rows(run.get("calibration")))}'
        "</section>"
        '<section class="card" id="reproduce"><h2>Reproduce</h2><p>Run it again with:</p>'
        f"<pre>{escape(value_text(run.get('command')))}</pre><p>Rebuild this report from the raw files:</p>"
        f"<pre>{escape(rebuild_command(run_id))}</pre></section></div></div>")
    faults = latest_faults(run_dir)
    if faults:
        add(f'<p class="meta">Reliability: <a href="{escape(faults[0])}">{escape(faults[1])}</a></p>')
    add(f"<footer>Generated {escape(time.strftime('%Y-%m-%d %H:%M:%S'))} by lab/report/ from results.json "
        f"(schema {escape(value_text(data.get('schema_version')))}, built "
        f"{escape(value_text(data.get('generated_at')))}).</footer>")
    add(f"</main><script>{SELF_CHECK}</script></body></html>")
    return "".join(h)


# --- Markdown ----------------------------------------------------------------------------------------------


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    """A pipe table; columns from `right_from` on are right-aligned (numbers)."""
    align = [":--" if i < right_from else "--:" for i in range(len(header))]
    out = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    return out + ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]


def render_md(data: dict[str, Any], run_dir: Path | None = None) -> str:
    run = data["run"]
    run_id = str(run.get("id"))
    groups = by_scenario(data)
    verdicts: dict[str, Verdict] = {s: verdict(s, es) for s, es in groups}
    problems, warnings = data.get("problems") or [], all_warnings(data)
    out = [f"# serverlab report: {run_id}", "", f"{_subtitle(data)} · {_status(data)}", ""]
    faults = latest_faults(run_dir, "faults.md") if run_dir else None
    if faults:
        out += [f"Reliability: [{faults[1]}]({faults[0]})", ""]
    out += ["## Verdicts", ""]
    out += [f"- **{s}**: {verdicts[s].text}" for s, _ in groups]
    out += ["", f"_{TIE_RULE}_", ""]
    if problems or warnings:
        out += ["## Problems and warnings", ""]
        out += [f"- PROBLEM: {p}" for p in problems] + [f"- warning: {w}" for w in warnings] + [""]
    for s, entries in groups:
        out += [f"## Scenario {s}", ""]
        if entries[0].get("description"):
            out += [entries[0]["description"], ""]
        out += [scenario_meta(entries), "", f"> {verdicts[s].text}", ""]
        out += md_table([c.header for c in COLUMNS], table_rows(entries))
        notes = scenario_notes(entries)
        if notes:
            out += ["", *(f"- {'PROBLEM: ' if k == 'problem' else ''}{t}" for k, t in notes)]
        steps = step_rows(entries)
        if steps:
            out += ["", "Offered rates:", "", *md_table(STEP_HEADER, steps)]
        out.append("")
    out += ["## Settings", "", *md_table(["setting", "value"], settings_rows(data), right_from=2)]
    defs = scenario_def_rows(data)
    if defs:
        out += ["", "Scenarios as defined for this run:", "",
                *md_table(SCENARIO_DEF_HEADER, defs, right_from=7)]
    out += ["", "## Machine", "",
            *md_table(["fact", "value"], machine_rows(run.get("machine")), right_from=2)]
    out += ["", "## Calibration", "", CALIBRATION_NOTE, "",
            *md_table(["", "value"], calibration_rows(run.get("calibration")), right_from=2)]
    out += ["", "## Reproduce", "", "```sh", value_text(run.get("command")), "```", "",
            "Rebuild this report from the raw files:", "", "```sh", rebuild_command(run_id), "```", ""]
    return "\n".join(out)


# --- entry point -------------------------------------------------------------------------------------------


def claims_link(run_dir: Path) -> str:
    """A link to the newest `make claims` page under reports/, or "" when there is none."""
    pages = sorted(reports_dir().glob("claims-*/claims.html"), key=lambda p: p.parent.name)
    if not pages:
        return ""
    href = os.path.relpath(pages[-1], run_dir)
    return (f'<p class="meta">The folklore about threads, greenlets and event loops, measured on this '
            f'machine: <a href="{escape(href)}">{escape(pages[-1].parent.name)}</a> (make claims).</p>')


def build(run_dir: Path) -> tuple[Path, Path]:
    """Write index.html and summary.md into the run folder; returns their paths."""
    data = load_results(run_dir)
    html_path, md_path = run_dir / "index.html", run_dir / "summary.md"
    for path, text in ((html_path, render_html(data, run_dir)), (md_path, render_md(data, run_dir))):
        write_text(path, text)
    return html_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder (reports/<run-id>, reports/latest) or a run id")
    args = p.parse_args(argv)
    try:
        run_dir = find_run(args.run)
        html_path, md_path = build(run_dir)
        data = load_results(run_dir)
    except ReportError as exc:
        print(f"lab report: {exc}", file=sys.stderr)
        return 2
    for s, entries in by_scenario(data):
        print(f"{s}: {verdict(s, entries).text}")
    print(f"wrote {html_path}\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
