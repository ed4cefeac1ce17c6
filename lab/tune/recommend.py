"""Which value of a swept knob to use, from a tune's curve: pure functions, no I/O.

The rule (`recommend`): among the points measured cleanly, with at most MAX_FAILURE_RATE of requests
failed and p99 within the SLO, find the best successful throughput; recommend the smallest value
whose throughput is within noise of it: the lab's one rule (lab.results.stats.decide, as verdicts and
`make compare` use it) over the two values' repetitions of ok rps does not show it lower than the best
by more than the margin between values (the values run round-robin, so the machine's drift hits them
alike: the within-run margin, LAB_MARGIN_WITHIN). Every such tie states the change it could have seen
(the minimum detectable effect) and the repetitions 5 % would take. With fewer than the rule's
repetitions a side nothing can be called within noise, so the best value itself is recommended and a
note says to add repetitions. When no value meets the SLO, the one with the lowest p99 is named
instead, clearly marked as missing the SLO; when every value fails too often, nothing is recommended.
A cliff (past the best value, throughput falls by CLIFF_DROP or more) and a curve still rising at the
largest value are reported as notes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.fmt import fmt_ms, fmt_pct, fmt_rps, fmt_value
from lab.results import stats
from lab.results.schema import Entry

NOISY = 0.10  # a detectable effect above this gets a note: add repetitions
MAX_FAILURE_RATE = 0.01  # a value failing more than 1 % of requests is not a candidate
CLIFF_DROP = 0.30  # past the best value, a drop of 30 % or more in throughput is a cliff


@dataclass(frozen=True)
class Point:
    """One swept value for one server: the figures the recommendation reads."""

    value: float
    ok_rps: float | None  # successful requests per second, median over repetitions
    rps: float | None = None  # all completed requests per second (503s included)
    spread: float | None = None  # (max - min) / median of ok_rps over the repetitions
    p50_ms: float | None = None
    p99_ms: float | None = None
    failure_rate: float | None = None
    failure_kind: str | None = None  # the most common failure kind, e.g. http_503
    db_connections_peak: float | None = None
    generator_bound: bool = False
    ok: bool = True  # measured without problems
    reps: int = 1
    problems: tuple[str, ...] = ()
    values: tuple[float, ...] = ()  # ok rps of every repetition (what the rule tests)


@dataclass(frozen=True)
class Recommendation:
    verdict: str  # "recommended", "slo_not_met" (closest value named) or "none"
    value: float | None
    sentence: str
    decision: stats.Decision | None = None  # the recommended value against the best (or the next smaller)
    margin: float = stats.DEFAULT_MARGINS[stats.WITHIN]
    best: Point | None = None  # the best throughput within the SLO
    point: Point | None = None  # the recommended point
    cliff_after: float | None = None  # the last value before throughput collapses
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "value": self.value, "sentence": self.sentence,
                "rule": stats.settings(stats.WITHIN, self.margin),
                "decision": self.decision.as_dict() if self.decision else None,
                "best_value": self.best.value if self.best else None,
                "best_ok_rps": self.best.ok_rps if self.best else None,
                "cliff_after": self.cliff_after, "notes": list(self.notes)}


def against(best: Point, p: Point, margin: float) -> stats.Decision:
    """The rule over the two values' repetitions of ok rps, from the best (A) to p (B)."""
    return stats.decide(best.values, p.values, margin)


def as_good(best: Point, p: Point, margin: float) -> bool:
    """Within noise of the best: the rule tested the pair and did not show p lower by more than the margin."""
    if p is best:
        return True
    d = against(best, p, margin)
    return d.p is not None and not (d.changed and d.direction < 0)


def said(d: stats.Decision | None) -> str:
    """'x0.98 [0.95-1.01], p=0.6; could see ±8% ...' for a sentence."""
    if d is None:
        return ""
    return d.said()


