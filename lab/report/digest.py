"""What a load run found, in at most ten terminal lines: each scenario's verdict, the flags, the report."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.fmt import fmt_pct, fmt_seconds
from lab.report.runs import Entry, by_scenario
from lab.results import bounds, headline, stats
from lab.results.headline import FIGURES, Figure, Verdict

MAX_LINES = 10
MAX_NAMES = 3  # servers named per flag before "+N more"
MAX_PROBLEM = 90  # characters of the first problem quoted (the report has them all)


def shown(path: Path) -> str:
    """A path as a person can paste it here: relative to the working directory when under it."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except (OSError, ValueError):
        return str(path)


def _names(items: Sequence[str]) -> str:
    more = len(items) - MAX_NAMES
    return ", ".join(items[:MAX_NAMES]) + (f" +{more} more" if more > 0 else "")


def _decision(fig: Figure, a: Entry, b: Entry, v: Verdict) -> stats.Decision | None:
    """The rule's decision on fig from a to b, judged as the verdict was (with its margin)."""
    return headline.judge(fig, a, b, margin=v.margin)[2]


def _confidence(d: stats.Decision | None, tie: bool) -> str:
    """The test's confidence; for a tie also the change it could have seen, where the rule states one."""
    if d is None:
        return "not tested"
    text = d.confidence()
    return f"{text}; could see {d.could_see()}" if tie and d.mde is not None else text


def _lead(v: Verdict, ranked: Sequence[Entry], fig: Figure, noun: str, winner: str | None,
          tie: Sequence[str] = ()) -> str:
    """'asyncio wins on CPU per request: 0.41x gevent's (...)', 'tie on ...: a ≈ b (...)', or not judged.
    ranked: best first by fig; winner and tie: the verdict's for this figure (a tie of two when it names
    none: the best two, as the verdict's sentence does)."""
    if not ranked:
        return f"no {noun} to compare"
    best = ranked[0]
    if len(ranked) == 1:
        return f"only {best['server']} has figures: {noun} {fig.fmt(fig.value(best))}"
    other = ranked[1]
    d = _decision(fig, other, best, v)
    figures = f"{fig.fmt(fig.value(best))} vs {fig.fmt(fig.value(other))}"
    bounded = v.bounded if fig.key == "capacity" else None  # lower bounds decided the capacity verdict
    seen = f"; could see {d.could_see()}" if d is not None and d.mde is not None else ""
    if winner == best["server"]:
        r = (fig.value(best) or 0.0) / (fig.value(other) or 1.0)
        return (f"{best['server']} wins on {noun}: {headline.ratio(r)} {other['server']}'s "
                f"({figures}; {_confidence(d, False)})" + (f"; {bounded.note}" if bounded else ""))
    if bounded is not None and bounded.state == "at least tie":
        return (f"{bounded.winner} at least ties {bounded.other} on {noun} ({figures}; "
                f"{_confidence(d, False)}{seen}): {bounded.note}")
    if bounded is not None:
        return f"not judged on {noun}: {bounded.note} ({figures}; {_confidence(d, False)}{seen})"
    if d is None or d.p is None:
        why = d.reason if d is not None else "not tested"
        return (f"not judged on {noun}: {best['server']} {fig.fmt(fig.value(best))}, {other['server']} "
                f"{fig.fmt(fig.value(other))} ({why})")
    tied = list(tie) if len(tie) > 1 and best["server"] in tie else [best["server"], other["server"]]
    return f"tie on {noun}: {' ≈ '.join(tied)} ({figures}; {_confidence(d, True)})"


def scenario_line(scenario: str, entries: Sequence[Entry]) -> str:
    """The headline of one scenario by the report's verdict: capacity at the SLO for a capacity scenario,
    else CPU per request."""
    v = headline.verdict(scenario, entries)
    usable = [e for e in entries if not e.get("problems")]
    capacity, cpu = FIGURES["capacity"], headline.cpu_figure(usable)
    ranked = sorted((e for e in usable if capacity.value(e) is not None),
                    key=lambda e: capacity.value(e) or 0.0, reverse=True)
    if any(e.get("capacity") for e in entries):  # lower bounds on capacity are judged as the verdict does
        slo = next((e["capacity"].get("slo_p99_ms") for e in entries if e.get("capacity")), None)
        noun = f"capacity at p99<{slo:g}ms" if isinstance(slo, int | float) else "capacity at the SLO"
        return _lead(v, ranked, capacity, noun, v.winner, v.tie)  # the verdict's tie is on capacity
    ranked = sorted((e for e in usable if cpu.value(e) is not None), key=lambda e: cpu.value(e) or 0.0)
    return _lead(v, ranked, cpu, "CPU per request", v.cheapest)


