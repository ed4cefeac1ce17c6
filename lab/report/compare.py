"""Compare two runs: `python -m lab compare reports/<A> reports/<B>` (run ids or paths).

Writes compare.html and compare.md into <reports>/compare-<A>-vs-<B>/ (beside run A; --out to choose):
the settings that differ first (usually why the figures differ), a warning when the machines differ,
then per scenario x server every figure in A and B with the change from A to B, marked better, worse
or within noise by one rule over the repetitions (lab.results.stats: a test against the margin between
runs, LAB_MARGIN_ACROSS / --margin-across, corrected for the number of figures compared), with the test's
confidence and, where nothing is marked, the change it could have seen (minimum detectable effect) and
the repetitions a side that 5 % would take. Servers or scenarios present in only one run are listed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from html import escape
from pathlib import Path
from typing import Any

from lab import files
from lab.claims import compare as claims_compare
from lab.fmt import fmt_pct
from lab.report import forest, markup, run_tables, runs, scope
from lab.report import peers as report_peers
from lab.results import bounds, headline, relative, stats
from lab.results.headline import FIGURES

COMPARED = ("cpu_per_req", "rss_per_conn", "capacity", "rps", "ok_rps", "p50", "p90", "p99", "p99_9", "max",
            "failure_rate", "rss_peak", "rss_mean", "threads", "client_conns", "db_conns", "cpu")
FLAGGED = frozenset({"better", "worse", "higher", "lower"})  # what a compare calls a change
INCLUDES = "includes the machine's move"  # a raw B/A where the row relative to peers judges
RELATIVE_LABEL = ", relative to peers"
RELATIVE_TAG = " (rel.)"  # a forest row judged relative to peers
# Different in every run, or derived from the rest (the commands are shown on their own):
IGNORED_SETTINGS = frozenset({"run_id", "run_token", "argv", "command", "planned_seconds"})
SERVER_CONFIG_IGNORED = frozenset({"port", "pid", "app_name"})  # differ on every start (app_name: per run)
MACHINE_FACTS = ("cpu_model", "cpus", "memory_bytes", "kernel", "python", "packages")  # a difference warns
RPS_FIGURES = frozenset({"rps", "ok_rps", "capacity"})

Entry = dict[str, Any]


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    if not isinstance(obj, dict):
        return {prefix: obj} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))  # an empty dict adds nothing: same as absent
        else:
            out[key] = v
    return out


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _server_configs(data: dict[str, Any]) -> dict[str, Any]:
    """Each server's /config at start (the first entry's), without what changes on every start."""
    out: dict[str, Any] = {}
    for e in data["results"]:
        cfg = e.get("server_config")
        if isinstance(cfg, dict) and e["server"] not in out:
            out[e["server"]] = {k: v for k, v in cfg.items() if k not in SERVER_CONFIG_IGNORED}
    return out


def settings_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(setting, value in A, value in B) for every setting that differs, servers' /config included."""
    # A server or scenario in one run only is listed apart, not as a pile of settings.
    both = set(_server_configs(a)) & set(_server_configs(b))
    defs = [(d["run"].get("settings") or {}).get("scenario_defs") or {} for d in (a, b)]
    common = set(defs[0]) & set(defs[1])

    def facts(data: dict[str, Any]) -> dict[str, Any]:
        run = data["run"]
        settings = {k: v for k, v in (run.get("settings") or {}).items() if k not in IGNORED_SETTINGS}
        if isinstance(settings.get("scenario_defs"), dict):
            settings["scenario_defs"] = {k: v for k, v in settings["scenario_defs"].items() if k in common}
        cal = run.get("calibration") or {}
        configs = {s: cfg for s, cfg in _server_configs(data).items() if s in both}
        return {**flatten(settings), "profile": run.get("profile"),
                "calibration.ceiling_rps": cal.get("ceiling_rps"), **flatten(configs, "server_config")}
    return _diff(facts(a), facts(b))