def point_from_entry(value: float, entry: Entry) -> Point:
    """A Point from one results.json entry (see lab/results/schema.md)."""
    ok_rps = entry.get("ok_rps") or {}
    lat = entry.get("latency_ms") or {}
    kinds: Mapping[str, int] = entry.get("failures_by_kind") or {}
    values = tuple(float(v) for v in ok_rps.get("values") or [] if isinstance(v, int | float))
    return Point(
        values=values, value=value, ok_rps=ok_rps.get("median"), rps=(entry.get("rps") or {}).get("median"),
        spread=ok_rps.get("spread"), p50_ms=lat.get("p50"), p99_ms=lat.get("p99"),
        failure_rate=entry.get("failure_rate"),
        failure_kind=max(kinds, key=lambda k: kinds[k]) if kinds else None,
        db_connections_peak=entry.get("db_connections_peak"),
        generator_bound=bool(entry.get("generator_bound")), ok=entry.get("status") == "ok",
        reps=int(entry.get("reps") or 0), problems=tuple(entry.get("problems") or ()),
    )


def _failing(p: Point) -> bool:
    return p.failure_rate is not None and p.failure_rate > MAX_FAILURE_RATE


def _measured(p: Point) -> bool:
    return p.ok and p.ok_rps is not None and p.ok_rps > 0


def _knee(points: Sequence[Point], margin: float) -> tuple[Point, Point, stats.Decision | None]:
    """(best throughput, smallest value within noise of it, the rule's decision between them, or between
    the best and the next smaller value when the best is chosen) among points sorted by value."""
    best = max(points, key=lambda p: (p.ok_rps or 0.0, -p.value))
    chosen = next(p for p in points if as_good(best, p, margin))
    if chosen is not best:
        return best, chosen, against(best, chosen, margin)
    smaller = [p for p in points if p.value < best.value]
    return best, chosen, against(best, smaller[-1], margin) if smaller else None


