"""`make selfcheck`'s power curve: how often the lab's rule detects a known CPU change, and marks A/A pairs.

A try is one ordinary load run of one server and scenario in which the same server runs several times
under names of its own, interleaved repetition by repetition as different servers are: the baseline,
copies of it with nothing changed (A/A), and copies with LAB_EXTRA_CPU_US set to +5 %, +10 %, +20 %
(by default) of the baseline's CPU per request (taken from a short pilot run first, or given). Each
copy is judged against the baseline by the rule of the run's own verdicts (lab.results.headline.judge)
on CPU per request:
- within a run: a detection is "worse" (more CPU per request); an A/A pair marked either way is a false
  positive;
- between runs, as `make compare` judges two runs (lab.report.compare, its family correction included):
  the baseline of one try against the changed copy of the next try, and against the next try's baseline
  (A/A between runs), each beside the unchanged copies both tries ran: with two or more of them, compare
  judges the pair relative to those peers (lab.results.relative), as it judges a scenario of a default
  run's four servers.
Each rate is given with its 95 % interval (Clopper-Pearson, scipy).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats as scipy_stats

from lab.fmt import fmt_us
from lab.load import plan, runner
from lab.load.settings import RunError, Settings, say
from lab.report import compare
from lab.results import headline, stats

EFFECTS = (0.05, 0.10, 0.20)
FIGURE = headline.FIGURES["cpu_per_req"]
CHANGED = ("better", "worse")  # the marks of a change (for CPU per request: less, more)
PILOT_REPS = 2


@dataclass(frozen=True)
class Design:
    server: str
    scenario: str
    tries: int
    effects: tuple[float, ...]
    aa_pairs: int  # A/A pairs within runs, over all tries
    base_us: float | None = None  # the baseline's CPU per request; None: a pilot run measures it

    @property
    def aa_per_try(self) -> int:
        return math.ceil(self.aa_pairs / self.tries) if self.tries else 0

    def aa_in_try(self, index: int) -> int:
        """A/A pairs in try `index` (1-based): aa_per_try until aa_pairs are placed."""
        return max(0, min(self.aa_per_try, self.aa_pairs - (index - 1) * self.aa_per_try))

    def labels(self, aa: int) -> dict[str, float]:
        """The servers of a try with `aa` A/A pairs, by name -> extra CPU as a share of the baseline's
        (0: an unchanged copy)."""
        out = {self.server: 0.0}
        out.update({f"{self.server}-same{i}": 0.0 for i in range(1, 2 * aa)})
        out.update({effect_label(self.server, e): e for e in self.effects})
        return out

    def aa_names(self, aa: int) -> list[tuple[str, str]]:
        """The A/A pairs of a try: the baseline and its first copy, then copies two by two."""
        names = [self.server, *(f"{self.server}-same{i}" for i in range(1, 2 * aa))]
        return [(names[i], names[i + 1]) for i in range(0, len(names) - 1, 2)]


def effect_label(server: str, effect: float) -> str:
    return f"{server}-plus{effect * 100:g}pct"


def parse_effects(raw: str) -> tuple[float, ...]:
    """'5,10,20' (per cent) -> (0.05, 0.10, 0.20); a RunError naming the knob otherwise."""
    out = []
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not 0 < value <= 1000:
            raise RunError(f"--power-effects / LAB_SELFCHECK_POWER_EFFECTS: {part!r} is not a per cent from "
                           "above 0 to 1000; give a list like 5,10,20")
        out.append(value / 100)
    if not out:
        raise RunError("--power-effects / LAB_SELFCHECK_POWER_EFFECTS: give at least one effect, "
                       "e.g. 5,10,20")
    return tuple(sorted(set(out)))


def try_settings(base: Settings, d: Design, base_us: float, index: int) -> Settings:
    variants = {}
    labels = d.labels(d.aa_in_try(index))
    for name, share in labels.items():
        if name != d.server:
            extra = {"LAB_EXTRA_CPU_US": f"{share * base_us:.3f}"} if share else {}
            variants[name] = (d.server, extra)
    return base.replace(servers=tuple(labels), scenarios=(d.scenario,), variants=variants,
                        run_id=f"power-{index}")


def pilot_settings(base: Settings, d: Design) -> Settings:
    """A short run for the baseline's CPU per request: its median needs no rounds added."""
    return base.replace(servers=(d.server,), scenarios=(d.scenario,), reps=PILOT_REPS, resolve=0.0,
                        max_reps=PILOT_REPS, run_id="power-pilot")


