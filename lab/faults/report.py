"""The faults report: faults.json (everything), faults.md (for terminals and pull requests) and a
self-contained faults.html (inline SVG from lab/report/svgplot.py, no scripts, no CDN)."""

from __future__ import annotations

import json
from dataclasses import asdict
from html import escape
from pathlib import Path
from typing import Any

from lab.faults.target import Result
from lab.report import svgplot

MARK = {True: "pass", False: "FAIL", None: "n/a"}


def _figures(figures: dict[str, Any]) -> str:
    parts = []
    for key, value in figures.items():
        if key in {"statuses"} and isinstance(value, dict) and len(value) > 8:
            continue  # the bad-input table is listed on its own
        shown = json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else str(value)
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


def markdown_table(results: list[Result]) -> str:
    lines = ["| case | server | verdict | figures | why not |", "|---|---|---|---|---|"]
    for r in results:
        why = "; ".join(r.failed) or r.note
        lines.append(f"| {r.case} | {r.model} | {MARK[r.passed]} | {_figures(r.figures)} | {why} |")
    return "\n".join(lines)


def _grid(results: list[Result]) -> tuple[list[str], list[list[str]]]:
    """Verdicts at a glance: one row per case, one column per server."""
    models = list(dict.fromkeys(r.model for r in results))
    cases = list(dict.fromkeys(r.case for r in results))
    found = {(r.case, r.model): MARK[r.passed] for r in results}
    return models, [[case, *[found.get((case, m), "") for m in models]] for case in cases]


def _bad_input_table(results: list[Result]) -> tuple[list[str], list[list[str]]]:
    tables = {r.model: r.figures.get("statuses", {}) for r in results if r.case == "bad_input"}
    models = list(tables)
    kinds = sorted(set().union(*tables.values())) if tables else []
    rows = [[kind, *[str(tables[m].get(kind, "")) for m in models]] for kind in kinds]
    return models, rows


def write(folder: Path, meta: dict[str, Any], results: list[Result]) -> list[Path]:
    data = {"meta": meta, "results": [asdict(r) for r in results]}
    json_path = folder / "faults.json"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    models, rows = _bad_input_table(results)
    failed = [r for r in results if r.passed is False]
    head = (
        f"# make faults: {meta['id']}\n\n{len(failed)} of {sum(r.passed is not None for r in results)} "
        f"case runs failed. {_settings(meta)}\n\n"
        f"Reproduce: `{meta['command'].strip()}`\n\n"
    )
    grid_models, grid = _grid(results)
    md = head + "| case | " + " | ".join(grid_models) + " |\n|---|" + "---|" * len(grid_models) + "\n"
    md += "\n".join("| " + " | ".join(row) + " |" for row in grid) + "\n\n"
    md += "## Cases\n\n" + markdown_table(results) + "\n"
    if rows:
        md += (
            "\n## Bad input: status per kind\n\n| kind | "
            + " | ".join(models)
            + " |\n|---|"
            + "---|" * len(models)
            + "\n"
            + "\n".join("| " + " | ".join(row) + " |" for row in rows)
            + "\n"
        )
    md_path = folder / "faults.md"
    md_path.write_text(md, encoding="utf-8")
    html_path = folder / "faults.html"
    html_path.write_text(_html(meta, results, models, rows), encoding="utf-8")
    return [json_path, md_path, html_path]


def _chart(results: list[Result]) -> str:
    """How promptly each server answers when it cannot serve: one bar group per figure."""
    wanted = [
        ("overload", "503_p99_ms", "503 p99 under overload"),
        ("overload", "health_p99_ms", "/health p99 under overload"),
        ("disconnects", "database_idle_after_ms", "DB busy after hang-ups"),
    ]
    models = list(dict.fromkeys(r.model for r in results if r.model != "all"))
    bars = []
    for i, model in enumerate(models):
        values: list[float | None] = []
        for case, key, _ in wanted:
            found = [r.figures.get(key) for r in results if r.case == case and r.model == model]
            values.append(float(found[0]) if found and isinstance(found[0], int | float) else None)
        bars.append(svgplot.Bars(model, values, svgplot.PALETTE[i % len(svgplot.PALETTE)]))
    return svgplot.bar_chart(
        "faults-prompt",
        "Prompt answers (ms, lower is better)",
        [w[2] for w in wanted],
        bars,
        y_label="milliseconds",
    )


def _grid_html(results: list[Result]) -> str:
    models, rows = _grid(results)
    out = ["<table><tr><th>case</th>", *[f"<th>{escape(m)}</th>" for m in models], "</tr>"]
    for row in rows:
        out.append(
            f"<tr><td>{escape(row[0])}</td>"
            + "".join(f"<td class='{v.lower()}'>{escape(v)}</td>" for v in row[1:])
            + "</tr>"
        )
    return "".join(out) + "</table>"


def _html(meta: dict[str, Any], results: list[Result], models: list[str], rows: list[list[str]]) -> str:
    failed = [r for r in results if r.passed is False]
    body = [
        f"<h1>make faults: {escape(meta['id'])}</h1>",
        f"<p class='{'bad' if failed else 'good'}'>{len(failed)} of "
        f"{sum(r.passed is not None for r in results)} case runs failed.</p>",
        f"<p>{escape(_settings(meta))} Reproduce: "
        f"<code>{escape(meta['command'].strip())}</code></p>",
        "<h2>Cases</h2><table><tr><th>case</th><th>server</th><th>verdict</th><th>figures</th>"
        "<th>why not</th></tr>",
    ]
    for r in results:
        why = "; ".join(r.failed) or r.note
        body.append(
            f"<tr><td>{escape(r.case)}</td><td>{escape(r.model)}</td>"
            f"<td class='{MARK[r.passed].lower()}'>{MARK[r.passed]}</td>"
            f"<td class='fig'>{escape(_figures(r.figures))}</td><td>{escape(why)}</td></tr>"
        )
    body.append("</table>")
    body.append(f"<h2>Promptness</h2><div class='chart'>{_chart(results)}</div>")
    if rows:
        body.append(
            "<h2>Bad input: status per kind</h2><table><tr><th>kind</th>"
            + "".join(f"<th>{escape(m)}</th>" for m in models)
            + "</tr>"
        )
        for row in rows:
            same = len(set(row[1:])) == 1
            body.append(
                "<tr>"
                + f"<td>{escape(row[0])}</td>"
                + "".join(f"<td class='{'' if same else 'fail'}'>{escape(v)}</td>" for v in row[1:])
                + "</tr>"
            )
        body.append("</table>")
    style = (
        "body{font:14px system-ui,sans-serif;margin:24px;max-width:1300px}table{border-collapse:collapse;"
        "margin:8px 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
        "td.fig{font:12px monospace;max-width:640px;word-break:break-word}.pass,.good{color:#007a3d}"
        ".fail,.bad{color:#b00020;font-weight:bold}.n\\/a{color:#777}.chart svg{max-width:760px}"
        "code{background:#f3f3f3;padding:1px 4px}"
    )
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>make faults "
        f"{escape(meta['id'])}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _settings(meta: dict[str, Any]) -> str:
    timeout = meta.get("statement_timeout")  # runs before it existed have none
    return (
        f"Servers started by the suite with pool {meta['pool_size']}, acquire timeout "
        f"{meta['acquire_timeout']} s, receive deadline {meta['request_timeout']} s"
        + (f", statement timeout {timeout} s" if timeout is not None else "")
        + f"; {'quick' if meta['quick'] else 'full'} mode; {meta['seconds']} s in all."
    )
