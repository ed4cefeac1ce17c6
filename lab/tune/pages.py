"""tune.html and tune.md from a tune document (tune.json): rendering only, no measuring or deciding."""

from __future__ import annotations

import os
import time
from html import escape
from pathlib import Path
from typing import Any

from lab.fmt import fmt_ms, fmt_num, fmt_pct, fmt_rps, fmt_value
from lab.report import markup, run_plots, svgplot
from lab.results import stats
from lab.tune import recommend
from lab.tune.chart import value_chart
from lab.tune.points import curves

BUSY_LOAD = 1.5  # load average per CPU above which the report says other programs competed
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


def charts(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(caption, note, svg) for throughput, p50, p99, failures and database connections."""
    values = [p["value"] for p in doc["points"]]
    palette = run_plots.colors(doc["servers"])
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
        return bool(ys) and max(ys) / max(min(ys), 1e-9) >= run_plots.LOG_RATIO

    slo = float(doc["slo_p99_ms"])
    ms: svgplot.Fmt = fmt_ms
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


TABLE_HEADER = ("value", "ok rps", "spread", "all rps", "p50 ms", "p99 ms", "failed", "db conns",
                "pool waiting", "cpu %", "note", "run")


def whole(v: Any) -> str:
    """A count or percentage rounded to a whole number; '-' when there is none."""
    return "-" if not isinstance(v, int | float) or isinstance(v, bool) else f"{v:.0f}"


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
                     fmt_num(f.get("p50_ms")), fmt_num(f.get("p99_ms")), fmt_pct(f.get("failure_rate")),
                     whole(f.get("db_connections_peak")), whole(x.get("pool_waiting_peak")),
                     whole(x.get("cpu_percent_mean")), ", ".join(notes),
                     " ".join(r["dir"] for r in p["runs"])])
    return rows


def _subtitle(doc: dict[str, Any]) -> str:
    users = doc.get("users") or "the scenario's own"
    values = ", ".join(fmt_value(v) for v in doc["values"])
    return (f"{doc['param']} ({doc['env_var']}) = {values} · scenario {doc['scenario']} · servers "
            f"{', '.join(doc['servers'])} · users {users} · {doc['reps']} x "
            f"{doc['duration']:g} s per value · SLO p99 {doc['slo_p99_ms']:g} ms")


def rule(doc: dict[str, Any]) -> str:
    margin = doc.get("margin_within")
    margin = float(margin) if isinstance(margin, int | float) else stats.margin(stats.WITHIN)
    return (f"Rule: among values that failed at most {fmt_pct(recommend.MAX_FAILURE_RATE)} of requests and "
            "kept p99 under the SLO, take the best successful throughput; recommend the smallest value "
            "within noise of it: the lab's one rule over the two values' repetitions of ok rps (a one-sided "
            f"t-test on the logs, p < {stats.ALPHA:g}) does not show it lower by more than {margin:.0%} "
            f"(LAB_MARGIN_WITHIN: the values run round-robin, so the machine's drift hits them alike). "
            f"Each such tie states the change it could have seen at {stats.POWER:.0%} power and the "
            f"repetitions {stats.TARGET:.0%} would take; with fewer than {stats.MIN_REPS} repetitions a "
            "value nothing is within noise and the best value is recommended.")


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
    out += ["", rule(doc), ""]
    note = load_note(doc)
    if note:
        out += [f"Note: {note}.", ""]
    for s in doc["servers"]:
        out += [f"## {s}", ""]
        out += markup.md_table(TABLE_HEADER, table_rows(doc, s))
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
    palette = run_plots.colors(doc["servers"])
    h: list[str] = []
    add = h.append
    add('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>serverlab tune {escape(doc['id'])}</title><style>{markup.CSS}{EXTRA_CSS}</style></head>"
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
    add(f'<p class="meta">{escape(rule(doc))}</p>')
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
    add(f"<footer>built {escape(time.strftime('%Y-%m-%d %H:%M:%S'))} by lab/tune/pages.py</footer>"
        "</main></body></html>")
    return "".join(h)