def planned_seconds(base: Settings, d: Design) -> float:
    pilot = plan.total_seconds(pilot_settings(base, d), False) if d.base_us is None else 0.0
    tries = (try_settings(base, d, 1.0, i) for i in range(1, d.tries + 1))
    return pilot + sum(plan.total_seconds(s, False) for s in tries)


def run_one(s: Settings, folder: Path) -> dict[str, Any]:
    """One load run into `folder`; its results.json (a RunError when there is none)."""
    code = runner.run(s.replace(reports_dir=folder), link_latest=False)
    path = folder / s.run_id / "results.json"
    if not path.is_file():
        raise RunError(f"run {s.run_id} exited {code} without results; read {folder / s.run_id}")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def entries(data: dict[str, Any], scenario: str) -> dict[str, dict[str, Any]]:
    return {e["server"]: e for e in data["results"] if e["scenario"] == scenario}


def rate(hits: int, n: int) -> dict[str, Any]:
    """hits of n with its 95 % Clopper-Pearson interval."""
    if n == 0:
        return {"hits": 0, "n": 0, "rate": None, "ci95": None}
    ci = scipy_stats.binomtest(hits, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"hits": hits, "n": n, "rate": round(hits / n, 3), "ci95": [round(ci.low, 3), round(ci.high, 3)]}


@dataclass
class Tally:
    """Judgements of one kind (an effect size, or A/A) within runs or between runs."""

    marks: list[str] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # B/A of the medians, as measured
    mdes: list[float] = field(default_factory=list)  # the change each test could see (80 % power)
    margins: set[float] = field(default_factory=set)
    details: list[str] = field(default_factory=list)

    def add(self, judged: tuple[str, stats.Decision | None], a: dict[str, Any], b: dict[str, Any],
            where: str) -> None:
        mark, decision = judged
        va, vb = FIGURE.value(a), FIGURE.value(b)
        if va and vb:
            self.ratios.append(vb / va)
        if decision is not None and decision.mde is not None:
            self.mdes.append(decision.mde)
            self.margins.add(decision.margin)
        self.marks.append(mark)
        said = decision.confidence() if decision is not None else ""
        self.details.append(f"{where}: {FIGURE.fmt(va)} -> {FIGURE.fmt(vb)}: {mark} ({said})")

    def summary(self, detect: bool) -> dict[str, Any]:
        hits = sum(m == "worse" for m in self.marks) if detect else sum(m in CHANGED for m in self.marks)
        judged = [m for m in self.marks if m != "not compared"]
        out = rate(hits, len(judged))
        out["not_compared"] = len(self.marks) - len(judged)
        if detect:
            out["wrong_way"] = sum(m == "better" for m in self.marks)
        out["measured_ratio_median"] = round(statistics.median(self.ratios), 3) if self.ratios else None
        out["could_see_median"] = round(statistics.median(self.mdes), 3) if self.mdes else None
        out["margins"] = sorted(self.margins)
        out["judgements"] = self.details
        return out


def margin_within(run: dict[str, Any]) -> float:
    """The margin the run's own verdicts were judged with (else today's, LAB_MARGIN_WITHIN)."""
    recorded = ((run.get("verdicts") or {}).get("rule") or {}).get("margin")
    return float(recorded) if isinstance(recorded, int | float) else stats.margin(stats.WITHIN)


def judged_within(run: dict[str, Any], a: dict[str, Any], b: dict[str, Any]
                  ) -> tuple[str, stats.Decision | None]:
    """As the run's verdicts judge two of its servers (CPU per request at the run's reference speed where
    every repetition has its reading: headline.cpu_figure)."""
    mark, _change, decision = headline.judge(headline.cpu_figure([a, b]), a, b, margin=margin_within(run))
    return mark, decision


def judged_between(run_a: dict[str, Any], a: dict[str, Any], run_b: dict[str, Any],
                   b: dict[str, Any], peers: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
                   ) -> tuple[str, stats.Decision | None]:
    """As `make compare` judges one server of two runs: b under a's name, beside `peers` (the same
    unchanged copies in A and in B; compare judges relative to them when there are two or more)."""
    one_a = {**run_a, "results": [a, *peers[0]]}
    one_b = {**run_b, "results": [{**b, "server": a["server"]}, *peers[1]]}
    pair = next(p for p in compare.compare(one_a, one_b).pairs if p.server == a["server"])
    found = {r.figure: r for r in pair.rows}
    row = found.get(FIGURE.label + compare.RELATIVE_LABEL) or found.get(FIGURE.label)
    return (row.mark, row.decision) if row is not None else ("not compared", None)


