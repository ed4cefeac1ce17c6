"""Plain-words verdicts, and the figures they and `make compare` judge, shared by both reports.

Every "better", "worse" or "winner" comes from one rule (lab.results.stats.decide): the
repetition-level values of the two sides show that the figure differs by more than the margin (the
comparison kind's, lab.results.stats.margin, or the figure's own floor, FIGURES[...].min_effect, where
larger; a one-sided t-test on the logs against that margin, p < 0.05). Anything else is a tie, printed
with its confidence and the change it could have seen (the minimum detectable effect). Further:
- a latency percentile is only judged when both sides have at least MIN_COUNT requests behind it
  (p99 of 50 requests is just their second-slowest), and, under a CPU budget, when it moved by more
  than two quota periods (a throttled server answers in its next period, so latency moves in steps of
  one); p99.9 and max are shown, never judged: a few repetitions cannot pin them down;
- failure rate: also at least FAILURE_FLOOR apart (absolute);
- a load-generator-bound entry never wins (or loses) on throughput: the verdict compares CPU time
  per request instead, which does not depend on the generator outrunning the server;
- capacity at the SLO that some repetitions only bound from below (the generator or the steps stopped
  before the server missed its SLO) is read as lab.results.bounds says: a winner on lower bounds stands,
  a verdict against them is not judged, a tie with them on one side is "at least tie";
- entries with problems are left out of the verdict.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.fmt import fmt_bytes, fmt_ms, fmt_num, fmt_pct, fmt_us
from lab.results import bounds, stats
from lab.results.openmodel import notes_by_rep

FAILURE_FLOOR = 0.001  # 0.1 percentage point
# Successful requests a repetition needs before its percentile is judged: a p99 of 450 requests is their
# fifth-slowest, which moves by tens of per cent between repetitions of the same thing.
MIN_COUNT = {"p50": 10, "p90": 50, "p95": 100, "p99": 1000, "p99_9": 10_000, "max": 1}
PERCENTILE_LABELS = {"p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99", "p99_9": "p99.9", "max": "max"}

Entry = dict[str, Any]


# --- numbers as people read them ----------------------------------------------------------------------


FRACTIONS = ((1 / 4, "a quarter of"), (1 / 3, "a third of"), (1 / 2, "half"), (2 / 3, "two thirds of"),
             (3 / 4, "three quarters of"))


def times(r: float, noun: str) -> str:
    """`r` times the noun in words: 'a third of the memory', 'twice the memory', '2.4x the memory'."""
    for value, words in FRACTIONS:
        if abs(r / value - 1) <= 0.05:
            return f"{words} the {noun}"
    if abs(r / 2 - 1) <= 0.03:
        return f"twice the {noun}"
    return f"{ratio(r)} the {noun}"


def ratio(r: float) -> str:
    return f"{r:.2g}x" if r < 1 else f"{r:.0f}x" if r >= 10 else f"{r:.1f}x"


# --- the figures and the rule -------------------------------------------------------------------------------


def spread(values: Sequence[float | None]) -> float | None:
    """(max - min) / median over repetitions, as results.json defines it; None under two values."""
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return None
    med = statistics.median(vals)
    return (max(vals) - min(vals)) / med if med else None


def _path(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


@dataclass(frozen=True)
class Figure:
    """One figure of an entry: where it is, per repetition too, which way is better, and its own floor
    under the comparison's margin (min_effect: 0.10 = 10 %; 0: the comparison kind's margin alone)."""

    key: str
    label: str
    path: tuple[str, ...]  # in an entry of results.json
    rep_path: tuple[str, ...] | None  # in a repetition; None: not judged (shown only)
    better: int  # +1 higher is better, -1 lower is better, 0 neither
    min_effect: float
    fmt: Callable[[float | None], str]
    rep_fn: Callable[[Entry], float | None] | None = None  # a figure derived from each repetition

    def value(self, entry: Entry) -> float | None:
        if self.rep_fn is not None:
            found = self.values(entry)
            return statistics.median(found) if found else None
        return _number(_path(entry, self.path))

    def by_round(self, entry: Entry) -> dict[int, float]:
        """The repetitions' values by their round (the rep number; its place where none is recorded)."""
        if self.rep_path is None:
            return {}
        out = {}
        for i, r in enumerate(entry.get("repetitions") or [], 1):
            v = self.rep_fn(r) if self.rep_fn else _number(_path(r, self.rep_path))
            if v is not None:
                out[int(r.get("rep") or i)] = v
        return out

    def values(self, entry: Entry) -> list[float]:
        """The repetitions' values (what the rule tests)."""
        if self.rep_path is None:
            return []
        reps = entry.get("repetitions") or []
        found = (self.rep_fn(r) if self.rep_fn else _number(_path(r, self.rep_path)) for r in reps)
        return [v for v in found if v is not None]


