"""What `make compare` tests: the servers, scenarios and figures of the question asked, the family its
correction counts (and so what each figure could see); every other figure is shown, labelled not tested."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lab import knobs
from lab.report import forest
from lab.results import stats

NOT_TESTED = "not tested (outside the question)"
FIELDS = ("servers", "scenarios", "figures")
VARS = {"servers": "LAB_COMPARE_SERVERS", "scenarios": "LAB_COMPARE_SCENARIOS",
        "figures": "LAB_COMPARE_FIGURES"}
HELP = {"servers": "test only these servers (comma-separated; default all); every server of a scenario stays "
                   "a peer of the others",
        "scenarios": "test only these scenarios (comma-separated; default all)",
        "figures": "test only these figures (comma-separated keys; default all): {keys}"}


class ScopeError(ValueError):
    """A server, scenario or figure the two runs do not both hold; the message lists the valid ones."""


class Judged(Protocol):
    key: str
    mark: str
    confidence: str
    decision: stats.Decision | None
    judged: bool


class Entry(Protocol):
    @property
    def scenario(self) -> str: ...
    @property
    def server(self) -> str: ...
    @property
    def rows(self) -> Sequence[Judged]: ...


@dataclass(frozen=True)
class Scope:
    """The question: the servers, scenarios and figure keys tested; None is all of them."""

    servers: frozenset[str] | None = None
    scenarios: frozenset[str] | None = None
    figures: frozenset[str] | None = None

    def covers(self, scenario: str, server: str, key: str) -> bool:
        asked = ((self.servers, server), (self.scenarios, scenario), (self.figures, key))
        return all(want is None or have in want for want, have in asked)

    def text(self) -> str:
        """'servers asyncio; scenarios db; figures cpu_per_req', or 'every figure of every entry'."""
        asked = [f"{name} {', '.join(sorted(want))}" for name, want in self._fields() if want]
        return "; ".join(asked) if asked else "every figure of every entry"

    def check(self, servers: Iterable[str], scenarios: Iterable[str], figures: Iterable[str]) -> None:
        """A ScopeError naming the unknown values, the knob and the valid ones (the first field with any)."""
        valid = dict(zip(FIELDS, (list(dict.fromkeys(v)) for v in (servers, scenarios, figures)),
                         strict=True))
        for name, want in self._fields():
            if want is not None and (bad := sorted(want - set(valid[name]))):
                where = "compare tests" if name == "figures" else "in both runs"
                raise ScopeError(f"{VARS[name]} / --{name}: unknown {', '.join(bad)}; use one or more of the "
                                 f"{name} {where}, comma-separated: {', '.join(valid[name])} (empty: all)")

    def _fields(self) -> list[tuple[str, frozenset[str] | None]]:
        return [("servers", self.servers), ("scenarios", self.scenarios), ("figures", self.figures)]


FULL = Scope()


def parse(raw: str | None) -> frozenset[str] | None:
    """'a, b' -> {'a', 'b'}; empty or None -> None (all)."""
    words = frozenset(w.strip() for w in (raw or "").split(",") if w.strip())
    return words or None


def add_flags(parser: argparse.ArgumentParser, figures: Sequence[str]) -> None:
    """--servers, --scenarios and --figures, each defaulting to its LAB_COMPARE_* variable."""
    for name in FIELDS:
        knobs.env_flag(parser, f"--{name}", VARS[name], "", HELP[name].format(keys=", ".join(figures)),
                       metavar="A,B")


def from_args(args: argparse.Namespace) -> Scope:
    return Scope(*(parse(getattr(args, name)) for name in FIELDS))


def limit(entries: Sequence[Entry], question: Scope) -> None:
    """Every row outside the question keeps its values and ratio but no mark, and leaves the family."""
    for entry in entries:
        for row in entry.rows:
            if question.covers(entry.scenario, entry.server, row.key):
                continue
            d = row.decision
            row.judged, row.mark = False, NOT_TESTED
            row.confidence = (f"x{d.ratio:.3g}" + (f" [{d.ci[0]:.3g}-{d.ci[1]:.3g}]" if d.ci else "")
                              if d is not None and d.ratio is not None else "")


def drawn(rows: Sequence[forest.Row], question: Scope, always: bool) -> bool:
    """Whether compare.html draws a forest plot: one with an entry tested, or `always` (an empty one says
    nothing was compared) when every figure was tested."""
    return any(r.mark != forest.COMMON for r in rows) or (always and question == FULL)


def unmarked(entry: Entry) -> str:
    """What the terminal says of an entry with nothing marked: not tested, or no change beyond noise."""
    return NOT_TESTED if all(r.mark == NOT_TESTED for r in entry.rows) else "no change beyond noise"


def fold(entries: Sequence[Entry], marked: int) -> str:
    """A scenario's fold in compare.html: 'n figure(s) marked', or not tested when none of it was."""
    return NOT_TESTED if all(unmarked(e) == NOT_TESTED for e in entries) else f"{marked} figure(s) marked"


def as_family(entries: Sequence[Entry], flagged: frozenset[str]) -> int:
    """Judge every tested figure as one family (stats.adjust): a change that is clear on its own but not among
    all the figures tested at once goes back to within noise. Returns the family's size."""
    rows = [r for e in entries for r in e.rows if r.judged]
    for row, d in zip(rows, stats.adjust([r.decision for r in rows]), strict=True):
        if d is None or row.decision is None:
            continue
        if row.decision.changed and not d.changed and row.mark in flagged:
            row.mark = "within noise"
            row.confidence = f"{d.confidence()}; not significant among all figures tested"
        row.decision = d
    return sum(r.decision is not None and r.decision.p is not None for r in rows)


def family_text(question: Scope, size: int) -> str:
    """The family the correction counted, as the pages and the terminal state it."""
    each = (f"{size} tests; alpha/{size} each ({stats.ALPHA:g}/{size} = {stats.ALPHA / size:.2g}) for what a "
            "figure could see, Benjamini-Hochberg over them for the marks" if size > 1
            else f"{size} test{'' if size == 1 else 's'}; alpha {stats.ALPHA:g}")
    if question == FULL:
        return f"Tested: {question.text()}: {each}."
    return (f"Tested: {question.text()}: {each}. Every other figure is in the tables, marked '{NOT_TESTED}', "
            "and left out of the forest plots.")