def unchanged_peers(server: str, prev: dict[str, Any], now: dict[str, Any]
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The unchanged copies (not the baseline) both tries ran, in A and in B."""
    names = [n for n in prev if n.startswith(f"{server}-same") and n in now]
    return [prev[n] for n in names], [now[n] for n in names]


def measure(base: Settings, d: Design, folder: Path) -> dict[str, Any]:
    """The pilot (unless the baseline is given), every try, then the curve."""
    base_us = d.base_us
    if base_us is None:
        say(f"\n== power curve: a pilot run of {d.server}/{d.scenario} ({PILOT_REPS} repetitions) for its "
            "CPU per request, the size the effects are taken of")
        pilot = run_one(pilot_settings(base, d), folder)
        base_us = FIGURE.value(entries(pilot, d.scenario).get(d.server, {}))
        if not base_us:
            raise RunError(f"the pilot run measured no CPU per request for {d.server}/{d.scenario}; read "
                           f"{folder / 'power-pilot'}")
    extra = ", ".join(f"+{e:.0%} = {fmt_us(e * base_us)}" for e in d.effects)
    say(f"\n== power curve: {d.tries} tries of {d.server}/{d.scenario}, each one run of the server several "
        f"times over, interleaved ({base.reps} repetitions each): baseline {fmt_us(base_us)} per request, "
        f"extra CPU {extra}; {d.aa_pairs} A/A pairs, up to {d.aa_per_try} a try")
    runs: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    unchanged: list[float] = []  # the unchanged copies' CPU per request, every try so far
    for index in range(1, d.tries + 1):
        if unchanged and d.base_us is None:  # sized where it is measured: the pilot ran alone, earlier
            base_us = statistics.median(unchanged)
            say(f"\n-- power curve try {index}/{d.tries}: effects sized from the {len(unchanged)} unchanged "
                f"copies so far, {fmt_us(base_us)} per request (+10% = {fmt_us(0.1 * base_us)})")
        else:
            say(f"\n-- power curve try {index}/{d.tries}")
        try:
            data = run_one(try_settings(base, d, base_us, index), folder)
        except RunError as exc:
            problems.append(str(exc))
            continue
        runs.append((index, data))
        same = {n: e for n, e in entries(data, d.scenario).items()
                if n == d.server or n.startswith(f"{d.server}-same")}
        unchanged += [v for e in same.values() if (v := FIGURE.value(e))]
    curve = judge_tries(d, runs, folder, problems)
    curve["base_from"] = ("the pilot run for try 1, then the unchanged copies of the tries before"
                          if d.base_us is None else "given (--power-base-us)")
    return curve


def judge_tries(d: Design, runs: list[tuple[int, dict[str, Any]]], folder: Path,
                problems: list[str]) -> dict[str, Any]:
    """The curve from the tries' results: detections per effect and A/A marks, within and between runs,
    by the rules as they are now (so the same runs can be judged again after the rule changes)."""
    within = {e: Tally() for e in d.effects}
    aa_within, aa_between = Tally(), Tally()
    between = {e: Tally() for e in d.effects}
    judged: list[dict[str, Any]] = []
    reps_run: list[int] = []  # per try: the baseline's repetitions, rounds added included
    extra: dict[str, float] = {}
    for index, data in runs:
        found = entries(data, d.scenario)
        aa = (sum(n.startswith(f"{d.server}-same") for n in found) + 1) // 2  # as many as the try ran
        missing = [n for n in d.labels(aa) if n not in found]
        if missing:
            where = folder / f"power-{index}"
            problems.append(f"try {index}: no results for {', '.join(missing)}; read {where}")
            continue
        problems += [f"try {index}: {p}" for p in data.get("problems") or []]
        a = found[d.server]
        reps_run.append(int(a.get("reps") or 0))
        for e in d.effects:
            b = found[effect_label(d.server, e)]
            within[e].add(judged_within(data, a, b), a, b, f"try {index}")
        for x, y in d.aa_names(aa):
            aa_within.add(judged_within(data, found[x], found[y]), found[x], found[y],
                          f"try {index} {x} vs {y}")
        if judged:
            prev_run = judged[-1]
            prev_all = entries(prev_run, d.scenario)
            prev = prev_all[d.server]
            step = f"try {index - 1} -> {index}"
            peers = unchanged_peers(d.server, prev_all, found)
            for e in d.effects:
                b = found[effect_label(d.server, e)]
                between[e].add(judged_between(prev_run, prev, data, b, peers), prev, b, step)
            aa_between.add(judged_between(prev_run, prev, data, a, peers), prev, a, step)
        judged.append(data)
        settings = read_json(folder / f"power-{index}" / "settings.json")
        extra = {f"{e:.0%}": float(settings["variants"][effect_label(d.server, e)]["server_env"]
                                   ["LAB_EXTRA_CPU_US"]) for e in d.effects}
    first = read_json(folder / f"power-{runs[0][0]}" / "settings.json") if runs else {}
    base_us = next(iter(extra.values())) / d.effects[0] if extra else None
    return {
        "server": d.server, "scenario": d.scenario, "tries": d.tries, "tries_run": len(judged),
        "reps": first.get("reps"), "reps_run": reps_run, "resolve": first.get("resolve"),
        "duration": first.get("duration"), "warmup": first.get("warmup"),
        "server_cpu": first.get("server_cpu"), "profile": first.get("profile"),
        "base_cpu_us_per_request": round(base_us, 2) if base_us else None,
        "extra_cpu_us": extra,
        "within_run": {f"{e:.0%}": within[e].summary(True) for e in d.effects},
        "within_run_aa": aa_within.summary(False),
        "between_runs": {f"{e:.0%}": between[e].summary(True) for e in d.effects},
        "between_runs_aa": aa_between.summary(False),
        "problems": problems,
    }


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def rejudge(folder: Path) -> dict[str, Any]:
    """The curve of the tries already in `folder` (a self-check's), judged by today's rules; the design
    is read back from the runs' settings.json (names and knobs of the copies)."""
    tries = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("power-*")
                   if p.name.split("-")[1].isdigit() and (p / "results.json").is_file())
    if not tries:
        raise RunError(f"{folder} holds no power curve tries (power-<n>/results.json)")
    settings = read_json(tries[0][1] / "settings.json")
    server = next(n for n in settings["servers"] if n not in settings["variants"])
    effects = tuple(sorted(float(n.rsplit("plus", 1)[1].removesuffix("pct")) / 100
                           for n in settings["variants"] if n.startswith(f"{server}-plus")))
    copies = [len([n for n in read_json(p / "settings.json")["servers"] if "-same" in n]) for _, p in tries]
    d = Design(server, settings["scenarios"][0], len(tries), effects, sum((c + 1) // 2 for c in copies))
    curve = judge_tries(d, [(i, read_json(p / "results.json")) for i, p in tries], folder, [])
    curve["base_from"] = f"judged again from {folder}"
    return curve


def _rate_text(r: dict[str, Any]) -> str:
    if not r["n"]:
        return "none judged"
    lo, hi = r["ci95"]
    return f"{r['hits']}/{r['n']} ({r['rate']:.0%}, 95 % interval {lo:.0%}-{hi:.0%})"


def _margins(r: dict[str, Any]) -> str:
    return "/".join(f"{m:.0%}" for m in r["margins"]) or "-"


def _pct(x: float | None) -> str:
    return f"±{x:.0%}" if x is not None else "-"


def render_md(curve: dict[str, Any]) -> list[str]:
    """The curve as markdown lines for selfcheck.md."""
    run = sorted(curve.get("reps_run") or [])
    added = (f" and rounds added until each copy could see {curve['resolve']:.0%}: {run[0]}-{run[-1]} ran, "
             f"median {statistics.median(run):g}" if curve.get("resolve") and run else "")
    out = [f"- {curve['tries_run']} of {curve['tries']} tries of {curve['server']}/{curve['scenario']}, "
           f"{curve['reps']} interleaved repetitions{added} of {curve['duration']:g}s each per copy (profile "
           f"{curve['profile']}, {curve['server_cpu']} core), baseline CPU per request "
           f"{fmt_us(curve['base_cpu_us_per_request'])} ({curve['base_from']})", "",
           "| change | within a run: detected | measured B/A | between runs (make compare): detected |",
           "|---|---|---|---|"]
    for key, r in curve["within_run"].items():
        b = curve["between_runs"][key]
        ratio = f"x{r['measured_ratio_median']:.3f}" if r["measured_ratio_median"] else "-"
        out.append(f"| +{key} ({fmt_us(curve['extra_cpu_us'][key])}) | {_rate_text(r)} | {ratio} | "
                   f"{_rate_text(b)} |")
    aa, aab = curve["within_run_aa"], curve["between_runs_aa"]
    out.append(f"| A/A (none) | marked: {_rate_text(aa)} | - | marked: {_rate_text(aab)} |")
    out += ["", f"- margins: within a run {_margins(aa)}, between runs {_margins(aab)}; the change each "
            "test could see (80 % power, median over the A/A tests): within a run "
            f"{_pct(aa['could_see_median'])}, between runs {_pct(aab['could_see_median'])}"]
    out += ["", *(f"- problem: {p}" for p in curve["problems"])]
    return out