# CPU per request as the verdicts between the servers of one run test it: each repetition's figure at the
# run's reference speed (times the speed probe's reading over it, over the run's median reading;
# lab/results/drift.py), so the machine's wander from one repetition to the next drops out. Shown as
# measured (the raw median); the rule tests the adjusted repetitions.
CPU_AT_SPEED = Figure("cpu_per_req", "CPU per request", ("cost", "cpu_us_per_request", "median"),
                      ("cost", "cpu_us_per_request_speed_adjusted"), -1, 0.0, fmt_us)


SPEED_BAND = 1.25  # a reading further than this from the run's reference is the probe's, not the machine's


def cpu_figure(entries: Sequence[Entry]) -> Figure:
    """CPU_AT_SPEED when every repetition of every entry has a speed reading within SPEED_BAND of the
    run's reference, else the raw figure: a test on a mix of adjusted and raw repetitions would compare
    unlike things, and a reading far off is the probe's own (asyncio read 0.55x of the reference for one
    repetition of a quiet power-curve try while its CPU per request matched its neighbours')."""
    reps = [r for e in entries for r in e.get("repetitions") or []]
    for r in reps:
        raw = _number(_path(r, ("cost", "cpu_us_per_request")))
        at_speed = _number(_path(r, ("cost", "cpu_us_per_request_speed_adjusted")))
        if not raw or not at_speed or abs(math.log(at_speed / raw)) > math.log(SPEED_BAND):
            return FIGURES["cpu_per_req"]
    return CPU_AT_SPEED if reps else FIGURES["cpu_per_req"]


def _lat(key: str, min_effect: float | None) -> Figure:
    return Figure(key, PERCENTILE_LABELS[key], ("latency_ms", key),
                  ("latency_ms", key) if min_effect is not None else None, -1, min_effect or 0.0, fmt_ms)


FIGURES: dict[str, Figure] = {f.key: f for f in (
    # Rates and cost: the comparison's margin alone. Tails, memory and counts keep floors of their own:
    # they move with things the repetitions share (a GC pause, connection churn, allocator arenas).
    Figure("rps", "rps", ("rps", "median"), ("rps",), +1, 0.0, fmt_num),
    Figure("ok_rps", "ok rps", ("ok_rps", "median"), ("ok_rps",), +1, 0.0, fmt_num),
    Figure("capacity", "capacity at SLO (rps)", ("capacity", "median"), ("capacity", "capacity_rps"), +1,
           0.0, fmt_num),
    Figure("cpu_per_req", "CPU per request", ("cost", "cpu_us_per_request", "median"),
           ("cost", "cpu_us_per_request"), -1, 0.0, fmt_us),
    Figure("rss_per_conn", "RSS per connection", ("memory", "rss_per_connection_bytes"),
           ("resources", "rss_per_connection_bytes"), -1, 0.50, fmt_bytes),
    _lat("p50", 0.20), _lat("p90", 0.25), _lat("p99", 0.30), _lat("p99_9", None), _lat("max", None),
    Figure("failure_rate", "failure rate", ("failure_rate",), ("failure_rate",), -1, 0.0, fmt_pct),
    Figure("rss_peak", "peak RSS", ("memory", "rss_peak_bytes"), ("resources", "rss_peak_bytes"), -1,
           0.10, fmt_bytes),
    Figure("rss_mean", "mean RSS", ("memory", "rss_mean_bytes"), ("resources", "rss_mean_bytes"), -1,
           0.10, fmt_bytes),
    # Peaks of counts follow connection churn (a thread per connection lives until its socket closes).
    Figure("threads", "peak threads", ("threads_peak",), ("resources", "threads_peak"), -1, 0.25, fmt_num),
    Figure("client_conns", "peak client connections", ("client_connections_peak",),
           ("resources", "client_connections_peak"), 0, 0.25, fmt_num),
    Figure("db_conns", "peak db connections", ("db_connections_peak",), ("resources", "db_connections_peak"),
           0, 0.25, fmt_num),
    Figure("cpu", "CPU mean (% of a core)", ("cpu_percent", "mean"), ("resources", "cpu_percent_mean"), 0,
           0.10, fmt_num),
)}


