"""The verdict matrix: per scenario and headline figure, the winner with its ratio and interval, or a tie
with the change it could have seen; what index.html opens with and results.json's `verdicts` holds.

Each cell compares the best server on the figure with the runner-up by the one rule
(lab.results.headline.judge, margin between servers of one run): a winner only when the rule marks the
difference; otherwise a tie, stated with its minimum detectable effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lab.results import stats
from lab.results.headline import FIGURES, Entry, judge

# The headline figures, in the matrix's column order; "throughput" is capacity at the SLO in an open-model
# scenario, successful requests per second otherwise.
COLUMNS = ("cpu_per_req", "throughput", "p99", "rss_per_conn")
LABELS = {"cpu_per_req": "CPU per request", "throughput": "throughput or capacity", "p99": "p99 latency",
          "rss_per_conn": "memory per connection"}
STATES = ("winner", "tie", "not judged", "generator-bound", "one server", "not measured")


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
        if self.state == "winner" and d is not None and d.ratio is not None:
            ci = f" [{d.ci[0]:.2f}-{d.ci[1]:.2f}]" if d.ci else ""
            return f"{self.winner} {d.ratio:.2f}x{ci} vs {self.runner_up}"
        if self.state == "tie":
            seen = d.could_see() if d is not None else ""
            return f"tie (could see {seen})" if seen else "tie"
        return f"{self.state} ({self.note})" if self.note else self.state

    def detail(self) -> str:
        """The longer reading: the confidence and, for a tie, the sensitivity with the repetitions for 5 %."""
        d = self.decision
        if d is None:
            return self.note
        parts = [f"{self.winner} vs {self.runner_up}: {d.confidence()}"]
        if self.state != "winner" and d.mde is not None:
            parts.append(d.sensitivity())
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
    if not usable:
        return Cell(column, key, "not measured")
    ranked = sorted(usable, key=lambda e: (fig.value(e) or 0.0) * (-1 if fig.better > 0 else 1))
    best = ranked[0]
    if len(ranked) == 1:
        return Cell(column, key, "one server", best["server"], note=f"only {best['server']} measured")
    second = ranked[1]
    if column == "throughput" and (best.get("generator_bound") or second.get("generator_bound")):
        return Cell(column, key, "generator-bound", best["server"], second["server"],
                    note="the load generator set the pace; CPU per request decides")
    mark, _, decision = judge(fig, second, best, margin=margin)
    if decision is None or decision.p is None or mark == "not compared":
        why = decision.reason if decision is not None and decision.p is None else "too few requests or values"
        return Cell(column, key, "not judged", best["server"], second["server"], decision, why)
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