def recommend(points: Sequence[Point], slo_p99_ms: float, param: str = "value",
              margin: float = stats.DEFAULT_MARGINS[stats.WITHIN]) -> Recommendation:
    """The smallest value within noise of the best throughput that keeps p99 under the SLO."""
    pts = sorted(points, key=lambda p: p.value)
    notes: list[str] = []
    for p in pts:
        if not p.ok:
            why = p.problems[0] if p.problems else "see its results.json"
            notes.append(f"{param}={fmt_value(p.value)} was not measured cleanly, so it is left out: {why}")
    measured = [p for p in pts if _measured(p)]
    healthy = [p for p in measured if not _failing(p)]
    for p in measured:
        if _failing(p):
            kind = f", mostly {p.failure_kind}" if p.failure_kind else ""
            notes.append(f"{param}={fmt_value(p.value)} failed {fmt_pct(p.failure_rate)} of requests{kind} "
                         f"(over the {fmt_pct(MAX_FAILURE_RATE)} allowed), so it is not a candidate")
    within = [p for p in healthy if p.p99_ms is not None and p.p99_ms <= slo_p99_ms]
    if not measured:
        return Recommendation("none", None, f"no recommendation: no value of {param} was measured cleanly",
                              notes=tuple(notes))
    if not healthy:
        return Recommendation(
            "none", None,
            f"no recommendation: every value of {param} failed more than {fmt_pct(MAX_FAILURE_RATE)} of "
            "requests; lower the load (USERS) or raise the limits that reject requests",
            notes=tuple(notes))
    if not within:
        closest = min(healthy, key=lambda p: (p.p99_ms if p.p99_ms is not None else float("inf"), p.value))
        sentence = (f"no value kept p99 under the {slo_p99_ms:g} ms SLO; {param}={fmt_value(closest.value)} "
                    f"came closest with p99 {fmt_ms(closest.p99_ms)} at {fmt_rps(closest.ok_rps)} rps: "
                    "lower the load (USERS), relax SLO_P99_MS or sweep other values")
        if len(healthy) > 1:
            top, knee, _ = _knee(healthy, margin)
            notes.append(f"ignoring the SLO, {param}={fmt_value(knee.value)} is the smallest value within "
                         f"noise (margin {margin:.0%}) of the best throughput, {fmt_rps(top.ok_rps)} rps at "
                         f"{fmt_value(top.value)} (p99 {fmt_ms(knee.p99_ms)} there)")
        return Recommendation("slo_not_met", closest.value, sentence, point=closest, notes=tuple(notes),
                              margin=margin)

    best, chosen, decision = _knee(within, margin)
    name = f"{param}={fmt_value(chosen.value)}"
    slo = f"p99 {fmt_ms(chosen.p99_ms)} under the {slo_p99_ms:g} ms SLO"
    if len(pts) == 1:
        sentence = (f"{name}: the only value swept, {fmt_rps(chosen.ok_rps)} rps with {slo}; sweep more "
                    "values to see where throughput levels off")
    elif chosen is best:
        sentence = (f"{name}: the best throughput, {fmt_rps(best.ok_rps)} rps, with no smaller value within "
                    f"noise (margin {margin:.0%}) of it, and {slo}")
    else:
        sentence = (f"{name}: the smallest value within noise (margin {margin:.0%}) of the best throughput, "
                    f"{fmt_rps(best.ok_rps)} rps at {fmt_value(best.value)}, with {slo}")
    if decision is not None:
        sentence += f" ({said(decision)})"
    if decision is not None and decision.p is None:
        notes.append(f"{decision.reason}: no smaller value could be called within noise of the best, so the "
                     f"best is recommended; run REPS={stats.MIN_REPS} or more per value")

    faster = [p for p in healthy if p not in within
              and (d := against(best, p, margin)).changed and d.direction > 0]
    if faster:
        top = max(faster, key=lambda p: p.ok_rps or 0.0)
        notes.append(f"{param}={fmt_value(top.value)} reached {fmt_rps(top.ok_rps)} rps, more than the "
                     f"recommendation, but its p99 of {fmt_ms(top.p99_ms)} breaks the SLO")
    cliff_after = None
    for p in pts:
        if p.value <= best.value or not p.ok:
            continue
        if (p.ok_rps or 0.0) < (best.ok_rps or 0.0) * (1 - CLIFF_DROP):
            prev = [q for q in pts if q.value < p.value and _measured(q)]
            cliff_after = prev[-1].value if prev else best.value
            drop = 1 - (p.ok_rps or 0.0) / (best.ok_rps or 1.0)
            notes.append(f"throughput collapses past {param}={fmt_value(cliff_after)}: "
                         f"{fmt_rps(p.ok_rps)} rps at {fmt_value(p.value)}, {drop:.0%} below the best")
            break
    used = chosen.db_connections_peak
    pool_idle = param == "pool_size" and used is not None and 0 < used < chosen.value * 0.9
    if len(healthy) > 1 and best.value == pts[-1].value and chosen is best and not pool_idle:
        notes.append(f"throughput was still rising at the largest value swept ({fmt_value(best.value)}): "
                     "sweep larger values to find where it levels off")
    if pool_idle and used is not None:
        notes.append(f"at {name} the server had at most {used:g} database sessions open: the load's own "
                     "concurrency (USERS), not the pool, was the limit there, so a pool of about "
                     f"{used:g} serves this load")
    if best.generator_bound:
        notes.append(f"the load generator was the limit at {param}={fmt_value(best.value)}, so the plateau "
                     "may be the generator's rather than the server's (LOCUST_WORKERS adds load processes)")
    if decision is not None and decision.mde is not None and decision.mde > NOISY:
        five = (f"{stats.TARGET:.0%} would take {decision.reps_for_target} repetitions per value"
                if decision.reps_for_target is not None else f"{stats.TARGET:.0%} is inside the margin")
        notes.append(f"these repetitions could only see a change of {decision.could_see()} in throughput; "
                     f"{five} (REPS), or longer ones (DURATION) for less scatter")
    return Recommendation("recommended", chosen.value, sentence, decision=decision, best=best, point=chosen,
                          cliff_after=cliff_after, notes=tuple(notes), margin=margin)