WITHIN = stats.DEFAULT_MARGINS[stats.WITHIN]


def by_rounds(fig: Figure, a: Entry, b: Entry, min_effect: float) -> stats.Decision:
    """The rule between two servers of one run: round by round, over the rounds both ran."""
    ra, rb = fig.by_round(a), fig.by_round(b)
    both = sorted(ra.keys() & rb.keys())
    return stats.decide([ra[k] for k in both], [rb[k] for k in both], min_effect, paired=True)


def judge(fig: Figure, a: Entry, b: Entry, noise: stats.Noise | None = None,
          margin: float = WITHIN, paired: bool = True) -> tuple[str, float | None, stats.Decision | None]:
    """(mark, relative change of the median from a to b, the test's decision) for one figure: 'better',
    'worse' (for a figure with no better direction 'higher', 'lower'), 'within noise', or 'not compared'
    (missing, too few requests, or a figure that is shown but not judged). `margin`: the comparison
    kind's (lab.results.stats.margin); the figure's floor applies where larger. `paired`: a and b are
    servers of one run, tested round by round over the rounds both ran (False: two runs')."""
    va, vb = fig.value(a), fig.value(b)
    if va is None or vb is None:
        return "not compared", None, None
    change = (vb - va) / va if va else (0.0 if vb == va else None)
    if fig.rep_path is None:
        return "not compared", change, None
    if fig.key in MIN_COUNT and min(rep_counts(a) + rep_counts(b)) < MIN_COUNT[fig.key]:
        return "not compared", change, None
    if paired:
        decision = by_rounds(fig, a, b, max(margin, fig.min_effect))
    else:
        decision = stats.decide(fig.values(a), fig.values(b), max(margin, fig.min_effect), noise=noise)
    changed = decision.changed
    if fig.key == "failure_rate" and abs(vb - va) < FAILURE_FLOOR:
        changed = False
    if fig.key in MIN_COUNT and abs(vb - va) < quantum_ms(a, b):
        changed = False
    return mark(fig, decision, changed), change, decision


def mark(fig: Figure, decision: stats.Decision, changed: bool) -> str:
    """What a judged figure is called: 'within noise' unless `changed`, else by its better direction
    ('better', 'worse'; 'higher', 'lower' for a figure with none)."""
    if not changed:
        return "within noise"
    up = decision.direction > 0
    if fig.better == 0:
        return "higher" if up else "lower"
    return "better" if up == (fig.better > 0) else "worse"


def rep_counts(e: Entry) -> list[int]:
    """Successful requests behind each repetition's percentiles (the entry's share where not recorded)."""
    reps = e.get("repetitions") or []
    counts = [_path(r, ("latency_ms", "count")) for r in reps]
    if reps and all(isinstance(c, int) for c in counts):
        return [int(c) for c in counts]
    total = _path(e, ("latency_ms", "count")) or 0
    return [int(total) // max(1, len(reps))]


def quantum_ms(*entries: Entry) -> float:
    """The latency step a CPU budget imposes: a throttled server answers in its next period, so latency
    moves in periods; a latency difference under two of the longer period is no difference."""
    periods = [_number(_path(e, ("cost", "cpu_budget", "period_us"))) for e in entries
               if _path(e, ("cost", "cpu_budget", "cores"))]
    return 2 * max((p for p in periods if p), default=0.0) / 1000


def compare_figure(fig: Figure, a: Entry, b: Entry, margin: float = WITHIN) -> tuple[str, float | None]:
    mark, change, _ = judge(fig, a, b, margin=margin)
    return mark, change


def differs(fig: Figure, a: Entry, b: Entry, margin: float = WITHIN) -> bool:
    """Do a and b differ on this figure by the rule (either way)?"""
    return judge(fig, a, b, margin=margin)[0] in ("better", "worse", "higher", "lower")


# --- the verdict of one scenario ------------------------------------------------------------------------


@dataclass
class Verdict:
    scenario: str
    sentences: list[str] = field(default_factory=list)
    winner: str | None = None  # throughput (or capacity) winner; None: tie, generator-bound, or nothing
    tie: list[str] = field(default_factory=list)  # servers that tie on throughput at the top
    generator_bound: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)  # servers with failed requests
    left_out: list[str] = field(default_factory=list)  # servers with problems
    cheapest: str | None = None  # lowest CPU per request, by the rule; None: a tie or not measured
    bounded: bounds.Reading | None = None  # the capacity verdict where lower bounds decided it
    margin: float = WITHIN  # the margin between servers the verdict was judged with

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def and_join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def tested(fig: Figure, a: Entry, b: Entry, margin: float = WITHIN) -> bool:
    """Could the rule judge this figure at all (enough repetitions, enough requests)?"""
    decision = judge(fig, a, b, margin=margin)[2]
    return decision is not None and decision.p is not None


