"""Rounds added to a scenario until every server's CPU per request resolves the change asked for.

A scenario runs its profile's rounds (each server once, interleaved). With RESOLVE set it then adds a
round while the verdict between some two of its servers on CPU per request could not see that change
(the detectable effect of the verdicts' round-by-round test, lab.results.headline.judge; a server alone
in its scenario: against a twin of itself, lab.results.stats.twin_mde), up to MAX_REPS repetitions and
within the run's time cap (TIME_CAP, calibration included): each scenario may spend its share of the
time the cap leaves over the plan, and what it leaves passes on to the next.

The stop reads the repetitions' scatter only, never a difference between servers (a sample size
re-estimated from the variance), so the verdicts' error rates stand. make selfcheck's A/A pairs and
power curve measure them with rounds added as a default run adds them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.results import build, drift, headline, stats

RESOLVED, AT_MAX, AT_CAP, OFF, TOO_FEW = "resolved", "max_reps", "time_cap", "off", "too_few"


@dataclass(frozen=True)
class Reach:
    """What the verdicts between one server and the others of its scenario could see on CPU per request
    after `reps` rounds: the least sensitive of them, against `against` (None: a server alone, against
    a twin of itself). mde None: fewer rounds than the verdicts test (lab.results.stats.MIN_REPS)."""

    server: str
    reps: int
    mde: float | None
    against: str | None = None

    def could(self) -> str:
        vs = f" against {self.against}" if self.against else ""
        return (f"could see {self.mde:.1%}{vs}" if self.mde is not None
                else f"could see nothing yet (fewer than {stats.MIN_REPS} repetitions)")

    def as_dict(self) -> dict[str, Any]:
        return {"server": self.server, "reps": self.reps, "against": self.against,
                "mde": None if self.mde is None else round(self.mde, 4)}


def share(cap_s: float | None, elapsed_s: float, planned_rest_s: float, scenarios_left: int) -> float | None:
    """Seconds of added rounds one scenario may spend: an even part of what the cap leaves over the plan
    of this scenario and those after it (None: no cap)."""
    if cap_s is None:
        return None
    return max(0.0, cap_s - elapsed_s - planned_rest_s) / max(1, scenarios_left)


def reach(rep_dirs: Mapping[str, Sequence[Path]], metas: Mapping[str, dict[str, Any]],
          calibration: dict[str, Any] | None, margin: float, cache: dict[Path, dict[str, Any]]
          ) -> list[Reach]:
    """Each server's reach from its repetitions so far, CPU per request judged as the verdicts judge it
    (round by round, at the scenario's median speed where every repetition has a reading:
    headline.cpu_figure). `cache`: repetitions already read, by folder."""
    entries: list[dict[str, Any]] = []
    for server, dirs in rep_dirs.items():
        reps = []
        for d in dirs:
            if d not in cache and (d / "run.json").is_file():
                cache[d] = build.build_rep(d, metas[server], calibration)
            if d in cache:
                reps.append(cache[d])
        entries.append({"server": server, "repetitions": reps})
    reference = (drift.run_speed(entries) or {}).get("work_per_cpu_ms")
    drift.adjust(entries, reference, build.spread)
    fig = headline.cpu_figure(entries)
    if len(entries) == 1:
        logs = [math.log(v) for v in fig.values(entries[0]) if v > 0]
        sd = statistics.stdev(logs) if len(logs) >= stats.MIN_REPS else None  # fewer: no verdict yet
        return [Reach(entries[0]["server"], len(logs), None if sd is None else stats.twin_mde(sd, len(logs),
                                                                                            margin))]
    worst: dict[str, Reach] = {}
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            verdict = headline.by_rounds(fig, a, b, margin)
            n = min(verdict.n)
            mde = verdict.mde if n >= stats.MIN_REPS else None
            for one, other in ((a["server"], b["server"]), (b["server"], a["server"])):
                seen = worst.get(one)
                if seen is None or (seen.mde is not None and (mde is None or mde > seen.mde)):
                    worst[one] = Reach(one, n, mde, other)
    return [worst[e["server"]] for e in entries]


@dataclass
class Rounds:
    """One scenario's rounds: the planned ones, those added, and why adding stopped."""

    planned: int
    resolve: float  # the change every server should resolve (0.10: 10 %); 0: add none
    max_reps: int
    share_s: float | None  # seconds this scenario may add; None: no cap
    spent_s: float = 0.0
    done: int = 0
    stopped: str = ""
    last: list[Reach] = field(default_factory=list)

    def worst(self) -> Reach | None:
        known = [r for r in self.last if r.mde is not None]
        unknown = [r for r in self.last if r.mde is None]
        return unknown[0] if unknown else max(known, key=lambda r: r.mde or 0.0, default=None)

    def more(self, found: list[Reach], round_s: float) -> bool:
        """Whether to add a round after `done` of them, given each server's reach; sets `stopped`."""
        self.last = found
        worst = self.worst()
        if not self.resolve:
            self.stopped = OFF
        elif self.planned < stats.MIN_REPS:  # REPS below what a verdict tests: it asked for no verdict
            self.stopped = TOO_FEW
        elif worst is not None and worst.mde is not None and worst.mde <= self.resolve:
            self.stopped = RESOLVED
        elif self.done >= self.max_reps:
            self.stopped = AT_MAX
        elif self.share_s is not None and self.spent_s + round_s > self.share_s:
            self.stopped = AT_CAP
        else:
            self.stopped = ""
        return not self.stopped

    def describe(self) -> str:
        """One line: how many repetitions each server ran and why no more were added."""
        worst = self.worst()
        seen = (f"every server could see {worst.mde:.1%} or less" if worst and worst.mde is not None
                else f"fewer than {stats.MIN_REPS} repetitions, which no verdict tests")
        added = self.done - self.planned
        head = f"{self.done} repetitions" + (f" ({added} added)" if added > 0 else "")
        if self.stopped == RESOLVED:
            return f"{head}: {seen}, the {self.resolve:.0%} asked for"
        if self.stopped == TOO_FEW:
            return (f"{head}: rounds are added from {stats.MIN_REPS} repetitions on, the fewest a verdict "
                    "tests")
        if self.stopped == OFF or worst is None:
            return f"{head}: {seen}"
        short = (f"{worst.server} {worst.could()}" if worst.mde is not None else seen) + (
            f", not the {self.resolve:.0%} asked for")
        why = (f"MAX_REPS={self.max_reps} reached" if self.stopped == AT_MAX
               else f"another round would pass this scenario's share of TIME_CAP ({self.share_s or 0:.0f} s)")
        return f"{head}: {short}; {why}"

    def as_dict(self) -> dict[str, Any]:
        share_s = None if self.share_s is None else round(self.share_s, 1)
        return {"planned": self.planned, "run": self.done, "resolve": self.resolve or None,
                "max_reps": self.max_reps, "share_seconds": share_s,
                "added_seconds": round(self.spent_s, 1), "stopped": self.stopped,
                "reach": [r.as_dict() for r in self.last], "text": self.describe()}
