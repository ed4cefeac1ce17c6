"""Where a capacity scenario's repetitions step: finely across the knee found so far, and lower again when
every step of a repetition missed the SLO; and `Live`, one server of the scenario under way."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.load.run_folder import write_json
from lab.load.settings import say
from lab.results.openmodel import rep_capacity
from lab.results.records import ResultsError
from lab.stack import cpu_budget, procs
from loadtests import catalogue

# A repetition whose every step missed has no capacity: it runs again once with its steps this much
# lower (a fresh process, so the misses' backlog cannot spill into the lower steps; a lower step run right
# after an overload inherits its queue: asyncio at 0.02 core, capacity ~200/s, missed 150/s offered after
# 600 and 300/s, p99 590 ms).
AGAIN_SHARE = 0.5


@dataclass
class Live:
    """One server of the scenario under way: its process, budget and scenario.json."""

    model: str
    scen_dir: Path
    meta: dict[str, Any]
    server: procs.ServerProcess | None = None
    budget: cpu_budget.CpuBudget | None = None
    rates: tuple[float, ...] = ()
    knee: float | None = None  # where a capacity scenario's next repetition steps finely (place)
    capacities: list[float] = field(default_factory=list)  # the capacity repetitions' so far
    rss_idle: int | None = None  # the current process's RSS before any client connected
    again: set[int] = field(default_factory=set)  # repetitions already run again lower
    stopped: set[int] = field(default_factory=set)  # pids of its processes stopped already
    retiring: threading.Thread | None = None  # its process stopping in the background (lab/load/handover.py)

    @property
    def ok(self) -> bool:
        return self.meta["status"] == "running" and self.server is not None


def read(live: Live, sc: catalogue.Scenario, rep: int, slo_p99_ms: float,
         calibration: dict[str, Any] | None) -> dict[str, Any] | None:
    """A finished capacity repetition's capacity (lab.results.openmodel), or None (said why)."""
    try:
        return rep_capacity(live.scen_dir / f"rep-{rep}", slo_p99_ms, calibration)
    except ResultsError as exc:
        say(f"  {live.model}/{sc.name}: cannot read repetition {rep}'s knee ({exc}); the next keeps the "
            "steps it had")
        return None


def missed_all(live: Live, sc: catalogue.Scenario, rep: int, cap: dict[str, Any] | None) -> bool:
    """When every step of repetition `rep` missed the SLO (its first step was the server's knee), set its
    folder aside as missed-rep-<n> and lower its steps, once: True when it should run again."""
    if (cap is None or cap["capacity_rps"] is not None or cap["limited_by"] != "server"
            or rep in live.again or not cap["knee_rate"]):
        return False
    live.again.add(rep)
    folder = live.scen_dir / f"rep-{rep}"
    folder.rename(live.scen_dir / f"missed-rep-{rep}")
    first = float(cap["knee_rate"])
    if rep == 1:
        live.rates = tuple(float(max(1, round(r * AGAIN_SHARE))) for r in live.rates)
    else:
        live.knee = (live.knee or first) * AGAIN_SHARE
    live.meta.setdefault("again", []).append({"rep": rep, "first_step": first,
                                              "set_aside": f"missed-rep-{rep}"})
    write_json(live.scen_dir / "scenario.json", live.meta)
    say(f"  {live.model}/{sc.name}: rep {rep} missed the SLO at every step from {first:,.0f}/s; it runs "
        f"again with its steps at {AGAIN_SHARE:g}x (the first attempt stays in missed-rep-{rep})")
    return True


def place(live: Live, sc: catalogue.Scenario, rep: int, cap: dict[str, Any] | None) -> None:
    """After a capacity repetition: the next steps finely across the median capacity so far, never
    below a lower bound just found (its knee lies above). Re-placed after every repetition: a first
    repetition's coarse steps (or a noisy moment) can put the knee far off, and fine steps that never
    reach it leave every later repetition a lower bound ("not reached")."""
    if cap is None:
        return
    if cap["capacity_rps"]:
        live.capacities.append(cap["capacity_rps"])
    before = live.knee
    live.knee = knee = catalogue.next_knee(live.capacities, cap, before, live.rates[0])
    found = {k: cap[k] for k in ("capacity_rps", "limited_by", "knee_rate")}
    live.meta.setdefault("knees", []).append({"after_rep": rep, **found, "next_across": round(knee, 1)})
    write_json(live.scen_dir / "scenario.json", live.meta)
    if before is not None and max(knee, before) / min(knee, before) < catalogue.KNEE_RATIO:
        return  # moved by less than a fine step: nothing to tell
    held = (f"met the SLO up to {cap['capacity_rps']:,.0f}/s" if cap["capacity_rps"]
            else "missed the SLO at its first step")
    say(f"  {live.model}/{sc.name}: rep {rep} {held} ({cap['limited_by']}); the next repetition steps "
        f"{catalogue.KNEE_RATIO:g}x apart across {knee:,.0f}/s")
