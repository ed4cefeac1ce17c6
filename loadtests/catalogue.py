"""The scenario catalogue: what `make load` runs, as pure data.

No Locust import here (Locust monkey-patches the standard library on import): the runner, the
results builder and the tests read this module in-process; only loadtests/locustfile.py, which
runs inside the Locust processes, imports Locust. The locustfile defines one user class per
scenario (`Scenario.user_class`) and one load shape that follows `schedule()`.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, replace
from typing import Any

from lab import knobs

SHAPES = ("steady", "ramp", "spike")  # closed-loop shapes; open-model scenarios step offered rates
STEP_SECONDS = 1.0  # measured seconds per offered rate of a capacity scenario
DEFAULT_SLO_P99_MS = 100.0
# A capacity scenario's first repetition offers shares of the closed-loop rate a quick probe reached;
# RATES= replaces them. Every repetition then goes on by itself while its last step met the SLO (the
# probe often lands below the knee): EXTEND_MAX more steps at most, each EXTEND_FACTOR higher, never
# past the generator's calibrated sustainable rate.
PROBE_SHARES = (0.5, 0.7, 0.85, 1.0, 1.15)
EXTEND_FACTOR = 1.15
EXTEND_MAX = 8
EXTEND_EXPECTED = 1.5  # steps added on average (the plan's estimate)
# Later repetitions step finely across the knee found so far (lab/load/knees.py place): a floor
# step at KNEE_FLOOR of it (the knee moves between repetitions by more than the fine steps span: one whose
# first fine step missed would have no capacity at all), then KNEE_STEPS - 1 steps KNEE_RATIO apart, the
# highest one step above its capacity, the grid shifted by a fraction of a step in each repetition so
# that, over the repetitions, the capacities fall between the steps rather than on one of them.
KNEE_RATIO = 1.08
KNEE_STEPS = 4
KNEE_FLOOR = 0.7
RAMP_STEPS = 5
SPIKE_BASE = 0.2  # users outside the spike, as a share of the peak
# The spike: base load for 40 % of the run, peak for 20 %, base again for 40 %.
SPIKE_PHASES = ((0.0, 0.4, False), (0.4, 0.6, True), (0.6, 1.0, False))


def _env_int(name: str, default: int, low: int, high: int) -> int:
    value = knobs.integer(os.environ.get(name), name, low, high)
    return default if value is None else value


# Idle keep-alive users of the `connections` scenario. 1000 is what one Locust process holds
# comfortably on a 2-core machine; raise it with LOCUST_WORKERS and more load CPUs.
CONNECTIONS_USERS = _env_int("LAB_CONNECTIONS_USERS", 1000, 1, 100_000)


@dataclass(frozen=True)
class Scenario:
    name: str
    user_class: str  # class name in loadtests/locustfile.py
    users: int  # peak concurrent users
    spawn_rate: float  # users started per second
    shape: str  # one of SHAPES
    uses_db: bool  # does the server touch PostgreSQL for it
    path: str  # the open model's one request; else a GET on the scenario's code path (the warm-up)
    description: str
    open_model: bool = False  # requests start on a schedule of offered rates (capacity scenarios)


@dataclass(frozen=True)
class Stage:
    """One stretch of a load shape: `users` from `start` to `end` seconds (measured phase)."""

    start: float
    end: float
    users: int
    spawn_rate: float
    rate: float | None = None  # offered requests/s (open model); None: closed-loop users


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("json", "JsonUser", 50, 200, "steady", False, "/json",
                 "GET /json as fast as possible: the framework's own cost per request"),
        Scenario("plaintext", "PlaintextUser", 50, 200, "steady", False, "/plaintext",
                 "GET /plaintext as fast as possible: the smallest response there is"),
        Scenario("db", "DbUser", 50, 200, "steady", True, "/db",
                 "GET /db: one random World row per request"),
        Scenario("queries", "QueriesUser", 50, 200, "steady", True, "/queries?queries=20",
                 "GET /queries?queries=20: twenty sequential queries per request"),
        Scenario("updates", "UpdatesUser", 20, 80, "steady", True, "/db",
                 "GET /updates?queries=5: five reads and five committed writes per request"),
        Scenario("fortunes", "FortunesUser", 50, 200, "steady", True, "/fortunes",
                 "GET /fortunes: a query, a sort and an escaped HTML template"),
        Scenario("io", "IoUser", 200, 400, "steady", False, "/io?ms=50",
                 "GET /io?ms=50 from many users: waiting, where green threads and coroutines shine"),
        Scenario("cpu", "CpuUser", 20, 80, "steady", False, "/cpu?n=20000",
                 "GET /cpu?n=20000: pure-Python work, where the GIL bites and processes win"),
        Scenario("hold", "HoldUser", 50, 200, "steady", True, "/hold?ms=20",
                 "GET /hold?ms=20 from more users than pool connections: pool size and semaphores"),
        Scenario("writes", "WritesUser", 20, 80, "steady", True, "/db",
                 "POST /orders with a unique Idempotency-Key: durable writes, every ack checked"),
        Scenario("mixed", "MixedUser", 100, 100, "steady", True, "/db",
                 "a realistic blend: reads, pages, waits, a little CPU and some writes, with think time"),
        Scenario("connections", "ConnectionsUser", CONNECTIONS_USERS, 250, "steady", False, "/json",
                 f"{CONNECTIONS_USERS} mostly idle keep-alive users (one /json every ~5 s each): "
                 "memory and threads per open connection [LAB_CONNECTIONS_USERS]"),
        Scenario("ramp", "DbUser", 100, 100, "ramp", True, "/db",
                 f"GET /db in {RAMP_STEPS} equal steps up to the peak users: where the server saturates"),
        Scenario("spike", "DbUser", 200, 400, "spike", True, "/db",
                 "GET /db at a fifth of the peak users, a sudden spike to the peak, then back"),
        *(Scenario(f"capacity-{name}", "OpenUser", 1, 1, "rates", db, path, f"offered {path} at stepped "
                   "rates (open model): p50 and p99 against the offered rate, and the capacity at the SLO",
                   open_model=True)
          for name, path, db in (("json", "/json", False), ("db", "/db", True), ("io", "/io?ms=50", False))),
    )
}


# The default CPU budget per server, in cores: small enough that on a 2-core machine every server
# saturates below what one Locust process can drive (measured: see docs/method.md).
SERVER_CPU = 0.1


@dataclass(frozen=True)
class Profile:
    name: str
    scenarios: tuple[str, ...]
    duration: float  # measured seconds per repetition
    warmup: float  # seconds at full load before measuring (not counted), per repetition
    reps: int
    description: str
    server_cpu: float | None = None  # cores per server (cgroup quota); None: no budget
    # Measured seconds per repetition right after `duration` with the budget lifted: CPU per request at
    # a full core (steady closed-loop scenarios under a budget; lab/load/full_core.py). 0: none.
    full_core: float = 0.0
    # Rounds added while some server's CPU per request could not see `resolve` (0.10: 10 %; 0: none added),
    # up to `max_reps` repetitions, within `time_cap` seconds for the whole run (None: no cap).
    resolve: float = 0.0
    max_reps: int = 0
    time_cap: float | None = None


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", ("json", "db"), 1, 1, 2,
                "every server, two short scenarios: proves the pipeline end to end (CI)", SERVER_CPU, 1),
        # Four short repetitions, interleaved across the servers (the fewest the rule tests), then rounds
        # added where the machine's noise keeps a server from resolving 10 %, as far as 8 minutes allow:
        # a quiet scenario stops at four and leaves the time to a noisy one (docs/method.md). Five
        # scenarios, one per axis the models differ on.
        Profile("quick", ("json", "db", "io", "hold", "writes"), 1, 0.5, 4,
                "every server, the core scenarios, four interleaved repetitions and more until each "
                "resolves 10 %, within 8 minutes: the default of `make load`",
                SERVER_CPU, 1.5, resolve=0.10, max_reps=10, time_cap=480.0),
        # Four repetitions: the fewest the lab's rule judges; the first finds each knee, the rest step
        # finely across it.
        Profile("capacity", ("capacity-json", "capacity-db", "capacity-io"), 1, 0.5, 4,
                "every server, offered rates stepped until each misses the SLO, four repetitions: capacity "
                "at the SLO", SERVER_CPU),
        Profile("full", tuple(SCENARIOS), 30, 5, 5,
                "every server, every scenario and shape, five repetitions and more until each resolves "
                "10 %", SERVER_CPU, 10, resolve=0.10, max_reps=10),
    )
}
DEFAULT_PROFILE = "quick"


def has_full_core(sc: Scenario) -> bool:
    """Whether a scenario's repetitions can end with a full-core phase: steady closed-loop load only (a
    ramp's or a spike's load changes, and an open model's offered rates are the question itself)."""
    return sc.shape == "steady" and not sc.open_model