def _throttling(entries: Sequence[Entry]) -> str | None:
    """'throttled by the 0.5-core CPU budget in 3-81% of its periods (most: threaded/json)', or None."""
    shares: list[tuple[float, str]] = []
    cores = None
    for e in entries:
        budget = (e.get("cost") or {}).get("cpu_budget") or {}
        periods, throttled = budget.get("periods"), budget.get("throttled_periods")
        if isinstance(periods, int | float) and periods > 0 and isinstance(throttled, int | float):
            shares.append((throttled / periods, f"{e['server']}/{e['scenario']}"))
            cores = budget.get("cores")
    if not shares or max(s for s, _ in shares) == 0:
        return None
    low, high = min(s for s, _ in shares), max(shares)
    span = fmt_pct(high[0]) if low == high[0] else f"{fmt_pct(low)}-{fmt_pct(high[0])}"
    return f"throttled by the {cores:g}-core CPU budget in {span} of its periods (most: {high[1]})"


def flags(data: dict[str, Any]) -> list[str]:
    """What a person should know before trusting the verdicts, one short item per kind."""
    entries: list[Entry] = data.get("results") or []
    out = []
    if data.get("generator_bound"):
        out.append(f"generator-bound (the load generator set the pace): {_names(data['generator_bound'])}")
    held = [f"{e['server']}/{e['scenario']} {n} of {bounds.values(e)}" for e in entries
            if (n := bounds.lower_bounds(e))]
    if held:
        out.append(f"capacity only a lower bound (knee above what was offered) in: {_names(held)}")
    failing = [f"{e['server']}/{e['scenario']} {fmt_pct(e.get('failure_rate'))}" for e in entries
               if (e.get("failures") or 0) > 0]
    if failing:
        out.append(f"failed requests: {_names(failing)}")
    throttled = _throttling(entries)
    if throttled:
        out.append(throttled)
    problems: list[str] = data.get("problems") or []
    if problems:
        first = problems[0] if len(problems[0]) <= MAX_PROBLEM else problems[0][: MAX_PROBLEM - 3] + "..."
        out.append(f"{len(problems)} problem(s), first: {first}")
    warnings = sum(len(e.get("warnings") or []) for e in entries)
    if warnings:
        out.append(f"{warnings} warning(s) in the report")
    return out


def digest(data: dict[str, Any], run_dir: Path, html: Path | None) -> list[str]:
    """At most MAX_LINES lines: the run, each scenario's verdict, the flags, and the report to open."""
    run = data.get("run") or {}
    groups = by_scenario(data)
    wall, planned = run.get("wall_seconds"), run.get("planned_seconds")
    took = f" in {fmt_seconds(wall)}" if isinstance(wall, int | float) else ""
    if took and isinstance(planned, int | float):
        took += f" (planned ~{fmt_seconds(planned)})"
    head = (f"{run.get('id') or run_dir.name}: {len(groups)} scenario(s) x {len(data.get('servers') or [])} "
            f"server(s){took}; every figure: {shown(run_dir / 'summary.md')}")
    width = max((len(s) for s, _ in groups), default=0)
    scenarios = [f"  {s:<{width}}  {scenario_line(s, es)}" for s, es in groups]
    found = flags(data)
    if 2 + len(scenarios) + len(found) > MAX_LINES and len(found) > 1:
        found = ["; ".join(found)]
    flagged = [f"! {f}" for f in found]
    room = MAX_LINES - 2 - len(flagged)
    if len(scenarios) > room:
        more = len(scenarios) - (room - 1)
        scenarios = [*scenarios[: room - 1], f"  +{more} more scenario(s): see summary.md"]
    tail = f"open {shown(html)}" if html else f"no report was built; make report RUN={run_dir.name}"
    return [head, *scenarios, *flagged, tail]
