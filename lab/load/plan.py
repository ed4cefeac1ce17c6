"""What a load run will do and how long it takes: the order of repetitions and the time estimate."""

from __future__ import annotations

import time

from lab.fmt import fmt_seconds
from lab.load import calibrate, variants
from lab.load.settings import Settings, say
from lab.stack import cpu_budget
from loadtests import catalogue

# Planning estimates (seconds), measured on the 2-core lab machine. Before a repetition's gate opens,
# its Locust starts (held at the gate), its fresh server starts and warms up, and its sampler starts, all
# at once (lab/load/handover.py): the longest of them counts.
# From Locust's start to the gate's opening: 0.83 and 0.86 s (medians over the 100 repetitions of two
# quiet default runs, 2026-12-07 19:55 and 21:36 UTC), the fresh server's start and warm-up the longest.
# Until /ready answers: with EST_WARM, 0.3 + 0.55 = 0.85 s before a fresh process's gate, against the
# 0.83-0.86 s from Locust's start to the gate measured above (quiet, 2-core lab VM, 2026-12-07).
EST_SERVER_START = 0.3
EST_SERVER_STOP = 0.3  # in the background after a server's repetition; waited for at a scenario's end
EST_LOCUST_START = 0.8  # interpreter and imports until the first user can spawn (0.65 s quiet)
EST_SAMPLER_START = 0.5  # until the sampler wrote its header
EST_LOCUST_WORKERS_START = 2.0  # extra for a master waiting for its workers
# From the gate's opening, besides the warm-up and the windows: the users' spawn and, after the windows,
# Locust's exit with its files in. 0.3 s: the median over the 100 repetitions of a quiet default run
# (5 repetitions, 2026-12-07; 3.3 s from gate to exit around 3.0 s of warm-up and windows); a slower
# spawn than that counts as itself.
EST_AFTER_GATE = 0.3
EST_PROBE = 1.5  # the quick probe before a capacity scenario, per server
EST_WARM = 0.55  # the warm-up burst on every fresh server process (0.5 s, and its connections)


def measured_seconds(s: Settings, sc: catalogue.Scenario) -> float:
    """The measured phase of one repetition: the duration, or one step per offered rate."""
    if sc.open_model:  # the first repetition's steps, then the fine ones across its knee; a few added
        later = len(s.rates) or catalogue.KNEE_STEPS
        steps = ((len(s.rates) or len(catalogue.PROBE_SHARES)) + later * (s.reps - 1)) / s.reps
        return s.step_seconds * (steps + min(s.extend_steps, catalogue.EXTEND_EXPECTED))
    return s.duration + full_core_seconds(s, sc)


def full_core_seconds(s: Settings, sc: catalogue.Scenario) -> float:
    """Seconds of each repetition measured with the budget lifted (lab/load/full_core.py); 0: none."""
    local = not s.topology.remote_servers
    return s.full_core if s.server_cpu is not None and local and catalogue.has_full_core(sc) else 0.0


def rep_seconds(s: Settings, sc: catalogue.Scenario, fresh: bool) -> float:
    """One repetition, from the end of the last until its files are in; `fresh`: on a new server process,
    started and warmed up while its Locust starts."""
    workers = s.locust_workers + s.remote_workers
    locust = EST_LOCUST_START + (EST_LOCUST_WORKERS_START if workers else 0)
    ready = EST_SERVER_START + EST_WARM if fresh else 0.0
    first = catalogue.schedule(sc.shape, sc.users, sc.spawn_rate, 1.0, (1.0,))[0]
    spawn = catalogue.spawn_seconds(first.users, first.spawn_rate)
    before = max(locust, ready, EST_SAMPLER_START)  # all at once, until the gate opens
    return before + max(spawn, EST_AFTER_GATE) + s.warmup + measured_seconds(s, sc)