def machine_diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[tuple[str, Any, Any]], bool]:
    """(facts that differ, whether any of them makes the runs different machines)."""
    fa, fb = flatten(a["run"].get("machine") or {}), flatten(b["run"].get("machine") or {})
    diff = _diff(fa, fb)
    different = any(k.split(".")[0] in MACHINE_FACTS for k, _, _ in diff)
    return diff, different


def version_changes(machine: list[tuple[str, Any, Any]]) -> list[str]:
    """'aiohttp 3.9.1 -> 3.10.0' for each package whose version differs: the likely cause of a change."""
    return [f"{k.removeprefix('packages.')} {x or 'absent'} -> {y or 'absent'}"
            for k, x, y in machine if k.startswith("packages.")]


def _versions_note(c: Comparison) -> str:
    changes = version_changes(c.machine)
    return f"Package versions differ ({'; '.join(changes)}): the likely cause of a change." if changes else ""


@dataclass
class Row:
    figure: str
    a: str
    b: str
    change: str
    mark: str
    confidence: str = ""
    decision: stats.Decision | None = None  # the test behind the mark (None: not tested)
    judged: bool = True  # False: not judged (a raw B/A where the peers' row judges; outside the question)
    key: str = ""  # the figure's key (COMPARED, NET_KEY): what --figures names

    def could_see(self) -> str:
        """For a row within noise: '±14%; 5%: 23 reps' (or 5 % inside the margin); '' otherwise."""
        d = self.decision
        if self.mark != "within noise" or d is None or d.mde is None:
            return ""
        five = (f"{d.reps_for_target} reps" if d.reps_for_target is not None
                else f"inside the {d.margin:.0%} margin")
        return f"{d.could_see()}; {stats.TARGET:.0%}: {five}"


@dataclass
class Pair:
    scenario: str
    server: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def _change(change: float | None) -> str:
    if change is None:
        return "-"
    return "±0%" if change == 0 else fmt_pct(change, signed=True)


def noise(entries: Sequence[Entry]) -> dict[str, stats.Noise | None]:
    """Each compared figure's typical scatter between repetitions, pooled over all the entries given."""
    return {key: stats.pooled_noise([FIGURES[key].values(e) for e in entries]) for key in COMPARED}


NET_KEY, NET_LABEL = "cpu_per_req_net", "CPU per request, net of drift"
UNJUDGED = {NET_KEY: "the row relative to peers judges"}  # net of the probe's drift, not the scenario's move
FIGURE_KEYS = (COMPARED[0], NET_KEY, *COMPARED[1:])  # what --figures takes, in the tables' order


def net_figure(a: dict[str, Any]) -> headline.Figure | None:
    """CPU per request at run A's machine speed: each repetition's CPU per request times the speed probe's
    reading over it, over A's reference speed (run.speed). The machine's drift between the runs cancels
    in B/A; None when run A has no speed reference."""
    ref = (a["run"].get("speed") or {}).get("work_per_cpu_ms")
    if not isinstance(ref, int | float) or ref <= 0:
        return None

    def at_reference(rep: Entry) -> float | None:
        cpu = (rep.get("cost") or {}).get("cpu_us_per_request")
        speed = (rep.get("speed") or {}).get("work_per_cpu_ms")
        if isinstance(cpu, int | float) and isinstance(speed, int | float) and cpu > 0 and speed > 0:
            return float(cpu) * float(speed) / float(ref)
        return None
    return replace(FIGURES["cpu_per_req"], key=NET_KEY, label=NET_LABEL, rep_fn=at_reference)


