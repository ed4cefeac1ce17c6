"""Capacity that some repetitions only bound from below, and what the lab's rule may conclude from it.

A capacity repetition whose steps stopped before the server missed its SLO (the generator reached its
sustainable rate or could not keep the knee's rate, or the steps ran out: `limited_by` other than
"server") measured a lower bound: the server's knee lies above it. The rule (lab.results.stats.decide,
same margin, same detectable effect) runs on the values as measured, lower bounds included. A lower
bound can only understate its server, so:
- a winner with lower bounds stands: it wins even on its understated values;
- a verdict against a server with lower bounds is not allowed (its true values may be higher): "not
  judged", with what the rule could see;
- a tie where only one side has lower bounds says that side at least ties the other: were it worse by
  the detectable effect, its understated values would have shown it (with the test's power); a tie
  where both have them is not judged;
- entries without lower bounds are judged as the rule says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Entry = dict[str, Any]
KINDS = {"generator": "what the generator could offer", "not reached": "the rates offered"}


def _bounded_caps(e: Entry) -> list[dict[str, Any]]:
    """The repetitions' capacities that hold a value (those the rule tests)."""
    caps = (r.get("capacity") for r in e.get("repetitions") or [])
    return [c for c in caps if isinstance(c, dict) and isinstance(c.get("capacity_rps"), int | float)]


def lower_bounds(e: Entry) -> int:
    """How many of the entry's tested capacity values are lower bounds."""
    return sum(1 for c in _bounded_caps(e) if c.get("limited_by", "server") != "server")


def values(e: Entry) -> int:
    """How many capacity values the entry's repetitions hold (those the rule tests)."""
    return len(_bounded_caps(e))


def why(e: Entry) -> str:
    """"asyncio's knee lay above what the generator could offer in 2 of 4 repetitions", or ''."""
    caps = _bounded_caps(e)
    kinds = sorted({str(c.get("limited_by")) for c in caps if c.get("limited_by", "server") != "server"})
    if not kinds:
        return ""
    where = " or ".join(KINDS.get(k, k) for k in kinds)
    return f"{e['server']}'s knee lay above {where} in {lower_bounds(e)} of {len(caps)} repetitions"


@dataclass(frozen=True)
class Reading:
    """The rule's mark read with lower bounds: `state` is "winner", "tie", "at least tie" (`bounded` at
    least ties the other) or "not judged"; `note` says which lower bounds decided it ('' when none)."""

    state: str
    winner: str | None = None  # the winner, or the side that at least ties
    other: str | None = None
    bounded: bool = False  # lower bounds were in play
    note: str = ""


def read(mark: str, a: Entry, b: Entry) -> Reading:
    """The reading of lab.results.headline.judge's `mark` from a to b on capacity (higher is better):
    'better' (b higher), 'worse' (a higher), 'within noise' or 'not compared'."""
    if mark == "not compared":
        return Reading("not judged")
    if mark in ("better", "worse"):
        win, lose = (b, a) if mark == "better" else (a, b)
        if lower_bounds(lose):
            return Reading("not judged", win["server"], lose["server"], True, why(lose))
        note = f"{why(win)}: it wins even on those" if lower_bounds(win) else ""
        return Reading("winner", win["server"], lose["server"], bool(note), note)
    na, nb = lower_bounds(a), lower_bounds(b)
    if not na and not nb:
        return Reading("tie", b["server"], a["server"])
    if na and nb:
        return Reading("not judged", b["server"], a["server"], True, f"{why(b)}; {why(a)}")
    held, free = (a, b) if na else (b, a)
    return Reading("at least tie", held["server"], free["server"], True, why(held))
