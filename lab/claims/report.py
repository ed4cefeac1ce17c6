"""claims.md and claims.html (self-contained: inline CSS and SVG) from claims.json's data."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from lab.claims import stats
from lab.report import svgplot
from lab.report.markup import CSS
from lab.stack import idle

KiB = 1024.0
VERDICT_CSS = """
.verdict{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12.5px;font-weight:600}
.verdict.holds{background:#e6f4ea;color:var(--good)}
.verdict.off{background:var(--warn-bg);color:var(--warn)}
.verdict.refuted{background:var(--bad-bg);color:var(--bad)}
.verdict.inconclusive,.verdict.missing{background:#eef0f3;color:var(--muted)}
table.claims td,table.claims th{white-space:normal;text-align:left;vertical-align:top}
table.claims td.fig{min-width:220px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px}
svg.chart{width:100%;height:auto;background:#fff}figure{margin:0}
svg .grid{stroke:#e7eaee}svg .axis{stroke:#8a94a0}svg .tick,svg .legend{font-size:11px;fill:#4b5563}
svg .axis-label{font-size:12px;fill:#4b5563}svg .series{stroke-width:2}
svg .whisker{stroke:#1f2328;stroke-width:1.2;fill:none}
"""


def machine_line(data: dict[str, Any]) -> str:
    m = data.get("machine") or {}
    mem = (m.get("memory_bytes") or 0) / 2**30
    return (
        f"{m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs, {mem:.0f} GiB, Linux {m.get('kernel', '?')}, "
        f"Python {m.get('python', '?')} (host {m.get('hostname', '?')})"
    )


def _load_line(data: dict[str, Any]) -> str:
    load = data.get("load") or {}
    held = data.get("idle")
    return (
        f"load average {load.get('before', '?')} before, {load.get('after', '?')} after "
        "(other work on the machine shares its CPUs)"
        + (f"; {idle.Idle.from_dict(held).describe()}" if held else "")
    )


def claim_rows(data: dict[str, Any]) -> list[list[str]]:
    return [[c["folk"], c["figure"], c["verdict"], c["method"]] for c in data.get("claims", [])]


# --- Markdown -----------------------------------------------------------------------------------


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    clean = [[str(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in rows]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in clean),
    ]


def render_md(data: dict[str, Any]) -> str:
    out = [
        f"# Claims measured: {data['id']}",
        "",
        f"Machine: {machine_line(data)}; {_load_line(data)}.",
        f"Command: `{data['command']}` (size {data['size']}), {data['wall_seconds']:.0f} s wall.",
        "",
    ]
    if data.get("problems"):
        out += ["**Problems:**", *(f"- {p}" for p in data["problems"]), ""]
    out += ["## The claims", ""]
    out += md_table(["Folk claim", "Measured here", "Verdict", "Method"], claim_rows(data))
    notes = [(c["folk"], c["note"]) for c in data.get("claims", []) if c.get("note")]
    if notes:
        out += ["", "Notes:", *(f"- *{folk}* {note}" for folk, note in notes)]
    for title, header, rows in detail_tables(data):
        out += ["", f"## {title}", ""]
        out += md_table(header, rows)
    return "\n".join(out) + "\n"


# --- detail tables (shared by both formats) ---------------------------------------------------


def detail_tables(data: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    ex = data.get("experiments") or {}
    tables = []
    if ok(ex.get("switch")):
        rows = [
            [name, v["what"], stats.fmt_summary(v["us"], "µs"), v.get("error") or ""]
            for name, v in ex["switch"]["variants"].items()
        ]
        tables.append(("Switch cost", ["variant", "what", "µs per switch (median, range)", "error"], rows))
    if ok(ex.get("memory")):
        rows = [
            [
                r["kind"],
                f"{r['n']:,}",
                stats.fmt(_k(r["rss"]["median"]), "KiB"),
                stats.fmt(_k(r["virt"]["median"]), "KiB"),
                r.get("error") or "",
            ]
            for r in ex["memory"]["rows"]
        ]
        tables.append(
            ("Memory per unit", ["unit", "parked", "RSS per unit", "virtual per unit", "error"], rows)
        )
    if ok(ex.get("connections")):
        c = ex["connections"]
        rows = []
        for s in c["servers"]:
            for st in s["steps"]:
                p = st["probe"]
                rows.append(
                    [
                        s["server"],
                        f"{st['target']:,}",
                        f"{st['held']:,}",
                        stats.fmt(_k(st["rss_per_conn"]), "KiB"),
                        f"{st['threads']:,}",
                        f"{st['fds']:,}",
                        stats.fmt(p["p99_ms"], "ms"),
                        "yes" if st["ok"] else "NO",
                    ]
                )
        tables.append(
            (
                "Connection ramp",
                [
                    "server",
                    "step",
                    "held",
                    "RSS per connection",
                    "threads",
                    "fds",
                    "fresh /json p99",
                    "passed",
                ],
                rows,
            )
        )
        tables.append(
            (
                "What stopped each ramp",
                ["server", "held", "stopped by"],
                [[s["server"], f"{s['held']:,}", s["stopped_by"]] for s in c["servers"]],
            )
        )
    if ok(ex.get("gil")):
        g = ex["gil"]
        rows = [[k, stats.fmt_summary(v, "req/s")] for k, v in g["served"]["rps"].items()]
        rows += [[k, f"{v:.2f}×"] for k, v in g["served_speedup"].items()]
        tables.append((f"/cpu?n={g['cpu_n']:,} served", ["what", "figure"], rows))
        loops = g["loops"]
        rows = [
            [
                name,
                stats.fmt_summary(loops["units_per_second"][name], "units/s"),
                f"{sp['median']:.2f}× ({sp['lo']:.2f}-{sp['hi']:.2f})",
                f"{loops['cores_used'][name]['median']:.2f}",
                "on" if loops["gil"].get(name) else "off",
            ]
            for name, sp in loops["speedup"].items()
        ]
        tables.append(
            (
                "CPU loop: threads against processes",
                ["variant", "throughput", "speed-up vs 1 thread", "cores used", "GIL"],
                rows,
            )
        )
        tables.append(("Free-threaded Python", ["found"], [[g["free_threaded_note"]]]))
    if ok(ex.get("blocking")):
        b = ex["blocking"]
        rows = [
            [
                m,
                stats.fmt_summary(r["without"]["p99_ms"], "ms"),
                stats.fmt_summary(r["with"]["p99_ms"], "ms"),
                stats.fmt(r["without"]["p50_ms"]["median"], "ms"),
                stats.fmt(r["with"]["p50_ms"]["median"], "ms"),
                stats.fmt(r["with"]["max_ms"]["median"], "ms"),
            ]
            for m, r in b["servers"].items()
        ]
        tables.append(
            (
                f"Other clients' /json beside one /block?ms={b['block_ms']}",
                ["server", "p99 alone", "p99 beside the block", "p50 alone", "p50 beside", "max beside"],
                rows,
            )
        )
    if ok(ex.get("guarantees")):
        gr = ex["guarantees"]
        labels = list(dict.fromkeys(k for f in gr["servers"].values() for k in f["cpu_us"]))
        rows = [[m, *(f"{f['cpu_us'][k]:.1f}" if k in f["cpu_us"] else "" for k in labels)]
                for m, f in gr["servers"].items()]
        tables.append((f"CPU µs per {gr['path']} request, guarantees on and off (LAB_ABLATE)",
                       ["server", *labels], rows))
    errors = [[name, r["error"]] for name, r in ex.items() if r and r.get("error")]
    if errors:
        tables.append(("Experiments that failed", ["experiment", "error"], errors))
    return tables


def ok(result: dict[str, Any] | None) -> bool:
    return bool(result) and not (result or {}).get("error")


def _k(v: float | None) -> float | None:
    return None if v is None else v / KiB


# --- charts -------------------------------------------------------------------------------------


# Short chart labels: eight bars share 640 units of width.
SHORT = {
    "thread-event": "thr Event",
    "thread-condition": "thr Cond",
    "greenlet-switch": "greenlet",
    "gevent-event": "gev Event",
    "asyncio-sleep0": "aio sleep0",
    "asyncio-event": "aio Event",
    "uvloop-sleep0": "uv sleep0",
    "uvloop-event": "uv Event",
    "thread": "thr",
    "thread-512k": "thr512k",
    "greenlet": "green",
    "asyncio-task": "task",
}


def figure(svg: str) -> str:
    """The chart under a heading taken from its own <title>."""
    title = svg.split("<title>", 1)[1].split("</title>", 1)[0] if "<title>" in svg else ""
    return f"<figure><h3>{title}</h3>{svg}</figure>"


def charts(data: dict[str, Any]) -> list[str]:
    ex = data.get("experiments") or {}
    pal = svgplot.PALETTE
    out = []
    if ok(ex.get("switch")):
        v = ex["switch"]["variants"]
        names = list(v)
        out.append(
            svgplot.bar_chart(
                "switch",
                "µs per switch, median and range over repetitions",
                [SHORT.get(n, n) for n in names],
                [
                    svgplot.Bars(
                        "µs per switch",
                        [v[n]["us"]["median"] for n in names],
                        pal[0],
                        [v[n]["us"]["lo"] for n in names],
                        [v[n]["us"]["hi"] for n in names],
                    )
                ],
                y_label="µs per switch",
                log_y=True,
            )
        )
    if ok(ex.get("memory")):
        rows = ex["memory"]["rows"]
        groups = [f"{SHORT.get(r['kind'], r['kind'])} {svgplot.short(r['n'])}" for r in rows]
        out.append(
            svgplot.bar_chart(
                "memory",
                "memory per unit",
                groups,
                [
                    svgplot.Bars("RSS per unit (KiB)", [_k(r["rss"]["median"]) for r in rows], pal[0]),
                    svgplot.Bars("virtual per unit (KiB)", [_k(r["virt"]["median"]) for r in rows], pal[1]),
                ],
                y_label="KiB per unit",
                log_y=True,
            )
        )
    if ok(ex.get("connections")):
        srv = ex["connections"]["servers"]
        out.append(
            svgplot.line_chart(
                "ramp-rss",
                "RSS per connection along the ramp",
                [
                    svgplot.Line(
                        s["server"],
                        [st["held"] for st in s["steps"]],
                        [_k(st["rss_per_conn"]) for st in s["steps"]],
                        pal[i % len(pal)],
                    )
                    for i, s in enumerate(srv)
                ],
                x_label="idle connections held",
                y_label="KiB per connection",
            )
        )
        out.append(
            svgplot.line_chart(
                "ramp-p99",
                "a fresh client's /json p99 along the ramp",
                [
                    svgplot.Line(
                        s["server"],
                        [st["held"] for st in s["steps"]],
                        [st["probe"]["p99_ms"] for st in s["steps"]],
                        pal[i % len(pal)],
                    )
                    for i, s in enumerate(srv)
                ],
                x_label="idle connections held",
                y_label="p99 ms",
                log_y=True,
            )
        )
    if ok(ex.get("gil")):
        loops = ex["gil"]["loops"]
        sp = loops["speedup"]
        kinds = [k for k in ("threads", "processes", "ft-threads") if f"{k}-1" in sp]
        out.append(
            svgplot.bar_chart(
                "gil",
                "CPU loop: speed-up over one thread",
                ["1 worker", "2 workers", "4 workers"],
                [
                    svgplot.Bars(
                        k,
                        [sp[f"{k}-{n}"]["median"] for n in (1, 2, 4)],
                        pal[i],
                        [sp[f"{k}-{n}"]["lo"] for n in (1, 2, 4)],
                        [sp[f"{k}-{n}"]["hi"] for n in (1, 2, 4)],
                    )
                    for i, k in enumerate(kinds)
                ],
                y_label="× one thread",
                fmt_value=lambda x: f"{x:.2f}×",
            )
        )
        rps = ex["gil"]["served"]["rps"]
        names = list(rps)
        out.append(
            svgplot.bar_chart(
                "gil-served",
                "/cpu requests per second",
                names,
                [
                    svgplot.Bars(
                        "req/s",
                        [rps[n]["median"] for n in names],
                        pal[2],
                        [rps[n]["lo"] for n in names],
                        [rps[n]["hi"] for n in names],
                    )
                ],
                y_label="req/s",
            )
        )
    if ok(ex.get("blocking")):
        b = ex["blocking"]["servers"]
        names = list(b)
        out.append(
            svgplot.bar_chart(
                "blocking",
                "other clients' /json p99, alone and beside one blocking call",
                names,
                [
                    svgplot.Bars(
                        "alone",
                        [b[m]["without"]["p99_ms"]["median"] for m in names],
                        pal[0],
                        [b[m]["without"]["p99_ms"]["lo"] for m in names],
                        [b[m]["without"]["p99_ms"]["hi"] for m in names],
                    ),
                    svgplot.Bars(
                        "beside /block",
                        [b[m]["with"]["p99_ms"]["median"] for m in names],
                        pal[4],
                        [b[m]["with"]["p99_ms"]["lo"] for m in names],
                        [b[m]["with"]["p99_ms"]["hi"] for m in names],
                    ),
                ],
                y_label="p99 ms",
                log_y=True,
            )
        )
    return out


# --- HTML ---------------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "wide") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return (
        f'<div class="table-wrap"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def render_html(data: dict[str, Any]) -> str:
    h = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>serverlab claims {escape(data['id'])}</title>"
        f"<style>{CSS}{VERDICT_CSS}</style></head><body><main>",
        f"<header><h1>The folklore, measured: {escape(data['id'])}</h1>",
        f'<p class="sub">{escape(machine_line(data))}<br>{escape(_load_line(data))}<br>'
        f"<code>{escape(data['command'])}</code> (size {escape(data['size'])}), "
        f"{data['wall_seconds']:.0f} s wall</p></header>",
    ]
    if data.get("problems"):
        h.append(
            '<section class="card"><h2>Problems</h2><ul class="notes">'
            + "".join(f'<li class="problem">{escape(p)}</li>' for p in data["problems"])
            + "</ul></section>"
        )
    rows = []
    for c in data.get("claims", []):
        note = f'<div class="meta">{escape(c["note"])}</div>' if c.get("note") else ""
        rows.append(
            f'<tr><td>{escape(c["folk"])}</td><td class="fig">{escape(c["figure"])}</td>'
            f'<td><span class="verdict {escape(c["verdict_kind"])}">{escape(c["verdict"])}</span></td>'
            f"<td>{escape(c['method'])}{note}</td></tr>"
        )
    h.append(
        '<section class="card" id="claims"><h2>The claims</h2><div class="table-wrap"><table class="claims">'
        "<thead><tr><th>Folk claim</th><th>Measured here (median, range over repetitions)</th>"
        f"<th>Verdict</th><th>Method</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>"
    )
    h.append(
        '<section class="card" id="charts"><h2>Charts</h2><div class="charts">'
        + "".join(figure(svg) for svg in charts(data))
        + "</div></section>"
    )
    for title, header, trows in detail_tables(data):
        h.append(f'<section class="card"><h2>{escape(title)}</h2>{table(header, trows)}</section>')
    h.append("</main></body></html>")
    return "\n".join(h)
