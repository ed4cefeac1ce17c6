"""What `make claims` runs: the size presets and every knob (env var and flag)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lab import knobs
from lab.knobs import env_flag
from lab.stack import idle

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = ("switch", "memory", "connections", "gil", "blocking", "guarantees")
SERVERS = ("threaded", "gevent", "asyncio", "multiproc")
BLOCKING_SERVERS = ("asyncio", "gevent", "threaded")


@dataclass(frozen=True)
class Plan:
    """Sizes of every experiment; each is bounded in count and in seconds."""

    size: str
    reps: int  # repetitions per figure; the median is reported
    round_trips: int  # switch: ping-pong round trips per repetition (two switches each)
    switch_seconds: float  # switch: a repetition stops early after this long
    park: tuple[int, ...]  # memory: units parked at once
    steps: tuple[int, ...]  # connections: the ramp of idle keep-alive connections
    ramp_seconds: float  # connections: time budget per server's ramp
    probe_requests: int  # connections: /json requests of the fresh client at each step
    cpu_n: int  # gil: loop steps of one /cpu request and of one work unit
    gil_seconds: float  # gil: seconds of load per /cpu measurement
    loop_units: int  # gil: work units per worker in the threads-vs-processes loop
    block_ms: int  # blocking: how long /block blocks
    block_seconds: float  # blocking: seconds per phase
    block_clients: int  # blocking: /json clients beside the blocking one
    servers: tuple[str, ...] = SERVERS
    experiments: tuple[str, ...] = EXPERIMENTS
    server_max_connections: int = 1_000_000  # LAB_MAX_CONNECTIONS of the ramp's servers (raised)
    ft_python: str = ""  # a free-threaded interpreter for the thread loop
    idle_poll: str = "auto"  # idle CPUs poll while measuring, as make load and make bench (lab/stack/idle.py)
    guarantee_seconds: int = 2  # guarantees: seconds of wrk per figure
    guarantee_each: bool = True  # guarantees: each of the three off alone too (else only together)


PRESETS: dict[str, Plan] = {
    "tiny": Plan(
        "tiny",
        reps=2,
        round_trips=2_000,
        switch_seconds=2.0,
        park=(100, 300),
        steps=(50, 100),
        ramp_seconds=20.0,
        probe_requests=20,
        cpu_n=20_000,
        gil_seconds=0.5,
        loop_units=4,
        block_ms=100,
        block_seconds=0.6,
        block_clients=2,
        guarantee_seconds=1,
        guarantee_each=False,
    ),
    "quick": Plan(
        "quick",
        reps=3,
        round_trips=20_000,
        switch_seconds=3.0,
        park=(1_000, 10_000),
        steps=(1_000, 2_000, 5_000, 10_000),
        ramp_seconds=45.0,
        probe_requests=100,
        cpu_n=200_000,
        gil_seconds=1.5,
        loop_units=10,
        block_ms=200,
        block_seconds=1.5,
        block_clients=4,
    ),
    "standard": Plan(
        "standard",
        reps=5,
        round_trips=30_000,
        switch_seconds=4.0,
        park=(1_000, 10_000),
        steps=(1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000),
        ramp_seconds=90.0,
        probe_requests=200,
        cpu_n=200_000,
        gil_seconds=2.5,
        loop_units=20,
        block_ms=200,
        block_seconds=2.0,
        block_clients=4,
    ),
}


def _csv(text: str, allowed: Sequence[str], knob: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise ValueError(f"{knob} must be a comma-separated list of {', '.join(allowed)}, got {text!r}")
    return items


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        steps = ()
    if not steps or steps[0] < 1 or steps[-1] > 1_000_000:
        raise ValueError(
            f"--steps / LAB_CLAIMS_STEPS must be connection counts from 1 to 1000000, "
            f"e.g. 1000,2000,5000; got {text!r}"
        )
    return steps


def parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab claims",
        description=(
            "Measure the folklore about threads, green threads and event loops on this machine; "
            "writes reports/claims-<time>/claims.{json,md,html}."
        ),
    )
    g = env.get
    env_flag(
        p,
        "--size",
        "LAB_CLAIMS_SIZE",
        "standard",
        "tiny (under a minute, for tests), quick (fewer steps and repetitions) or standard "
        "(the default, under 10 min on 2 cores)",
        env,
        choices=sorted(PRESETS),
    )
    env_flag(
        p,
        "--idle-poll",
        "LAB_IDLE_POLL",
        "auto",
        "idle CPUs poll while measuring, as in make load and make bench: auto (where the lab may), "
        "yes (or stop), no",
        env,
        choices=idle.CHOICES,
    )
    p.add_argument(
        "--only",
        default=g("LAB_CLAIMS_ONLY", ""),
        help=f"experiments to run, comma-separated: {','.join(EXPERIMENTS)} [LAB_CLAIMS_ONLY]",
    )
    p.add_argument(
        "--servers",
        default=g("LAB_CLAIMS_SERVERS", ""),
        help=f"servers for the server experiments, of {','.join(SERVERS)} [LAB_CLAIMS_SERVERS]",
    )
    p.add_argument(
        "--reps",
        default=g("LAB_CLAIMS_REPS", ""),
        help="repetitions per figure, 1-50 (default by size) [LAB_CLAIMS_REPS]",
    )
    p.add_argument(
        "--steps",
        default=g("LAB_CLAIMS_STEPS", ""),
        help="connection ramp, e.g. 1000,2000,5000,10000 (default by size) [LAB_CLAIMS_STEPS]",
    )
    p.add_argument(
        "--server-max-connections",
        default=g("LAB_CLAIMS_MAX_CONNECTIONS", ""),
        help="LAB_MAX_CONNECTIONS of the servers in the ramp (default 1000000, i.e. raised "
        "from the servers' 2000 so the OS limits show) [LAB_CLAIMS_MAX_CONNECTIONS]",
    )
    p.add_argument(
        "--ft-python",
        default=g("LAB_FT_PYTHON", ""),
        help="a free-threaded python3.13t/3.14t for the thread loop [LAB_FT_PYTHON]",
    )
    p.add_argument(
        "--reports-dir",
        default=g("LAB_REPORTS_DIR", str(REPO / "reports")),
        help="where the claims-<time> folder goes [LAB_REPORTS_DIR, default reports/]",
    )
    p.add_argument(
        "--rebuild",
        default="",
        metavar="RUN",
        help="judge the claims again and rewrite claims.md/.html from RUN's claims.json (no measuring)",
    )
    p.add_argument(
        "--out",
        default=g("LAB_CLAIMS_OUT", ""),
        help="write into this folder instead of reports/claims-<time> [LAB_CLAIMS_OUT]",
    )
    return p


def from_args(args: argparse.Namespace) -> Plan:
    """The plan for the parsed flags; ValueError names the bad knob and its allowed values."""
    plan = PRESETS[args.size]
    if args.only:
        plan = replace(plan, experiments=_csv(args.only, EXPERIMENTS, "--only / LAB_CLAIMS_ONLY"))
    if args.servers:
        plan = replace(plan, servers=_csv(args.servers, SERVERS, "--servers / LAB_CLAIMS_SERVERS"))
    reps = knobs.integer(args.reps, "--reps / LAB_CLAIMS_REPS", 1, 50)
    if reps is not None:
        plan = replace(plan, reps=reps)
    if args.steps:
        plan = replace(plan, steps=_steps(args.steps))
    cap = knobs.integer(
        args.server_max_connections, "--server-max-connections / LAB_CLAIMS_MAX_CONNECTIONS", 1, 1_000_000
    )
    if cap is not None:
        plan = replace(plan, server_max_connections=cap)
    return replace(plan, ft_python=args.ft_python.strip(), idle_poll=args.idle_poll)


def load(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[Plan, argparse.Namespace]:
    args = parser(os.environ if env is None else env).parse_args(list(argv))
    return from_args(args), args
