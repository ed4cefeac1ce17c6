"""Are the default run's CPU-per-request ratios between servers those of a full core? And of halting CPUs?

Called by `python -m lab selfcheck --fidelity` (LAB_SELFCHECK_FIDELITY=yes). Three runs of json, db
and io with the same Locust client, users, repetitions and pinning (servers on the server CPUs,
Locust and PostgreSQL on the load CPUs), differing in one condition each:
- `default`: the run's own settings (the profile's CPU budget, idle CPUs polling; CPU per request from
  each repetition's full-core window, after its budgeted one: lab/load/full_core.py);
- `full-core`: no budget at all, each server alone on its CPU, at the load Locust sustains, measured as
  long as the default's two windows together;
- `halting`: the default with idle CPUs halting (LAB_IDLE_POLL=no), as production machines do.
A server's ratio is its CPU per request over asyncio's, taken per repetition round (the servers of a
round ran back to back, so the machine's drift cancels) and averaged on logs. Fidelity: each server's
ratio under the default over its ratio at a full core; it agrees when the 90 % interval of that
lies inside 1/1.1..1.1 (an equivalence test: too few or too noisy repetitions fail it, "not shown"). Halting:
each server's own CPU per request halting over polling, judged by the lab's rule (lab/results/stats.py)
with the margin between runs (LAB_MARGIN_ACROSS), so a difference is reported only beside its noise.

The client is Locust in all three runs, never wrk: how fast a client turns around changes what
gevent pays per request (lab/bench/bench.py), so the full-core figures here are not the wrk figures
of `make bench`.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scipy.stats import t as t_dist

from lab import files
from lab.load import plan, runner
from lab.load.settings import Settings, say
from lab.results import stats

SCENARIOS = ("json", "db", "io")
REFERENCE = "asyncio"
MARGIN = 0.10
CONFIDENCE = 0.90  # an equivalence test: the interval must lie inside the margin, at 5 % each side
CONDITIONS = ("default", "full-core", "halting")


@dataclass(frozen=True)
class Ratio:
    """One server's CPU per request relative to the reference's, default over full core."""

    server: str
    scenario: str
    default: float | None  # server / reference under the default (geometric mean over rounds)
    full_core: float | None
    agreement: float | None  # default / full_core
    ci: tuple[float, float] | None  # its 90 % interval: inside 1/(1+MARGIN)..1+MARGIN shows agreement
    verdict: str  # agrees | differs | not shown | not measured

    @property
    def agrees(self) -> bool:
        return self.verdict == "agrees"

    def line(self) -> str:
        if self.agreement is None or self.default is None or self.full_core is None:
            return f"{self.server}/{self.scenario}: not measured (a run lacks repetitions)"
        ci = f" [{self.ci[0]:.3g}-{self.ci[1]:.3g}]" if self.ci else ""
        what = {"agrees": f"agrees within {MARGIN:.0%}",
                "differs": f"DIFFERS by more than {MARGIN:.0%}",
                "not shown": f"not shown to agree within {MARGIN:.0%} (the interval is wider)"}[self.verdict]
        return (f"{self.server}/{self.scenario}: {self.default:.3g}x {REFERENCE} under the default, "
                f"{self.full_core:.3g}x at a full core: x{self.agreement:.3g}{ci}, {what}")


def settings_for(base: Settings, condition: str) -> Settings:
    """The run of one condition: the base's servers (with the reference), json, db and io."""
    servers = base.servers if REFERENCE in base.servers else (REFERENCE, *base.servers)
    s = base.replace(servers=servers, scenarios=SCENARIOS, run_id=f"fidelity-{condition}")
    if condition == "full-core":  # as long measured as the default's two windows together
        return s.replace(server_cpu=None, duration=s.duration + s.full_core)
    if condition == "halting":
        return s.replace(idle_poll="no")
    return s


def per_rep(results: dict[str, Any]) -> dict[tuple[str, str], list[float | None]]:
    """(server, scenario) -> CPU µs per request of each repetition, in repetition order."""
    out: dict[tuple[str, str], list[float | None]] = {}
    for e in results.get("results") or []:
        # results.json keeps the values in repetition order (a failed repetition has none)
        out[(e["server"], e["scenario"])] = list(((e.get("cost") or {}).get("cpu_us_per_request") or {})
                                                 .get("values") or [])
    return out