def _memory(top: Entry, other: Entry, margin: float) -> str:
    """'{top} used a third of the memory of {other} (15 MiB vs 45 MiB peak RSS)', or similar / not judged."""
    fig = FIGURES["rss_peak"]
    a, b = fig.value(top), fig.value(other)
    if a is None or b is None or not b:
        return "memory not measured"
    detail = f"({fmt_bytes(a)} vs {fmt_bytes(b)} peak RSS)"
    if not tested(fig, other, top, margin):
        return f"memory not judged {detail}"
    if not differs(fig, other, top, margin):
        return (f"{top['server']} and {other['server']} used similar memory {detail}, "
                f"{_sensitivity(fig, other, top, margin)}")
    return f"{top['server']} used {times(a / b, 'memory')} of {other['server']} {detail}"


def _latency_phrase(a: Entry, b: Entry, margin: float, key: str = "p99") -> str:
    fig, label = FIGURES[key], PERCENTILE_LABELS[key]
    mark, _ = compare_figure(fig, b, a, margin)  # from b to a: 'better' means a has the lower latency
    va, vb = fig.value(a), fig.value(b)
    if mark == "not compared":
        return f"{label} not compared (fewer than {MIN_COUNT[key]:,} successful requests a repetition)"
    if mark == "within noise":
        return f"{label} within noise ({fmt_ms(va)} vs {fmt_ms(vb)}, {_sensitivity(fig, b, a, margin)})"
    assert va is not None and vb is not None
    low, high = (a, b) if va < vb else (b, a)
    r = max(va, vb) / min(va, vb) if min(va, vb) else float("inf")
    figures = f"{fmt_ms(fig.value(low))} vs {fmt_ms(fig.value(high))}"
    return f"{label} {ratio(r)} lower for {low['server']} ({figures})"


def _order(ranked: Sequence[Entry], fig: Figure, mark_bound: bool, margin: float) -> str:
    """'a 5,005 > b 3,055 ≈ c 3,005' (or with < for a list that rises): neighbours that do not differ by
    the rule are ≈; neighbours the rule could not test (too few repetitions) are only listed, 'a, b'."""
    parts: list[str] = []
    for i, e in enumerate(ranked):
        text = f"{e['server']} {fig.fmt(fig.value(e))}"
        if mark_bound and e.get("generator_bound"):
            text += " (generator-bound)"
        held = bounds.lower_bounds(e) if fig.key == "capacity" else 0
        if held:
            text += f" ({held} lower bound{'s' if held > 1 else ''})"
        if i:
            rising = (fig.value(e) or 0.0) > (fig.value(ranked[i - 1]) or 0.0)
            if not tested(fig, ranked[i - 1], e, margin) or _bounded(fig, ranked[i - 1], e, margin).state \
                    == "not judged":
                parts[-1] += ","
            else:
                parts.append(("<" if rising else ">") if differs(fig, ranked[i - 1], e, margin) else "≈")
        parts.append(text)
    return " ".join(parts)


