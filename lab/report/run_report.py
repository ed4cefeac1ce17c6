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

import argparse
import os
import sys
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from lab.files import write_text
from lab.fmt import fmt_num
from lab.report import verdict_matrix
from lab.report.fidelity_rows import fidelity_rows, speed_rows
from lab.report.markup import CSS, anchor, head_cells, html_table, kv_table, md_table
from lab.report.run_plots import colors, scenario_plots
from lab.report.run_tables import (
    CALIBRATION_NOTE,
    COLUMNS,
    SCENARIO_DEF_HEADER,
    STEP_HEADER,
    all_warnings,
    calibration_rows,
    machine_rows,
    rebuild_command,
    scenario_def_rows,
    scenario_meta,
    scenario_notes,
    settings_rows,
    step_rows,
    table_rows,
    tie_rule,
    value_text,
    variant_lines,
    when,
)
from lab.report.runs import Entry, ReportError, by_scenario, find_run, load_results, reports_dir
from lab.results import stats
from lab.results.headline import Verdict, verdict

# --- HTML ---------------------------------------------------------------------------------------------------

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


def server_table(entries: Sequence[Entry], palette: dict[str, str]) -> str:
    """The scenario's table: a colour dot per server (as in the charts), notes as tags."""
    body = []
    for row in table_rows(entries):
        dot = f'<span class="dot" style="background:{palette.get(row[0], "#888")}"></span>'
        tags = "".join(f'<span class="tag {"bound" if t == "generator-bound" else "problem"}">'
                       f"{escape(t)}</span>" for t in row[-1].split(", ") if t)
        cells = [dot + escape(row[0]), *(escape(c) for c in row[1:-1]), tags]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = head_cells([c.header for c in COLUMNS], [c.hint for c in COLUMNS])
    return (f'<div class="table-wrap"><table class="servers"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _status(data: dict[str, Any]) -> str:
    return "clean run" if data.get("ok") else f"{len(data.get('problems') or [])} problem(s)"


def _subtitle(data: dict[str, Any]) -> str:
    run = data["run"]
    topology = ((run.get("settings") or {}).get("topology") or {}).get("text")  # where each part ran
    return (f"profile {value_text(run.get('profile'))} · servers {', '.join(data.get('servers') or [])} · "
            f"started {when(run.get('started_at'))} · {fmt_num(run.get('wall_seconds'))} s wall"
            + (f" · {topology}" if topology else ""))


def latest_faults(run_dir: Path, page: str = "faults.html") -> tuple[str, str] | None:
    """(link relative to run_dir, text) to the newest `make faults` report beside it, if any."""
    found = sorted(reports_dir().glob(f"faults-*/{page}"))
    if not found:
        return None
    return os.path.relpath(found[-1], run_dir), f"latest make faults run: {found[-1].parent.name}"


def _calibration(run: dict[str, Any]) -> list[tuple[str, str]]:
    """The generator's calibration, the machine's speed over this run, and the latest fidelity check."""
    return [*calibration_rows(run.get("calibration")), *speed_rows(run.get("speed")),
            *fidelity_rows(reports_dir())]


def render_html(data: dict[str, Any], run_dir: Path, margin: float | None = None) -> str:
    run = data["run"]
    run_id = str(run.get("id") or run_dir.name)
    palette = colors(list(dict.fromkeys([*(data.get("servers") or []),
                                         *(e["server"] for e in data["results"])])))
    groups = by_scenario(data)
    margin = verdict_matrix.margin_of(data, margin)
    verdicts = {s: verdict(s, es, margin) for s, es in groups}
    problems, warnings = data.get("problems") or [], all_warnings(data)
    h: list[str] = []
    add = h.append
    add('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>serverlab report {escape(run_id)}</title><style>{CSS}{verdict_matrix.CSS}</style></head>"
        "<body><main>")
    add(f'<header><h1>serverlab report: {escape(run_id)}</h1><p class="sub">{escape(_subtitle(data))} · '
        f'<span class="status {"ok" if data.get("ok") else "problem"}">{escape(_status(data))}</span></p>'
        "</header>")
    add("".join(f'<p class="meta">Variant {escape(line)}</p>' for line in variant_lines(data)))
    add(claims_link(run_dir))

    # The page opens with the verdict matrix; the verdicts in words and the contents follow it.
    add('<section class="card" id="verdicts"><h2>Verdicts</h2>')
    add(verdict_matrix.html(list(data["results"]), margin))
    add("</section>")
    toc = [("verdicts", "Verdicts"), ("in-words", "Verdicts in words")]
    if problems or warnings:
        toc.append(("problems", "Problems and warnings"))
    toc += [(anchor(s), f"Scenario {s}") for s, _ in groups]
    toc += [("settings", "Settings"), ("machine", "Machine"), ("calibration", "Calibration"),
            ("reproduce", "Reproduce")]
    add('<nav class="card toc"><strong>Contents</strong><ol>'
        + "".join(f'<li><a href="#{a}">{escape(t)}</a></li>' for a, t in toc) + "</ol></nav>")
    add('<section class="card" id="in-words"><h2>Verdicts in words</h2><dl class="verdicts">')
    add("".join(f'<dt><a href="#{anchor(s)}">{escape(s)}</a></dt><dd>{escape(verdicts[s].text)}</dd>'
                for s, _ in groups))
    add(f'</dl><p class="meta">{escape(tie_rule(margin))}</p></section>')
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
        f'<p class="meta">{escape(CALIBRATION_NOTE)}</p>{kv_table(_calibration(run))}'
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


def render_md(data: dict[str, Any], run_dir: Path | None = None, margin: float | None = None) -> str:
    run = data["run"]
    run_id = str(run.get("id"))
    groups = by_scenario(data)
    margin = verdict_matrix.margin_of(data, margin)
    verdicts: dict[str, Verdict] = {s: verdict(s, es, margin) for s, es in groups}
    problems, warnings = data.get("problems") or [], all_warnings(data)
    out = [f"# serverlab report: {run_id}", "", f"{_subtitle(data)} · {_status(data)}", ""]
    described = variant_lines(data)
    out += [*(f"- Variant {line}" for line in described), ""] if described else []
    faults = latest_faults(run_dir, "faults.md") if run_dir else None
    if faults:
        out += [f"Reliability: [{faults[1]}]({faults[0]})", ""]
    out += ["## Verdicts", "", *verdict_matrix.md(list(data["results"]), margin), "", "In words:", ""]
    out += [f"- **{s}**: {verdicts[s].text}" for s, _ in groups]
    out += ["", f"_{tie_rule(margin)}_", ""]
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
            *md_table(["", "value"], _calibration(run), right_from=2)]
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


def build(run_dir: Path, margin: float | None = None) -> tuple[Path, Path]:
    """Write index.html and summary.md into the run folder; returns their paths. `margin`: between
    servers (default: the one results.json's verdicts were built with)."""
    data = load_results(run_dir)
    html_path, md_path = run_dir / "index.html", run_dir / "summary.md"
    for path, text in ((html_path, render_html(data, run_dir, margin)),
                       (md_path, render_md(data, run_dir, margin))):
        write_text(path, text)
    return html_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder (reports/<run-id>, reports/latest) or a run id")
    stats.add_margin_flag(p, stats.WITHIN)
    args = p.parse_args(argv)
    try:
        margin = stats.margin(stats.WITHIN, args.margin_within) if args.margin_within else None
    except ValueError as exc:
        p.error(str(exc))
    try:
        run_dir = find_run(args.run)
        html_path, md_path = build(run_dir, margin)
        data = load_results(run_dir)
    except ReportError as exc:
        print(f"lab report: {exc}", file=sys.stderr)
        return 2
    for s, entries in by_scenario(data):
        print(f"{s}: {verdict(s, entries, verdict_matrix.margin_of(data, margin)).text}")
    print(f"wrote {html_path}\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
