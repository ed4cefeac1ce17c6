"""Plain-words verdicts and the noise rules behind them, shared by the run and compare reports.

Noise rules (a difference within the noise is a tie, never a win):
- throughput: the two figures' relative difference (larger / smaller - 1) against the larger `spread`
  of the repetitions in results.json ((max - min) / median), at least RPS_FLOOR (one repetition has
  no spread, and no two runs are identical);
- latency percentiles: the same against the larger spread of that percentile over each side's
  repetitions, at least LATENCY_FLOOR; a percentile is only compared when both sides have at least
  MIN_COUNT requests behind it (p99 of 50 requests is just their second-slowest);
- memory, CPU, threads and connections: the same against their repetitions' spread, at least
  RESOURCE_FLOOR;
- failure rate: a tie when both are under FAILURE_FLOOR apart (absolute) and neither side is zero
  while the other is not.
A load-generator-bound entry never wins (or loses) on throughput, and entries with problems are
left out of the verdict.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.fmt import fmt_bytes, fmt_ms, fmt_num, fmt_pct

RPS_FLOOR = 0.05
LATENCY_FLOOR = 0.10
RESOURCE_FLOOR = 0.10
FAILURE_FLOOR = 0.001  # 0.1 percentage point
MIN_COUNT = {"p50": 10, "p90": 10, "p95": 20, "p99": 100, "p99_9": 1000, "max": 1}
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


# --- noise ------------------------------------------------------------------------------------------------


def spread(values: Sequence[float | None]) -> float | None:
    """(max - min) / median over repetitions, as results.json defines it; None under two values."""
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return None
    med = statistics.median(vals)
    return (max(vals) - min(vals)) / med if med else None


def relative_difference(a: float, b: float) -> float:
    """How much larger the larger is than the smaller (0.2 = 20 % more); inf when one side is zero."""
    lo, hi = sorted((abs(a), abs(b)))
    if hi == 0:
        return 0.0
    return hi / lo - 1 if lo else float("inf")


def _path(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


@dataclass(frozen=True)
class Figure:
    """One figure of an entry: where it is, which direction is better, and its noise floor."""

    key: str
    label: str
    path: tuple[str, ...]  # in an entry of results.json
    rep_path: tuple[str, ...] | None  # in a repetition, for the spread; None: not per repetition
    better: int  # +1 higher is better, -1 lower is better, 0 neither
    floor: float
    fmt: Callable[[float | None], str]
    spread_path: tuple[str, ...] | None = None  # a spread results.json already gives

    def value(self, entry: Entry) -> float | None:
        v = _path(entry, self.path)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    def noise(self, *entries: Entry) -> float:
        found = [self.floor]
        for e in entries:
            s = _path(e, self.spread_path) if self.spread_path else None
            if s is None and self.rep_path:
                s = spread([_path(r, self.rep_path) for r in e.get("repetitions") or []])
            if isinstance(s, int | float):
                found.append(float(s))
        return max(found)


def _lat(key: str) -> Figure:
    return Figure(key, PERCENTILE_LABELS[key], ("latency_ms", key), ("latency_ms", key), -1, LATENCY_FLOOR,
                  fmt_ms)


FIGURES: dict[str, Figure] = {f.key: f for f in (
    Figure("rps", "rps", ("rps", "median"), ("rps",), +1, RPS_FLOOR, fmt_num, ("rps", "spread")),
    Figure("ok_rps", "ok rps", ("ok_rps", "median"), ("ok_rps",), +1, RPS_FLOOR, fmt_num,
           ("ok_rps", "spread")),
    *(_lat(k) for k in ("p50", "p90", "p99", "p99_9", "max")),
    Figure("failure_rate", "failure rate", ("failure_rate",), ("failure_rate",), -1, FAILURE_FLOOR, fmt_pct),
    Figure("rss_peak", "peak RSS", ("memory", "rss_peak_bytes"), ("resources", "rss_peak_bytes"), -1,
           RESOURCE_FLOOR, fmt_bytes),
    Figure("rss_mean", "mean RSS", ("memory", "rss_mean_bytes"), ("resources", "rss_mean_bytes"), -1,
           RESOURCE_FLOOR, fmt_bytes),
    Figure("rss_per_conn", "RSS per connection", ("memory", "rss_per_connection_bytes"),
           ("resources", "rss_per_connection_bytes"), -1, RESOURCE_FLOOR, fmt_bytes),
    Figure("threads", "peak threads", ("threads_peak",), ("resources", "threads_peak"), -1, RESOURCE_FLOOR,
           fmt_num),
    Figure("client_conns", "peak client connections", ("client_connections_peak",),
           ("resources", "client_connections_peak"), 0, RESOURCE_FLOOR, fmt_num),
    Figure("db_conns", "peak db connections", ("db_connections_peak",), ("resources", "db_connections_peak"),
           0, RESOURCE_FLOOR, fmt_num),
    Figure("cpu", "CPU mean (% of a core)", ("cpu_percent", "mean"), ("resources", "cpu_percent_mean"), 0,
           RESOURCE_FLOOR, fmt_num),
)}


def compare_figure(fig: Figure, a: Entry, b: Entry) -> tuple[str, float | None]:
    """(mark, relative change from a to b) for one figure: 'better', 'worse' (or for a figure with no
    better direction 'higher', 'lower'), 'within noise', or 'not compared' (missing, too few requests)."""
    va, vb = fig.value(a), fig.value(b)
    if va is None or vb is None:
        return "not compared", None
    change = (vb - va) / va if va else (0.0 if vb == va else None)
    if fig.key in MIN_COUNT:
        counts = [_path(e, ("latency_ms", "count")) or 0 for e in (a, b)]
        if min(counts) < MIN_COUNT[fig.key]:
            return "not compared", change
    if fig.key == "failure_rate":
        if abs(vb - va) < fig.floor and (va == 0) == (vb == 0):
            return "within noise", change
    elif relative_difference(va, vb) <= fig.noise(a, b):
        return "within noise", change
    up = vb > va
    if fig.better == 0:
        return ("higher" if up else "lower"), change
    return ("better" if up == (fig.better > 0) else "worse"), change


# --- the verdict of one scenario ------------------------------------------------------------------------


@dataclass
class Verdict:
    scenario: str
    sentences: list[str] = field(default_factory=list)
    winner: str | None = None  # throughput winner; None: tie, generator-bound, or nothing to compare
    tie: list[str] = field(default_factory=list)  # servers that tie on throughput at the top
    generator_bound: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)  # servers with failed requests
    left_out: list[str] = field(default_factory=list)  # servers with problems

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def and_join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _rps(e: Entry) -> float:
    return FIGURES["ok_rps"].value(e) or 0.0


def _memory(top: Entry, other: Entry) -> tuple[str | None, str]:
    """('a third of the memory' or None when within noise, '(15 MiB vs 45 MiB peak RSS)')."""
    fig = FIGURES["rss_peak"]
    a, b = fig.value(top), fig.value(other)
    if a is None or b is None or not b:
        return None, "(memory not measured)"
    detail = f"({fmt_bytes(a)} vs {fmt_bytes(b)} peak RSS)"
    if relative_difference(a, b) <= fig.noise(top, other):
        return None, detail
    return times(a / b, "memory"), detail


def _latency_phrase(a: Entry, b: Entry, key: str = "p99") -> str:
    fig, label = FIGURES[key], PERCENTILE_LABELS[key]
    mark, _ = compare_figure(fig, b, a)  # from b to a: 'better' means a has the lower latency
    va, vb = fig.value(a), fig.value(b)
    if mark == "not compared":
        return f"{label} not compared (fewer than {MIN_COUNT[key]} successful requests)"
    if mark == "within noise":
        return f"{label} within noise ({fmt_ms(va)} vs {fmt_ms(vb)})"
    assert va is not None and vb is not None
    low, high = (a, b) if va < vb else (b, a)
    r = max(va, vb) / min(va, vb) if min(va, vb) else float("inf")
    figures = f"{fmt_ms(fig.value(low))} vs {fmt_ms(fig.value(high))}"
    return f"{label} {ratio(r)} lower for {low['server']} ({figures})"


def _ranking(ranked: Sequence[Entry]) -> str:
    parts = []
    mark = not all(e.get("generator_bound") for e in ranked)  # when all are, the verdict already says so
    for i, e in enumerate(ranked):
        text = f"{e['server']} {fmt_num(_rps(e))}"
        if mark and e.get("generator_bound"):
            text += " (generator-bound)"
        if i:
            prev = ranked[i - 1]
            tie = relative_difference(_rps(prev), _rps(e)) <= FIGURES["ok_rps"].noise(prev, e)
            parts.append("≈" if tie else ">")
        parts.append(text)
    return "Order by successful requests/s: " + " ".join(parts) + "."


def _failures(e: Entry) -> str:
    kinds = sorted((e.get("failures_by_kind") or {}).items(), key=lambda kv: -kv[1])
    detail = ", ".join(f"{k} ×{n:,}" for k, n in kinds[:3])
    text = f"{e['server']} failed {fmt_pct(e.get('failure_rate'))} of requests"
    return f"{text} ({detail})" if detail else text


def verdict(scenario: str, entries: Sequence[Entry]) -> Verdict:
    """The headline of one scenario from its results.json entries (one per server)."""
    v = Verdict(scenario)
    v.left_out = [e["server"] for e in entries if e.get("problems")]
    usable = [e for e in entries if not e.get("problems") and FIGURES["ok_rps"].value(e) is not None]
    ranked = sorted(usable, key=_rps, reverse=True)
    v.generator_bound = [e["server"] for e in entries if e.get("generator_bound")]
    v.failing = [e["server"] for e in entries if (e.get("failures") or 0) > 0]
    bound = [e["server"] for e in ranked if e.get("generator_bound")]
    if not ranked:
        v.sentences.append("No server produced figures to compare.")
    elif len(ranked) == 1:
        e = ranked[0]
        lat = (e.get("latency_ms") or {}).get("p99")
        v.sentences.append(f"Only {e['server']} has figures: {fmt_num(_rps(e))} successful requests/s, "
                           f"p99 {fmt_ms(lat)}.")
        if bound:
            v.sentences.append("Its throughput was limited by the load generator, not the server.")
    else:
        top, second = ranked[0], ranked[1]
        a, b = _rps(top), _rps(second)
        noise = FIGURES["ok_rps"].noise(top, second)
        names = f"{top['server']} and {second['server']}"
        share, detail = _memory(top, second)
        used = (f"{top['server']} used {share} of {second['server']} {detail}" if share
                else f"{names} used similar memory {detail}")
        lat = _latency_phrase(top, second)
        if bound:
            v.sentences.append(f"Limited by the load generator, not the server ({and_join(bound)}): no "
                               f"winner on throughput is claimed. {used}; {lat}.")
        elif relative_difference(a, b) <= noise:
            v.tie = [e["server"] for e in ranked
                     if relative_difference(a, _rps(e)) <= FIGURES["ok_rps"].noise(top, e)]
            v.sentences.append(f"{and_join(v.tie)} tie on throughput ({fmt_num(a)} vs {fmt_num(b)} "
                               "successful requests/s, "
                               f"{relative_difference(a, b):.0%} apart: within the {noise:.0%} noise of "
                               f"repetitions); {used}; {lat}.")
        else:
            v.winner = top["server"]
            more = f"{ratio(a / b)} the rps of" if a >= 1.5 * b else f"{a / b - 1:.0%} more rps than"
            mem = f"at {share} {detail}" if share else f"with similar memory {detail}"
            v.sentences.append(f"{top['server']} served {more} {second['server']} "
                               f"({fmt_num(a)} vs {fmt_num(b)} successful requests/s) {mem}; {lat}.")
        if len(ranked) > 2:
            v.sentences.append(_ranking(ranked))
    failing = [e for e in entries if (e.get("failures") or 0) > 0]
    if failing:
        v.sentences.append("Failures: " + "; ".join(_failures(e) for e in failing) + ".")
    if v.left_out:
        first = {e["server"]: (e.get("problems") or [""])[0] for e in entries if e.get("problems")}
        v.sentences.append("Problems, left out of the verdict: "
                           + "; ".join(f"{s} ({first[s]})" for s in v.left_out) + ".")
    return v