def _failures(e: Entry) -> str:
    kinds = sorted((e.get("failures_by_kind") or {}).items(), key=lambda kv: -kv[1])
    detail = ", ".join(f"{k} ×{n:,}" for k, n in kinds[:3])
    text = f"{e['server']} failed {fmt_pct(e.get('failure_rate'))} of requests"
    return f"{text} ({detail})" if detail else text


def _confidence(fig: Figure, a: Entry, b: Entry, margin: float) -> str:
    """The test's confidence, its ratio read as b over a (as the sentence reads: 'b served 28% more'),
    and for a tie what it could have seen."""
    mark, _, decision = judge(fig, a, b, margin=margin)
    if decision is None:
        return "not tested"
    if mark == "within noise" and decision.mde is not None:
        return f"{decision.confidence()}; {decision.sensitivity()}"
    return decision.confidence()


def _sensitivity(fig: Figure, a: Entry, b: Entry, margin: float) -> str:
    """'could see ±12% (...)' for a tie, or '' when the rule states none."""
    decision = judge(fig, a, b, margin=margin)[2]
    return decision.sensitivity() if decision is not None and decision.mde is not None else "not tested"


def _cost(v: Verdict, usable: Sequence[Entry]) -> None:
    """The cost sentence: CPU time per request, lowest first (meaningful whoever set the pace)."""
    fig = cpu_figure(usable)
    costed = sorted((e for e in usable if fig.value(e) is not None), key=lambda e: fig.value(e) or 0.0)
    if len(costed) < 2:
        if costed:
            v.sentences.append(f"CPU per request: {costed[0]['server']} {fig.fmt(fig.value(costed[0]))}.")
        return
    low, next_ = costed[0], costed[1]
    if not tested(fig, next_, low, v.margin):
        lead = f"CPU per request not judged ({_confidence(fig, next_, low, v.margin)})"
    elif differs(fig, next_, low, v.margin):
        v.cheapest = low["server"]
        r = (fig.value(next_) or 0.0) / (fig.value(low) or 1.0)
        lead = (f"{low['server']} spent the least CPU per request, {ratio(1 / r)} of {next_['server']}'s "
                f"({_confidence(fig, next_, low, v.margin)})")
    else:
        lead = (f"{low['server']} and {next_['server']} tie on CPU per request "
                f"({_confidence(fig, next_, low, v.margin)})")
    v.sentences.append(f"{lead}. CPU per request: {_order(costed, fig, False, v.margin)}.")
    conn = FIGURES["rss_per_conn"]
    held = sorted((e for e in usable if conn.value(e)), key=lambda e: conn.value(e) or 0.0)
    if len(held) >= 2:
        v.sentences.append(f"Memory per open connection: {_order(held, conn, False, v.margin)}.")


def _bounded(fig: Figure, a: Entry, b: Entry, margin: float) -> bounds.Reading:
    """The rule's mark from a to b read with lower bounds (capacity only; otherwise never bounded)."""
    if fig.key != "capacity":
        return bounds.Reading("plain")
    return bounds.read(judge(fig, a, b, margin=margin)[0], a, b)


def _with_sensitivity(fig: Figure, a: Entry, b: Entry, margin: float) -> str:
    """The confidence and, where the rule states one, what it could see (whatever the mark)."""
    d = judge(fig, a, b, margin=margin)[2]
    return "not tested" if d is None else d.said()


