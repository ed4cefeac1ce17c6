"""The charts of a run's report: per scenario, cost, throughput, latency and resources over time, as SVG."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.fmt import fmt_bytes, fmt_ms, fmt_num, fmt_us
from lab.load import sampler
from lab.report import svgplot
from lab.report.run_tables import capacity_cell
from lab.report.runs import Entry
from lab.results.resources import client_connections

KNOWN_SERVERS = ("threaded", "gevent", "asyncio", "multiproc")
PLOT_KINDS = ("rps", "cost", "memory-per-connection", "latency-percentiles", "throughput-time",
              "latency-time", "rss-time", "connections-time", "db-time", "cpu-time")
MAX_POINTS = 300
LOG_RATIO = 30  # latency charts use a log scale when the largest value is this many times the least


def colors(servers: Sequence[str]) -> dict[str, str]:
    """The same colour for a known server in every chart of every report."""
    spare = iter(svgplot.PALETTE[len(KNOWN_SERVERS):] * 4)
    return {s: svgplot.PALETTE[KNOWN_SERVERS.index(s)] if s in KNOWN_SERVERS else next(spare)
            for s in servers}




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
            "client_connections": [client_connections(s) for s in samples],
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
    full = all("full-core" in ((e.get("cost") or {}).get("cpu_phase") or []) for e in entries)
    where = ("each repetition's full-core window (the CPU budget lifted, after the budgeted one)" if full
             else "the measured window")
    return Plot(pid, "Cost: CPU per request", f"server process tree CPU time over {where} / "
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
    knees = "; ".join(f"{e['server']} {capacity_cell(e)}/s" for e in entries if e.get("capacity"))
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