def round_logs(cpu: dict[tuple[str, str], list[float | None]], server: str, scenario: str) -> list[float]:
    """log(server / reference) of every round in which both have a value."""
    mine, ref = cpu.get((server, scenario)) or [], cpu.get((REFERENCE, scenario)) or []
    return [math.log(a / b) for a, b in zip(mine, ref, strict=False) if a and b and a > 0 and b > 0]


def agreement(default: Sequence[float], full: Sequence[float], server: str, scenario: str) -> Ratio:
    """Default over full core, from the two runs' per-round log ratios (a two-sample t interval)."""
    if len(default) < 2 or len(full) < 2:
        return Ratio(server, scenario, None, None, None, None, "not measured")
    w = stats.welch(list(full), list(default))
    half = float(t_dist.ppf(1 - (1 - CONFIDENCE) / 2, w.df)) * w.se
    lo, hi, bound = w.diff - half, w.diff + half, math.log(1 + MARGIN)
    verdict = ("agrees" if -bound <= lo and hi <= bound else "differs" if lo > bound or hi < -bound
               else "not shown")
    return Ratio(server, scenario, round(math.exp(statistics.fmean(default)), 4),
                 round(math.exp(statistics.fmean(full)), 4), round(math.exp(w.diff), 4),
                 (round(math.exp(lo), 4), round(math.exp(hi), 4)), verdict)


def halting_lines(poll: dict[tuple[str, str], list[float | None]],
                  halt: dict[tuple[str, str], list[float | None]]) -> list[dict[str, Any]]:
    """Each server's CPU per request with idle CPUs halting against polling, by the lab's rule."""
    rows = []
    for key in sorted(poll):
        a = [v for v in poll[key] if v]
        b = [v for v in halt.get(key) or [] if v]
        if not a or not b:
            continue
        d = stats.decide(a, b, stats.margin(stats.ACROSS))  # two runs: the across-runs margin
        rows.append({"server": key[0], "scenario": key[1], "polling_us": round(statistics.median(a), 1),
                     "halting_us": round(statistics.median(b), 1), "ratio": d.ratio,
                     "ci": list(d.ci) if d.ci else None, "changed": d.changed, "p": d.p,
                     "confidence": d.confidence()})
    return rows


def read_results(run_dir: Path) -> dict[str, Any]:
    data = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def judge(dirs: dict[str, Path], servers: Sequence[str]) -> dict[str, Any]:
    """The check's verdict from the runs' folders (a missing condition leaves its part out)."""
    cpu = {c: per_rep(read_results(d)) for c, d in dirs.items() if (d / "results.json").exists()}
    ratios: list[Ratio] = []
    if "default" in cpu and "full-core" in cpu:
        for scenario in SCENARIOS:
            for server in (s for s in servers if s != REFERENCE):
                ratios.append(agreement(round_logs(cpu["default"], server, scenario),
                                        round_logs(cpu["full-core"], server, scenario), server, scenario))
    halting = halting_lines(cpu["default"], cpu["halting"]) if "default" in cpu and "halting" in cpu else []
    return {"check": "fidelity", "passed": bool(ratios) and all(r.agrees for r in ratios),
            "margin": MARGIN, "reference": REFERENCE, "client": "Locust (the same in every condition)",
            "ratios": [asdict(r) for r in ratios], "agreements": [r.line() for r in ratios],
            "halting": halting, "halting_lines": [
                f"{h['server']}/{h['scenario']}: {h['polling_us']} µs polling, {h['halting_us']} µs halting: "
                f"{'changed' if h['changed'] else 'within noise'} ({h['confidence']})" for h in halting],
            "runs": {c: str(d) for c, d in dirs.items()}}


def planned_seconds(base: Settings) -> float:
    return sum(plan.total_seconds(settings_for(base, c), False) for c in CONDITIONS)


def check(base: Settings, folder: Path) -> dict[str, Any]:
    """Run the three conditions into `folder` and judge them; every problem is named."""
    say(f"\n== fidelity: {', '.join(SCENARIOS)} under the default, at a full core and with idle CPUs "
        f"halting; ratios to {REFERENCE} must agree within {MARGIN:.0%}")
    dirs, problems = {}, []
    for condition in CONDITIONS:
        s = settings_for(base, condition).replace(reports_dir=folder)
        code = runner.run(s, link_latest=False)
        dirs[condition] = folder / s.run_id
        if code != 0:
            problems.append(f"run {s.run_id} exited {code}; read {folder / s.run_id}")
    doc = judge(dirs, settings_for(base, "default").servers)
    if problems:
        doc["problems"], doc["passed"] = problems, False
    files.write_json(folder / "fidelity.json", doc, default=str)
    return doc