def _throughput(v: Verdict, ranked: Sequence[Entry], fig: Figure, noun: str) -> None:
    top, second = ranked[0], ranked[1]
    a, b = fig.value(top) or 0.0, fig.value(second) or 0.0
    names = f"{top['server']} and {second['server']}"
    used = _memory(top, second, v.margin)
    lat = _latency_phrase(top, second, v.margin)
    reading = _bounded(fig, second, top, v.margin) if tested(fig, second, top, v.margin) else None
    if not tested(fig, second, top, v.margin):
        v.sentences.append(f"{names} are not judged on {noun} ({fig.fmt(a)} vs {fig.fmt(b)}: "
                           f"{_confidence(fig, second, top, v.margin)}); {used}; {lat}.")
    elif reading is not None and reading.bounded and reading.state != "winner":
        v.bounded = reading
        seen = _with_sensitivity(fig, second, top, v.margin)
        if reading.state == "at least tie":
            v.sentences.append(f"{reading.winner} at least ties {reading.other} on {noun} ({fig.fmt(a)} vs "
                               f"{fig.fmt(b)}: {seen}): {reading.note}, and a lower bound can only "
                               f"understate its server; {used}; {lat}.")
        else:
            v.sentences.append(f"{names} are not judged on {noun} ({fig.fmt(a)} vs {fig.fmt(b)}: {seen}): "
                               f"{reading.note}, and a verdict against a lower bound could be the bound's; "
                               f"{used}; {lat}.")
    elif not differs(fig, second, top, v.margin):
        v.tie = [e["server"] for e in ranked if not differs(fig, e, top, v.margin)]
        v.sentences.append(f"{and_join(v.tie)} tie on {noun} ({fig.fmt(a)} vs {fig.fmt(b)}: "
                           f"{_confidence(fig, second, top, v.margin)}); {used}; {lat}.")
    else:
        v.winner = top["server"]
        more = f"{ratio(a / b)} the {noun} of" if a >= 1.5 * b else f"{a / b - 1:.0%} more {noun} than"
        stands = ""
        if reading is not None and reading.bounded:  # the winner had lower bounds: it wins even on them
            v.bounded, stands = reading, f"; {reading.note}"
        v.sentences.append(f"{top['server']} served {more} {second['server']} ({fig.fmt(a)} vs {fig.fmt(b)}; "
                           f"{_confidence(fig, second, top, v.margin)}{stands}); {used}; {lat}.")


def verdict(scenario: str, entries: Sequence[Entry], margin: float | None = None) -> Verdict:
    """The headline of one scenario from its results.json entries (one per server); `margin`: between
    servers (default: LAB_MARGIN_WITHIN, else lab.results.stats.DEFAULT_MARGINS)."""
    v = Verdict(scenario, margin=stats.margin(stats.WITHIN) if margin is None else margin)
    v.left_out = [e["server"] for e in entries if e.get("problems")]
    open_model = any(e.get("capacity") for e in entries)
    fig = FIGURES["capacity"] if open_model else FIGURES["ok_rps"]
    noun = "capacity at the SLO" if open_model else "successful requests/s"
    usable = [e for e in entries if not e.get("problems") and fig.value(e) is not None]
    ranked = sorted(usable, key=lambda e: fig.value(e) or 0.0, reverse=True)
    v.generator_bound = [e["server"] for e in entries if e.get("generator_bound")]
    v.failing = [e["server"] for e in entries if (e.get("failures") or 0) > 0]
    # A capacity the generator stopped is a lower bound, judged as such; only a closed loop is bound.
    bound = [] if open_model else [e["server"] for e in ranked if e.get("generator_bound")]
    if not ranked and open_model:
        why = [f"{e['server']}: {notes_by_rep(e['capacity'].get('notes') or [])}" for e in entries
               if e.get("capacity")]
        v.sentences.append(f"No capacity at the SLO could be measured: {'; '.join(why)}.")
    elif not ranked:
        v.sentences.append("No server produced figures to compare.")
    elif len(ranked) == 1:
        e = ranked[0]
        lat = (e.get("latency_ms") or {}).get("p99")
        v.sentences.append(f"Only {e['server']} has figures: {fig.fmt(fig.value(e))} {noun}, "
                           f"p99 {fmt_ms(lat)}.")
        if bound:
            v.sentences.append("Its throughput was limited by the load generator, not the server.")
    elif bound:
        v.sentences.append(f"Limited by the load generator, not the server ({and_join(bound)}): no winner on "
                           f"throughput is claimed; CPU per request decides instead.")
    else:
        _throughput(v, ranked, fig, noun)
    if len(ranked) > 2 and not bound:
        v.sentences.append(f"Order by {noun}: {_order(ranked, fig, False, v.margin)}.")
    _cost(v, usable)
    failing = [e for e in entries if (e.get("failures") or 0) > 0]
    if failing:
        v.sentences.append("Failures: " + "; ".join(_failures(e) for e in failing) + ".")
    if v.left_out:
        first = {e["server"]: (e.get("problems") or [""])[0] for e in entries if e.get("problems")}
        v.sentences.append("Problems, left out of the verdict: "
                           + "; ".join(f"{s} ({first[s]})" for s in v.left_out) + ".")
    return v
