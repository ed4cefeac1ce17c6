"""Does `make load` measure what `make bench` measures? The CPU time per request of the same servers
on /json and /db from Locust (`make load`) and from wrk (`make bench`), with the same budget,
connections and request head, one repetition of each in turn, so the machine's drift hits both
alike. wrk waits THINK_MS after each response, because Locust does not answer at once either, and
how soon the next request comes changes what a gevent server pays per request (lab/bench/bench.py):
without the wait, gevent /json read 23-24 % dearer under Locust than under wrk, in two runs.
A figure agrees when the 90 % confidence interval of its load/bench ratio (over cycles, a
t-interval on logs) lies inside 1/1.15..1.15: an equivalence test, so too few cycles on a noisy
machine fail it rather than pass it.

Called by `python -m lab selfcheck --load-vs-bench N` (N cycles; 0 skips it).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import t as t_dist

from lab.bench import bench
from lab.load import plan, runner
from lab.load.settings import Settings, say

SCENARIOS = ("json", "db")  # make load's scenario -> bench's endpoint of the same name
MARGIN = 1.15
THINK_MS = 1  # wrk's smallest wait; Locust turns around in 0.1-0.2 ms, and any wait past the server's
# own work after a response has the same effect
CONFIDENCE = 0.90


@dataclass(frozen=True)
class Agreement:
    server: str
    scenario: str
    ratios: tuple[float, ...]  # load / bench, one per cycle

    @property
    def ratio(self) -> float:
        return math.exp(statistics.fmean(math.log(r) for r in self.ratios))

    @property
    def interval(self) -> tuple[float, float] | None:
        """The CONFIDENCE interval of the geometric-mean ratio; None with fewer than 2 cycles."""
        n = len(self.ratios)
        if n < 2:
            return None
        logs = [math.log(r) for r in self.ratios]
        half = float(t_dist.ppf(0.5 + CONFIDENCE / 2, n - 1)) * statistics.stdev(logs) / math.sqrt(n)
        mean = statistics.fmean(logs)
        return math.exp(mean - half), math.exp(mean + half)

    @property
    def agrees(self) -> bool:
        ci = self.interval
        return ci is not None and ci[0] >= 1 / MARGIN and ci[1] <= MARGIN

    def text(self) -> str:
        ci = self.interval
        shown = f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else ""
        verdict = "agrees" if self.agrees else "not shown to agree"
        return (f"{self.server} /{self.scenario}: load/bench x{self.ratio:.2f}{shown} over "
                f"{len(self.ratios)} cycles: {verdict} within {MARGIN - 1:.0%}")


def load_costs(run_dir: Path) -> dict[tuple[str, str], float]:
    """(server, scenario) -> CPU us per request (median over the run's repetitions) of a load run."""
    doc = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    out = {}
    for entry in doc["results"]:
        median = ((entry.get("cost") or {}).get("cpu_us_per_request") or {}).get("median")
        if median:
            out[(entry["server"], entry["scenario"])] = float(median)
    return out


def bench_costs(folder: Path) -> dict[tuple[str, str], float]:
    """(server, scenario) -> CPU us per request of the one bench run under `folder`."""
    found = sorted(folder.glob("bench-*/bench.json"))
    if not found:
        return {}
    doc = json.loads(found[-1].read_text(encoding="utf-8"))
    out = {}
    for server, data in doc["servers"].items():
        for scenario in SCENARIOS:
            figure = data.get("endpoints", {}).get(f"/{scenario}") or {}
            if figure.get("cpu_us"):
                out[(server, scenario)] = float(figure["cpu_us"])
    return out


def bench_argv(base: Settings, folder: Path) -> list[str]:
    """`make bench` with the load run's settings (servers, budget, connections, CPUs, duration, idle
    CPUs) and a client that turns around as Locust's does, without the lean references and metrics-off
    twins, which have no `make load` figure."""
    users = base.users or base.scenario(SCENARIOS[0]).users
    cpus = {"--server-cpus": base.server_cpus, "--load-cpus": base.load_cpus}
    argv = ["--models", ",".join(base.servers), "--endpoints", ",".join(SCENARIOS),
            "--duration", str(max(1, math.ceil(base.duration))), "--reps", "1", "--connections", str(users),
            "--head", "locust", "--think-ms", str(THINK_MS), "--server-cpu", str(base.server_cpu or "none"),
            "--references", "no",
            "--idle-poll", base.idle_poll, "--reports-dir", str(folder), "--no-check"]
    for flag, value in cpus.items():
        if value:
            argv += [flag, ",".join(str(c) for c in value)]
    return argv


def planned_seconds(base: Settings, cycles: int) -> float:
    """The check's wall time as the two commands plan theirs (process starts not counted)."""
    one = base.replace(scenarios=SCENARIOS, reps=1)
    figures = len(bench.plan_targets(one.servers, [f"/{s}" for s in SCENARIOS], references=False))
    return cycles * (plan.total_seconds(one, False)
                     + bench.estimate_seconds(figures, 1, max(1, math.ceil(one.duration))))


def check(base: Settings, folder: Path, cycles: int,
          run_bench: Callable[[Sequence[str]], int] = bench.main) -> dict[str, Any]:
    settings = base.replace(scenarios=SCENARIOS, reps=1)
    say(f"\n== load vs bench: CPU per request on /{' and /'.join(SCENARIOS)} from Locust and from wrk, "
        f"{cycles} cycles of one repetition each; every figure must agree within {MARGIN - 1:.0%}")
    pairs: dict[tuple[str, str], list[float]] = {}
    problems = []
    for cycle in range(1, cycles + 1):
        run_id = f"lvb-load-{cycle}"
        code = runner.run(settings.replace(run_id=run_id, reports_dir=folder), link_latest=False)
        bench_dir = folder / f"lvb-bench-{cycle}"
        say(f"load vs bench, cycle {cycle}/{cycles}: make bench")
        bench_code = run_bench(bench_argv(settings, bench_dir))
        if code != 0 or bench_code != 0:
            problems.append(f"cycle {cycle}: load exited {code}, bench {bench_code}; read {folder}")
            continue
        on_load, on_bench = load_costs(folder / run_id), bench_costs(bench_dir)
        for key in sorted(on_load.keys() & on_bench.keys()):
            pairs.setdefault(key, []).append(on_load[key] / on_bench[key])
    found = [Agreement(server, scenario, tuple(r)) for (server, scenario), r in sorted(pairs.items())]
    wanted = len(settings.servers) * len(SCENARIOS)
    if len(found) < wanted:
        problems.append(f"{wanted - len(found)} of {wanted} figures had no CPU per request on one side")
    return {"check": "load vs bench", "passed": not problems and all(a.agrees for a in found),
            "problems": problems, "agreements": [a.text() for a in found],
            "ratios": {f"{a.server} /{a.scenario}": list(a.ratios) for a in found}}