def speed_move(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """How fast the machine ran in B relative to A (the speed probes' references), or None."""
    ra, rb = ((d["run"].get("speed") or {}).get("work_per_cpu_ms") for d in (a, b))
    if isinstance(ra, int | float) and isinstance(rb, int | float) and ra > 0:
        return float(rb) / float(ra)
    return None


def compare_entries(a: Entry, b: Entry, noises: dict[str, stats.Noise | None] | None = None,
                    margin: float = stats.DEFAULT_MARGINS[stats.ACROSS],
                    net: headline.Figure | None = None, peers: dict[str, relative.Scenario] | None = None,
                    margin_peers: float = stats.DEFAULT_MARGINS[stats.PEERS]) -> Pair:
    """Every figure of one entry in A and B. Where `peers` holds the figure's scenario (MIN_SERVERS or more
    servers), the raw row is shown with the machine's move in it, and a row relative to peers judges."""
    bound = [name for name, e in (("A", a), ("B", b)) if e.get("generator_bound")]
    rows, notes = [], []
    figures = [FIGURES[key] for key in COMPARED]
    if net is not None and net.values(a) and net.values(b):
        figures.insert(1, net)
    for fig in figures:
        key = fig.key
        if fig.value(a) is None and fig.value(b) is None:
            continue  # e.g. capacity of a closed-loop scenario
        mark, change, decision = headline.judge(fig, a, b, (noises or {}).get(key), margin, paired=False)
        if key in RPS_FIGURES and bound and mark != "not compared":
            mark = "generator-bound"
        named = ({**a, "server": "A"}, {**b, "server": "B"})
        if key == "capacity" and (reading := bounds.read(mark, *named)).bounded:  # lower bounds in A or B
            notes.append(f"capacity: {reading.state}: {reading.note}")
            mark = "not compared" if reading.state == "not judged" else mark
        rows.append(Row(fig.label, fig.fmt(fig.value(a)), fig.fmt(fig.value(b)), _change(change), mark,
                        decision.confidence() if decision is not None else "",
                        decision if mark != "generator-bound" else None, key=key))
        scenario = (peers or {}).get("cpu_per_req" if key == NET_KEY else key)
        if scenario is not None and a["server"] in scenario.servers:
            rows[-1].judged = False
            rows[-1].mark = UNJUDGED.get(key, INCLUDES) if mark in FLAGGED or mark == "within noise" else mark
            if key != NET_KEY:
                rows.append(replace(peers_row(scenario, a, b, margin_peers), key=key))
    pair = Pair(a["scenario"], a["server"], rows, notes)
    for name, e in (("A", a), ("B", b)):
        if e.get("generator_bound"):
            pair.notes.append(f"{name}: limited by the load generator ({e.get('generator_bound_reason')}); "
                              "throughput is not compared")
        pair.notes += [f"{name}: problem: {p}" for p in e.get("problems") or []]
    few = min(a.get("reps", 0), b.get("reps", 0))
    if few < stats.MIN_REPS:
        pair.notes.append(f"a run has {few} repetition(s): a difference needs {stats.MIN_REPS} a side to be "
                          "told from noise, so nothing here is marked better or worse")
    return pair


def peers_row(scenario: relative.Scenario, a: Entry, b: Entry, margin: float) -> Row:
    """The row that judges a figure relative to the scenario's other servers; B net of their move (A's
    figure times the tested ratio, so B, change and confidence agree)."""
    fig = scenario.figure
    mark, change, decision = relative.judge(scenario, a, b, margin)
    va = fig.value(a)
    b_net = va * (1 + change) if va is not None and change is not None else None
    return Row(fig.label + RELATIVE_LABEL, fig.fmt(fig.value(a)), fig.fmt(b_net), _change(change), mark,
               decision.confidence(), decision)


@dataclass
class Comparison:
    a_id: str
    b_id: str
    a: dict[str, Any]
    b: dict[str, Any]
    settings: list[tuple[str, Any, Any]]
    machine: list[tuple[str, Any, Any]]
    different_machines: bool
    pairs: list[Pair]
    only_a: list[str]
    only_b: list[str]
    margin: float = stats.DEFAULT_MARGINS[stats.ACROSS]  # between the runs: what counts as a change
    speed: float | None = None  # the machine's speed in B over A's (speed probes), None without them
    commons: list[relative.Common] = field(default_factory=list)  # each scenario's common move per figure
    margin_peers: float = stats.DEFAULT_MARGINS[stats.PEERS]
    question: scope.Scope = scope.FULL  # what was tested (the family); the rest is shown, not tested
    family: int = 0  # how many tests the correction counted


def _key(e: Entry) -> tuple[str, str]:
    return e["scenario"], e["server"]


def compare(a: dict[str, Any], b: dict[str, Any], margin: float | None = None,
            margin_peers: float | None = None, question: scope.Scope = scope.FULL) -> Comparison:
    """A compared with B; `margin` between the runs (default: LAB_MARGIN_ACROSS, else the rule's),
    `margin_peers` for a figure relative to its scenario's other servers (LAB_MARGIN_PEERS); only the
    `question`'s figures are tested (a ScopeError names what it holds that the runs do not)."""
    margin = stats.margin(stats.ACROSS) if margin is None else margin
    margin_peers = stats.margin(stats.PEERS) if margin_peers is None else margin_peers
    ea, eb = {_key(e): e for e in a["results"]}, {_key(e): e for e in b["results"]}
    order = [k for k in ea if k in eb]
    question.check(dict.fromkeys(k[1] for k in order), dict.fromkeys(k[0] for k in order), FIGURE_KEYS)
    machine, different = machine_diff(a, b)
    net = net_figure(a)
    noises = noise([*a["results"], *b["results"]])
    if net is not None:
        noises[NET_KEY] = stats.pooled_noise([net.values(e) for e in [*a["results"], *b["results"]]])
    peers = report_peers.scenarios(a, b, order)
    pairs = [compare_entries(ea[k], eb[k], noises, margin, net, peers.get(k[0]), margin_peers) for k in order]
    scope.limit(pairs, question)  # after the peers: narrowing the tested servers leaves every peer
    return Comparison(
        a_id=str(a["run"].get("id")), b_id=str(b["run"].get("id")), a=a, b=b,
        settings=settings_diff(a, b), machine=machine, different_machines=different,
        pairs=pairs,
        only_a=[f"{srv}/{scn}" for scn, srv in ea if (scn, srv) not in eb],
        only_b=[f"{srv}/{scn}" for scn, srv in eb if (scn, srv) not in ea], margin=margin,
        speed=speed_move(a, b), margin_peers=margin_peers,
        commons=[s.common(scn) for scn, figs in peers.items() for s in figs.values()],
        question=question, family=scope.as_family(pairs, FLAGGED))


def speed_note(c: Comparison) -> str:
    """What the speed probes say the machine itself did between the runs."""
    if c.speed is None:
        return ("No speed reference in one of the runs: the machine's own drift between them is not "
                "measured, and the margin between runs covers it.")
    return (f"The machine itself ran at x{c.speed:.3f} of A's speed in B (the speed probes' references, "
            f"run.speed). '{NET_LABEL}' takes that out of CPU per request, repetition by repetition.")


def rules(margin: float = stats.DEFAULT_MARGINS[stats.ACROSS]) -> str:
    floors = ", ".join(f"{FIGURES[k].label} {FIGURES[k].min_effect:.0%}" for k in COMPARED
                       if FIGURES[k].rep_path is not None and FIGURES[k].min_effect > margin)
    return (f"A figure is marked only when its repetitions show that it changed by more than the margin "
            f"between runs, {margin:.0%} ({stats.MARGIN_VARS[stats.ACROSS]}, "
            f"{stats.MARGIN_FLAGS[stats.ACROSS]}: "
            f"the machine drifts between runs), or the figure's own floor where larger ({floors}; failure "
            f"rate {headline.FAILURE_FLOOR:.1%} absolute): a t-test on "
            f"the logs of the values (with the figure's scatter pooled over all entries where that is the "
            f"larger), one-sided against that margin, at least {stats.MIN_REPS} repetitions "
            f"a side, and p under {stats.ALPHA:g} after the Benjamini-Hochberg correction over every figure "
            f"the comparison tests, so two runs of the same thing mark nothing in at least "
            f"{1 - stats.ALPHA:.0%} of comparisons. Confidence: the ratio B/A of geometric means with its "
            f"95% interval, and p. Could see: for a figure within noise, the change it would have marked "
            f"{stats.POWER:.0%} of the time (the minimum detectable effect, from the repetitions' scatter, "
            f"at "
            f"alpha {stats.ALPHA:g} divided by the number of figures tested: one change among them must pass "
            f"that), never less than the margin; and the repetitions a side that a {stats.TARGET:.0%} change "
            f"would take. Latency "
            f"percentiles need enough requests (p99: {headline.MIN_COUNT['p99']}) and, under a CPU budget, a "
            "move of more than two quota periods; p99.9 and max are shown, not judged. Connections and CPU % "
            "have no better direction: higher or lower. Throughput of a generator-bound entry is not "
            "compared; CPU per request is.")


def peers_rule(c: Comparison) -> str:
    """The relative judgement's paragraph, where a scenario had peers enough."""
    return f" {report_peers.rule(c.margin_peers)}" if c.commons else ""


def _v(v: Any) -> str:
    return run_tables.value_text(v)


def changes(c: Comparison) -> int:
    """How many figures the comparison marks changed (better, worse, higher or lower)."""
    return sum(r.mark in FLAGGED for p in c.pairs for r in p.rows)


# --- Markdown ---------------------------------------------------------------------------------------------


def render_md(c: Comparison) -> str:
    out = [f"# serverlab comparison: {c.a_id} (A) vs {c.b_id} (B)", "",
           f"A: {_v(c.a['run'].get('command'))}", "", f"B: {_v(c.b['run'].get('command'))}", "",
           "## Settings that differ", ""]
    if _versions_note(c):
        out += [f"**{_versions_note(c)}**", ""]
    if c.settings:
        out += markup.md_table(["setting", "A", "B"], [[k, _v(x), _v(y)] for k, x, y in c.settings],
                               right_from=3)
    else:
        out.append("None: both runs used the same settings.")
    out += ["", "## Machines", "", speed_note(c), ""]
    if c.different_machines:
        out += ["**Warning: the runs were made on different machines (or software); differences may come "
                "from the machine, not the servers.**", ""]
    if c.machine:
        out += markup.md_table(["fact", "A", "B"], [[k, _v(x), _v(y)] for k, x, y in c.machine], right_from=3)
    else:
        out.append("Same machine facts.")
    if c.only_a or c.only_b:
        out += ["", "## Present in one run only", ""]
        out += [f"- only in A: {x}" for x in c.only_a] + [f"- only in B: {x}" for x in c.only_b]
    out += ["", "## Figures", "", f"**{scope.family_text(c.question, c.family)}**", "",
            f"_Change is from A to B. {rules(c.margin)}{peers_rule(c)}_", ""]
    for scenario in dict.fromkeys(p.scenario for p in c.pairs):
        out += [f"### Scenario {scenario}", "", *report_peers.md_lines(c.commons, scenario)]
        for p in (p for p in c.pairs if p.scenario == scenario):
            out += [f"**{p.server}**", ""]
            out += markup.md_table(["figure", "A", "B", "change", "mark", "confidence", "could see"],
                                   [[r.figure, r.a, r.b, r.change, r.mark, r.confidence, r.could_see()]
                                    for r in p.rows])
            out += [""] + [f"- {n}" for n in p.notes] + ([""] if p.notes else [])
    return "\n".join(out) + "\n"


# --- HTML ------------------------------------------------------------------------------------------------

CSS_EXTRA = """
.forest-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
svg.forest{width:100%;height:auto;display:block}
details{margin:10px 0;border:1px solid var(--line);border-radius:8px;padding:6px 12px}
details summary{cursor:pointer;font-weight:600;font-size:15px;padding:4px 0}
.mark{display:inline-block;padding:0 8px;border-radius:9px;font-size:12px}
.mark.better{background:#e6f4ea;color:#1a7f37}.mark.worse{background:#fdeceb;color:#b42318}
.mark.within-noise,.mark.not-compared{color:#5b6470}.mark.higher,.mark.lower{background:#eef1f5;color:#1f2328}
.mark.generator-bound{background:#fff6d6;color:#8a5a00}.mark.includes-the-machines-move{color:#8c959f}
.common{background:#f4f0fb;border-radius:6px;padding:4px 12px;margin:6px 0}
.warn{background:#fff6d6;color:#8a5a00;border-radius:6px;padding:10px 14px;font-weight:600}
.pairs{display:grid;grid-template-columns:repeat(auto-fit,minmax(700px,1fr));gap:14px}
.pair h3{margin:4px 0}
td.conf{color:#5b6470;font-size:12px;white-space:nowrap}
"""


def _css(mark: str) -> str:
    return mark.replace(" ", "-").replace("'", "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return markup.html_table(header, rows, cls="kv")


def render_html(c: Comparison) -> str:
    h: list[str] = []
    add = h.append
    title = f"serverlab comparison: {c.a_id} (A) vs {c.b_id} (B)"
    add(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{markup.CSS}{CSS_EXTRA}</style></head><body><main><header><h1>{escape(title)}</h1>"
        f'<p class="sub">A: <code>{escape(_v(c.a["run"].get("command")))}</code><br>'
        f'B: <code>{escape(_v(c.b["run"].get("command")))}</code></p></header>')
    add(forest_section(c))
    add('<section class="card" id="settings"><h2>Settings that differ</h2>')
    if _versions_note(c):
        add(f'<p class="warn" data-warning="versions">{escape(_versions_note(c))}</p>')
    add(_table(["setting", "A", "B"], [[k, _v(x), _v(y)] for k, x, y in c.settings]) if c.settings
        else "<p>None: both runs used the same settings.</p>")
    add('</section><section class="card" id="machines"><h2>Machines</h2>')
    if c.different_machines:
        add('<p class="warn" data-warning="different-machines">The runs were made on different machines (or '
            "software): differences may come from the machine, not the servers.</p>")
    add(f'<p data-speed="{"" if c.speed is None else f"{c.speed:.4f}"}">{escape(speed_note(c))}</p>')
    add(_table(["fact", "A", "B"], [[k, _v(x), _v(y)] for k, x, y in c.machine]) if c.machine
        else "<p>Same machine facts.</p>")
    add("</section>")
    if c.only_a or c.only_b:
        add('<section class="card" id="one-run-only"><h2>Present in one run only</h2><ul class="notes">'
            + "".join(f"<li>only in A: {escape(x)}</li>" for x in c.only_a)
            + "".join(f"<li>only in B: {escape(x)}</li>" for x in c.only_b) + "</ul></section>")
    add(f'<section class="card" id="figures"><h2>Figures</h2><p data-family="{c.family}"><b>'
        f'{escape(scope.family_text(c.question, c.family))}</b></p><p class="meta">Change is from A to B. '
        f"{escape(rules(c.margin) + peers_rule(c))}</p>")
    for scenario in dict.fromkeys(p.scenario for p in c.pairs):
        mine = [p for p in c.pairs if p.scenario == scenario]
        marked = scope.fold(mine, sum(r.mark in FLAGGED for p in mine for r in p.rows))
        moved = "; ".join(f"{m.figure} x{m.ratio:.3g}" for m in report_peers.of(c.commons, scenario))
        add(f'<details id="{markup.anchor(scenario)}"><summary>Scenario {escape(scenario)}: {marked} '
            f"across {len(mine)} server(s)"
            + (f"; {report_peers.COMMON}: {escape(moved)}" if moved else "") + "</summary>"
            + report_peers.html_block(c.commons, scenario) + '<div class="pairs">')
        for p in mine:
            rows = "".join(
                f'<tr data-figure="{escape(r.figure)}"><td>{escape(r.figure)}</td><td>{escape(r.a)}</td>'
                f"<td>{escape(r.b)}</td><td>{escape(r.change)}</td>"
                f'<td><span class="mark {_css(r.mark)}">{escape(r.mark)}</span></td>'
                f'<td class="conf">{escape(r.confidence)}</td>'
                f'<td class="conf">{escape(r.could_see())}</td></tr>'
                for r in p.rows)
            notes = "".join(f'<li class="warning">{escape(n)}</li>' for n in p.notes)
            add(f'<div class="pair" data-pair="{escape(p.server)}/{escape(p.scenario)}">'
                f"<h3>{escape(p.server)}</h3>"
                '<div class="table-wrap"><table><thead><tr><th>figure</th><th>A</th><th>B</th><th>change</th>'
                "<th>mark</th><th>confidence</th><th>could see</th></tr></thead>"
                f"<tbody>{rows}</tbody></table></div>"
                + (f'<ul class="notes">{notes}</ul>' if notes else "") + "</div>")
        add("</div></details>")
    add("</section></main></body></html>")
    return "".join(h)


FOREST = (("cpu_per_req", "CPU per request"), ("throughput", "throughput (ok rps, or capacity at the SLO)"),
          ("p99", "p99 latency"), ("rss_per_conn", "memory per connection"), (NET_KEY, NET_LABEL))


def forest_rows(c: Comparison, column: str) -> list[forest.Row]:
    """Each entry's B/A ratio of one headline figure, as the comparison judged it."""
    labels = ({FIGURES["ok_rps"].label, FIGURES["capacity"].label} if column == "throughput"
              else {NET_LABEL} if column == NET_KEY else {FIGURES[column].label})
    out = []
    for p in c.pairs:
        found = [r for r in p.rows if r.figure in labels]
        relative_rows = [r for r in p.rows if r.figure.removesuffix(RELATIVE_LABEL) in labels
                         and r.figure.endswith(RELATIVE_LABEL)]
        found = relative_rows or found
        row = next((r for r in found if r.figure == FIGURES["capacity"].label), found[0] if found else None)
        if row is None or row.mark == scope.NOT_TESTED:  # outside the question: in the tables only
            continue
        d = row.decision
        seen = f"could see {row.could_see()}" if row.could_see() else ""
        note = "; ".join(x for x in (row.mark, row.confidence, seen) if x)
        tag = RELATIVE_TAG if row.figure.endswith(RELATIVE_LABEL) else ""
        out.append(forest.Row(f"{p.server}/{p.scenario}{tag}", d.ratio if d else None, d.ci if d else None,
                              row.mark, note))
    if column != NET_KEY:
        out += report_peers.forest_rows(c.commons, "ok_rps" if column == "throughput" else column)
    return out


def forest_section(c: Comparison) -> str:
    """The forest plots compare.html opens with: one per headline figure."""
    def band(key: str, rows: Sequence[forest.Row]) -> float:  # the margin the figure was judged against:
        judged = {"throughput": "ok_rps", NET_KEY: "cpu_per_req"}.get(key, key)  # its own floor if larger
        peers = any(r.label.endswith(RELATIVE_TAG) for r in rows)
        return max(c.margin_peers if peers else c.margin, FIGURES[judged].min_effect)
    plots = "".join("<figure>" + forest.forest(f"forest-{k}", name, rows, band(k, rows)) + "</figure>"
                    for k, name in FOREST if scope.drawn(rows := forest_rows(c, k), c.question, k != NET_KEY))
    note = (f"Each entry's ratio B/A of the geometric means with its 95% interval; the shaded band is the "
            f"margin between runs (±{c.margin:.0%}, {stats.MARGIN_VARS[stats.ACROSS]}, or the figure's own "
            "floor where larger): a change inside it is no change. Filled dots are marked changes (green "
            "better, red worse); hollow ones are within noise (hover for what they could have seen). The "
            "interval is for one figure alone; the test corrects for all the figures tested, so an "
            f"interval just clear of the band can stay unmarked. {changes(c)} figure(s) marked. Every "
            "figure, folded by scenario, is below.")
    if c.commons:
        note += (f" Rows tagged{RELATIVE_TAG} are B/A relative to the scenario's other servers, their band "
                 f"the margin relative to peers (±{c.margin_peers:.0%}, {stats.MARGIN_VARS[stats.PEERS]}); "
                 f"purple diamonds are each scenario's {report_peers.COMMON} ({report_peers.WHAT}).")
    return (f'<section class="card" id="forest"><h2>B / A at a glance</h2><p><b>'
            f'{escape(scope.family_text(c.question, c.family))}</b></p><p class="meta">{escape(note)}</p>'
            f'<div class="forest-grid">{plots}</div></section>')


def _could_see_headline(pair: Pair) -> str:
    """' (could see: CPU per request ±14%; 5%: 23 reps, ...)' for the headline figures of an unmarked pair."""
    seen = [f"{r.figure} {r.could_see()}" for r in pair.rows
            if r.could_see() and r.figure in HEADLINE_LABELS]
    return f" (could see: {', '.join(seen)})" if seen else ""


HEADLINE_LABELS = frozenset(FIGURES[k].label + suffix for k in
                            ("cpu_per_req", "ok_rps", "capacity", "p99", "rss_per_conn")
                            for suffix in ("", RELATIVE_LABEL))


# --- entry point -------------------------------------------------------------------------------------------


def default_out(a_dir: Path, b_dir: Path) -> Path:
    return a_dir.parent / f"compare-{a_dir.name}-vs-{b_dir.name}"


def build(a_arg: str | Path, b_arg: str | Path, out: Path | None = None, margin: float | None = None,
          margin_peers: float | None = None,
          question: scope.Scope = scope.FULL) -> tuple[Path, Path, Comparison]:
    a_dir, b_dir = runs.find_run(a_arg), runs.find_run(b_arg)
    if a_dir == b_dir:
        raise runs.ReportError(f"A and B are the same run ({a_dir}); pass two different runs")
    c = compare(runs.load_results(a_dir), runs.load_results(b_dir), margin, margin_peers, question)
    out = out or default_out(a_dir, b_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "compare.html", out / "compare.md"
    files.write_text(html_path, render_html(c))
    files.write_text(md_path, render_md(c))
    return html_path, md_path, c


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="run A: reports/<run-id> or a run id")
    p.add_argument("b", help="run B: reports/<run-id> or a run id")
    p.add_argument("--out", type=Path, help="output folder (default: compare-<A>-vs-<B> beside run A)")
    stats.add_margin_flag(p, stats.ACROSS)
    stats.add_margin_flag(p, stats.PEERS)
    scope.add_flags(p, FIGURE_KEYS)
    args = p.parse_args(argv)
    try:
        margin = stats.margin(stats.ACROSS, args.margin_across)
        margin_peers = stats.margin(stats.PEERS, args.margin_peers)
    except ValueError as exc:
        p.error(str(exc))
    if claims_compare.both_claims(args.a, args.b):  # two `make claims` runs, not load runs
        if scope.from_args(args) != scope.FULL:
            p.error("--servers, --scenarios and --figures (LAB_COMPARE_*) apply to load runs, not claims")
        out = ["--out", str(args.out)] if args.out else []
        return claims_compare.main([str(args.a), str(args.b), *out])
    try:
        html_path, md_path, c = build(args.a, args.b, args.out, margin, margin_peers, scope.from_args(args))
    except (runs.ReportError, scope.ScopeError) as exc:
        print(f"lab compare: {exc}", file=sys.stderr)
        return 2
    if _versions_note(c):
        print(_versions_note(c))
    if c.settings:
        print("settings that differ: " + ", ".join(k for k, _, _ in c.settings))
    if c.different_machines:
        print("warning: the runs were made on different machines: "
              + ", ".join(k for k, _, _ in c.machine if k.split(".")[0] in MACHINE_FACTS))
    for x in c.only_a:
        print(f"only in A: {x}")
    for x in c.only_b:
        print(f"only in B: {x}")
    for pair in c.pairs:
        marked = [f"{r.figure} {r.mark} ({r.change}; {r.confidence})" for r in pair.rows if r.mark in FLAGGED]
        print(f"{pair.server}/{pair.scenario}: {'; '.join(marked) if marked else scope.unmarked(pair)}"
              + ("" if marked else _could_see_headline(pair)))
    for line in report_peers.terminal(c.commons):
        print(line)
    print(speed_note(c))
    print(scope.family_text(c.question, c.family))
    print(f"{changes(c)} figure(s) marked changed across {len(c.pairs)} entries (margin between runs "
          f"{c.margin:.0%}, {stats.MARGIN_VARS[stats.ACROSS]}"
          + (f"; relative to peers {c.margin_peers:.0%}, {stats.MARGIN_VARS[stats.PEERS]})" if c.commons
             else ")"))
    print(f"wrote {html_path}\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