def scenario(name: str, users: int | None = None) -> Scenario:
    """A scenario by name, optionally with another peak user count (spawn rate scales along)."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    base = SCENARIOS[name]
    if users is None or users == base.users:
        return base
    return replace(base, users=users, spawn_rate=max(1.0, base.spawn_rate * users / base.users))


def schedule(shape: str, users: int, spawn_rate: float, duration: float,
             rates: tuple[float, ...] = ()) -> list[Stage]:
    """The measured phase of a shape as stages (the warm-up before it runs at the first stage).
    `rates`: shape "rates" (open model), one stage per offered rate, `duration` seconds each."""
    if shape == "rates":
        if not rates:
            raise ValueError("the open-model shape needs offered rates")
        return [Stage(i * duration, (i + 1) * duration, 1, 1.0, r) for i, r in enumerate(rates)]
    if shape == "steady":
        return [Stage(0.0, duration, users, spawn_rate)]
    if shape == "ramp":
        step = duration / RAMP_STEPS
        return [
            Stage(i * step, (i + 1) * step, max(1, round(users * (i + 1) / RAMP_STEPS)), spawn_rate)
            for i in range(RAMP_STEPS)
        ]
    if shape == "spike":
        base = max(1, round(users * SPIKE_BASE))
        return [
            Stage(lo * duration, hi * duration, users if peak else base, spawn_rate)
            for lo, hi, peak in SPIKE_PHASES
        ]
    raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")


def probe_rates(probed_rps: float, ceiling: float | None = None) -> tuple[float, ...]:
    """Offered rates around the closed-loop rate a quick probe reached (at least 10/s apart); the
    highest at most `ceiling` (the generator's sustainable rate: past it a miss says nothing)."""
    if ceiling:
        probed_rps = min(probed_rps, ceiling / PROBE_SHARES[-1])
    rates: list[float] = []
    for share in PROBE_SHARES:
        rate = max(10.0, round(probed_rps * share, -1))
        if not rates or rate >= rates[-1] + 10:
            rates.append(rate)
    return tuple(rates)


def knee_rates(capacity: float, rep: int, reps: int, ceiling: float | None = None) -> tuple[float, ...]:
    """The offered rates of repetition `rep` (2..reps) around a knee first found at `capacity` (the
    highest rate that met the SLO): a floor step, then KNEE_STEPS - 1 steps KNEE_RATIO apart, the grid
    shifted by (rep - 2) / (reps - 1) of a step; none above `ceiling` (the generator's sustainable rate)."""
    shift = KNEE_RATIO ** ((rep - 2) / max(1, reps - 1))
    top = capacity * KNEE_RATIO * shift
    fine = [float(max(1, round(top / KNEE_RATIO ** k))) for k in range(KNEE_STEPS - 2, -1, -1)]
    return _below([float(max(1, round(capacity * KNEE_FLOOR * shift))), *fine], ceiling)


def next_knee(capacities: list[float], last: dict[str, Any], before: float | None,
              first_rate: float) -> float:
    """Where the next capacity repetition steps finely: the median of the capacities found so far, never
    below the last repetition's when that is a lower bound (`last`: its capacity, lab.results.openmodel);
    none found yet: where it was, else half the first step (every step missed)."""
    knee = statistics.median(capacities) if capacities else before or first_rate / 2
    if last.get("lower_bound") and last.get("capacity_rps"):
        knee = max(knee, float(last["capacity_rps"]))
    return float(knee)


def _below(rates: list[float], ceiling: float | None) -> tuple[float, ...]:
    """`rates` held to `ceiling`, each once."""
    out: list[float] = []
    for rate in rates:
        rate = min(rate, ceiling) if ceiling else rate
        if not out or rate > out[-1]:
            out.append(rate)
    return tuple(out)


def extend_rate(last: float, factor: float, ceiling: float | None) -> float | None:
    """The next step past `last` (rounded), held to `ceiling`; None when `last` already reached it."""
    if ceiling is not None and last >= ceiling * 0.999:
        return None
    rate = float(max(last + 1, round(last * factor)))
    return min(rate, ceiling) if ceiling is not None else rate


def spawn_seconds(users: int, spawn_rate: float) -> float:
    return users / spawn_rate if spawn_rate > 0 else 0.0
