"""The verdict matrix: per scenario and headline figure, the winner with its ratio and interval, or a tie
with the change it could have seen; what index.html opens with and results.json's `verdicts` holds.

Each cell compares the best server on the figure with the runner-up by the one rule
(lab.results.headline.judge, margin between servers of one run): a winner only when the rule marks the
difference; otherwise a tie, stated with its minimum detectable effect. A capacity with repetitions that
only bound it from below is read as lab.results.bounds says: a winner on lower bounds stands, a verdict
against them is "not judged", a tie with them one side is "at least tie"; each says which lower bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.results import bounds, stats
from lab.results.headline import FIGURES, Entry, cpu_figure, judge

# The headline figures, in the matrix's column order; "throughput" is capacity at the SLO in an open-model
# scenario, successful requests per second otherwise.
COLUMNS = ("cpu_per_req", "throughput", "p99", "rss_per_conn")
LABELS = {"cpu_per_req": "CPU per request", "throughput": "throughput or capacity", "p99": "p99 latency",
          "rss_per_conn": "memory per connection"}
STATES = ("winner", "tie", "at least tie", "not judged", "generator-bound", "one server", "not measured")


@dataclass(frozen=True)
class Cell:
    """One scenario x figure of the matrix."""

    column: str
    figure: str  # the FIGURES key judged (ok_rps or capacity for throughput)
    state: str  # one of STATES
    winner: str | None = None  # the best server on the figure (the winner when state is "winner")
    runner_up: str | None = None
    decision: stats.Decision | None = None  # the runner-up (A) against the best (B)
    note: str = ""

    def text(self) -> str:
        """'threaded 0.81x [0.70-0.93] vs gevent', 'tie (could see ±12%)', 'not judged (...)'."""
        d = self.decision
        seen = d.could_see() if d is not None else ""
        if self.state == "winner" and d is not None and d.ratio is not None:
            ci = f" [{d.ci[0]:.2f}-{d.ci[1]:.2f}]" if d.ci else ""
            stands = f" ({self.note})" if self.note else ""  # it won on lower bounds
            return f"{self.winner} {d.ratio:.2f}x{ci} vs {self.runner_up}{stands}"
        if self.state == "tie":
            return f"tie (could see {seen})" if seen else "tie"
        if self.state == "at least tie":  # the winner field holds the side with lower bounds
            return (f"{self.winner} at least ties {self.runner_up} ({self.note}"
                    + (f"; could see {seen}" if seen else "") + ")")
        if self.state == "not judged" and seen:
            return f"not judged ({self.note}; could see {seen})"
        return f"{self.state} ({self.note})" if self.note else self.state

    def detail(self) -> str:
        """The longer reading: the confidence and, for a tie, the sensitivity with the repetitions for 5 %."""
        d = self.decision
        if d is None:
            return self.note
        parts = [f"{self.winner} vs {self.runner_up}: {d.confidence()}"]
        if self.state != "winner" and d.mde is not None:
            parts.append(d.sensitivity())
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"figure": self.figure, "state": self.state, "winner": self.winner,
                "runner_up": self.runner_up, "text": self.text(), "note": self.note,
                "decision": self.decision.as_dict() if self.decision is not None else None}


def _figure_key(column: str, entries: Sequence[Entry]) -> str:
    if column != "throughput":
        return column
    return "capacity" if any(e.get("capacity") for e in entries) else "ok_rps"


def cell(column: str, entries: Sequence[Entry], margin: float) -> Cell:
    """The best server on this figure against the runner-up, by the rule."""
    key = _figure_key(column, entries)
    fig = FIGURES[key]
    usable = [e for e in entries if not e.get("problems") and fig.value(e) is not None]
    if key == "cpu_per_req":
        fig = cpu_figure(usable)
    if not usable:
        return Cell(column, key, "not measured")
    ranked = sorted(usable, key=lambda e: (fig.value(e) or 0.0) * (-1 if fig.better > 0 else 1))
    best = ranked[0]
    if len(ranked) == 1:
        return Cell(column, key, "one server", best["server"], note=f"only {best['server']} measured")
    second = ranked[1]
    if key == "ok_rps" and (best.get("generator_bound") or second.get("generator_bound")):
        return Cell(column, key, "generator-bound", best["server"], second["server"],
                    note="the load generator set the pace; CPU per request decides")
    mark, _, decision = judge(fig, second, best, margin=margin)
    if decision is None or decision.p is None or mark == "not compared":
        why = decision.reason if decision is not None and decision.p is None else "too few requests or values"
        return Cell(column, key, "not judged", best["server"], second["server"], decision, why)
    if key == "capacity":
        r = bounds.read(mark, second, best)
        if r.bounded:
            return Cell(column, key, r.state, r.winner, r.other, decision, r.note)
    state = "winner" if mark in ("better", "worse") else "tie"
    return Cell(column, key, state, best["server"], second["server"], decision)


def scenario_cells(entries: Sequence[Entry], margin: float) -> dict[str, Cell]:
    return {column: cell(column, entries, margin) for column in COLUMNS}


def matrix(results: Sequence[Entry], margin: float) -> dict[str, dict[str, Cell]]:
    """{scenario: {column: Cell}} over a run's results entries, scenarios in run order."""
    groups: dict[str, list[Entry]] = {}
    for e in results:
        groups.setdefault(str(e.get("scenario")), []).append(e)
    return {s: scenario_cells(es, margin) for s, es in groups.items()}


def as_json(results: Sequence[Entry], margin: float) -> dict[str, Any]:
    """results.json's `verdicts`: the rule's settings and every cell (lab/results/schema.md)."""
    return {"rule": stats.settings(stats.WITHIN, margin), "columns": list(COLUMNS),
            "scenarios": {s: {c: cell.as_dict() for c, cell in row.items()}
                          for s, row in matrix(results, margin).items()}}