def scenario_seconds(s: Settings, name: str) -> float:
    """One scenario for every server: start and warm each up, every repetition of each (after the first
    on a fresh process, unless LAB_FRESH_SERVER=no), and the last stop."""
    sc = s.scenario(name)
    reps = rep_seconds(s, sc, False) + (s.reps - 1) * rep_seconds(s, sc, s.fresh_server)
    per_server = EST_SERVER_START + EST_WARM + reps
    if sc.open_model and not s.rates:
        per_server += EST_PROBE
    return per_server * len(s.servers) + EST_SERVER_STOP


def order(servers: tuple[str, ...], rep: int) -> list[str]:
    """The servers' order in repetition `rep` (1-based): rotated each time, so that no server is always
    first after a start or right after the same neighbour, and drift hits every server alike."""
    k = (rep - 1) % len(servers)
    return list(servers[k:] + servers[:k])


def repetitions(s: Settings) -> list[tuple[str, int, str]]:
    """(scenario, rep, server) in the order they run: per scenario, rep by rep, servers interleaved."""
    return [(name, rep, server) for name in s.scenarios for rep in range(1, s.reps + 1)
            for server in order(s.servers, rep)]


def total_seconds(s: Settings, with_calibration: bool) -> float:
    total = sum(scenario_seconds(s, name) for name in s.scenarios)
    return total + (calibrate.estimated_seconds() if with_calibration else 0.0)


def print_plan(s: Settings, with_calibration: bool) -> float:
    total = total_seconds(s, with_calibration)
    runs = len(repetitions(s))
    say(f"plan: profile {s.profile}, {len(s.servers)} server(s) x {len(s.scenarios)} scenario(s) x {s.reps} "
        f"repetition(s) = {runs} runs of {s.duration:g}s measured after {s.warmup:g}s warm-up, "
        "repetitions interleaved across the servers")
    for name, rec in variants.records(s.variants_run(), s.variant_dirs).items():
        say(f"  variant {variants.describe(name, rec)}")
    if s.full_core and s.server_cpu is not None:
        say(f"  each steady repetition then goes on {s.full_core:g}s with the budget lifted: CPU per request "
            "comes from that full-core window, throughput and latency from the budgeted one")
    for name in s.scenarios:
        sc = s.scenario(name)
        load = (f"offered rates {', '.join(f'{r:g}' for r in s.rates) if s.rates else 'from a probe'}, "
                f"{s.step_seconds:g}s each, up to {s.extend_steps} more until the SLO is missed"
                if sc.open_model else f"{sc.users:>5} users, {sc.shape:<6}")
        say(f"  {name:<14} {load} ~{fmt_seconds(scenario_seconds(s, name))}  {sc.description}")
    pin = (f"servers on CPUs {s.server_cpus}, Locust on CPUs {s.load_cpus}" if s.server_cpus
           else "no pinning")
    if s.database_cpus:
        pin += f", the lab's PostgreSQL on CPUs {s.database_cpus}"
    say(f"  {pin}; {cpu_budget.describe(s.server_cpu, s.cpu_period_us)}; "
        f"{s.topology.describe(s.locust_workers, s.remote_workers)}"
        + ("; calibration first" if with_calibration else ""))
    if s.resolve and s.max_reps > s.reps and not all(s.scenario(n).open_model for n in s.scenarios):
        cap = f", while the whole run stays within {fmt_seconds(s.time_cap)}" if s.time_cap else ""
        say(f"  then rounds added to a scenario while some server's CPU per request could not see "
            f"{s.resolve:.0%} (RESOLVE), up to {s.max_reps} repetitions (MAX_REPS){cap} (TIME_CAP)")
    say(f"planned total: ~{fmt_seconds(total)}" + (" before rounds added" if s.resolve else ""))
    return total


class Progress:
    """Elapsed and remaining time across the whole run."""

    def __init__(self, total_runs: int, planned: float) -> None:
        self.began = time.monotonic()
        self.total_runs = total_runs
        self.planned = planned
        self.index = 0

    def remaining(self) -> float:
        """The plan's estimate scaled by how far through the repetitions the run is."""
        done = self.index / self.total_runs if self.total_runs else 1.0
        return max(0.0, self.planned * (1 - done))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.began
