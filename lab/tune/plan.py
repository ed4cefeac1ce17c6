"""The sweep's definition: the knobs a sweep can take, its values, each run's settings and their order."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from lab import knobs
from lab.fmt import fmt_value
from lab.load import settings as load_settings
from loadtests import catalogue
from servers import settings as server_settings

MAX_VALUES = 20
DEFAULT_SERVER = "asyncio"
DEFAULT_PARAM = "pool_size"
DEFAULT_SCENARIO = "hold"
DEFAULT_SLO_MS = 100.0
DEFAULT_REPS = 4  # rounds per value: the fewest the rule (lab.results.stats.MIN_REPS) judges two values with
DEFAULT_DURATION = 5.0
DEFAULT_WARMUP = 1.0
RUNNER_PROFILE = "quick"  # the runner needs a profile; duration, warm-up and reps are always given
# The runner's flags (dest: neutral value) whose env vars mean the sweep's own knobs, not the runs'.
SWEEP_SETS = {"profile": RUNNER_PROFILE, "servers": "", "scenarios": "", "users": "", "duration": "",
              "warmup": "", "reps": "", "run_id": "", "slo_p99_ms": "", "rates": "", "step_seconds": "",
              "variants": ""}
class TuneError(RuntimeError):
    """A mistake a person can fix; the message says what to do."""


@dataclass(frozen=True)
class Param:
    name: str
    env_var: str
    kind: type
    defaults: str
    meaning: str


PARAMS = {p.name: p for p in (
    Param("pool_size", "LAB_POOL_SIZE", int, "1,2,4,8,16,32,64,128", "database connections per process"),
    Param("max_inflight", "LAB_MAX_INFLIGHT", int, "1,2,4,8,16,32,64,256",
          "requests in progress per process"),
    Param("workers", "LAB_WORKERS", int, "1,2,4", "multiproc worker processes"),
    Param("acquire_timeout", "LAB_ACQUIRE_TIMEOUT", float, "0.05,0.1,0.25,0.5,1,2",
          "seconds to wait for a pool connection or in-flight slot before a 503"),
)}


def env_text(param: Param, value: float) -> str:
    """The value as the server's environment variable takes it."""
    return str(int(value)) if param.kind is int else fmt_value(value)


@dataclass
class Sweep:
    param: Param
    values: list[float]
    servers: list[str]
    scenario: str
    slo_p99_ms: float
    base: load_settings.Settings  # the runner's settings every run starts from (one repetition each)
    tune_id: str
    rounds: int = 2  # REPS: passes over all values, each running every value once
    force: bool = False

    @property
    def tune_dir(self) -> Path:
        return self.base.reports_dir / self.tune_id

    def point_id(self, value: float) -> str:
        return f"{self.param.name}-{fmt_value(value)}"

    def env_text(self, value: float) -> str:
        return env_text(self.param, value)

    def run_settings(self, value: float, rnd: int) -> load_settings.Settings:
        """One run: this value, one repetition, into <tune>/<param>-<value>-r<round>/."""
        env = {**self.base.server_env, self.param.env_var: self.env_text(value)}
        return dataclasses.replace(self.base, run_id=f"{self.point_id(value)}-r{rnd}", reps=1,
                                   run_token=secrets.token_hex(4), server_env=env, reports_dir=self.tune_dir)

    def schedule(self) -> list[tuple[int, float]]:
        """(round, value) in run order: round-robin, every other round backwards, so that a slow spell
        of the machine (another program's load) hits one repetition of several values, not all of one."""
        return [(r, v) for r in range(1, self.rounds + 1)
                for v in (self.values if r % 2 else list(reversed(self.values)))]


def parse_values(text: str, param: Param) -> list[float]:
    values: list[float] = []
    for raw in (x.strip() for x in text.split(",")):
        if not raw:
            continue
        try:
            v = float(raw)
        except ValueError:
            raise TuneError(f"VALUES: {raw!r} is not a number; write them like 2,5,10,20,40") from None
        if not math.isfinite(v):
            raise TuneError(f"VALUES: {raw!r} is not a finite number")
        if param.kind is int and v != int(v):
            raise TuneError(f"VALUES: {param.name} takes whole numbers, got {raw!r}")
        values.append(int(v) if param.kind is int else v)
    if not values:
        raise TuneError(f"VALUES is empty: give the values of {param.name} to sweep, e.g. {param.defaults}")
    values = sorted(set(values))
    if len(values) > MAX_VALUES:
        raise TuneError(f"VALUES: {len(values)} values; sweep at most {MAX_VALUES} at once")
    return values


def slo_ms(raw: str) -> float:
    """SLO_P99_MS: the p99 a recommended value must stay under (flag, env, or the default)."""
    return _number(raw, "SLO_P99_MS", DEFAULT_SLO_MS, 0.001, 3_600_000)


def _number(raw: str, name: str, default: float, low: float, high: float) -> float:
    try:
        value = knobs.number(raw, name, low, high)
    except ValueError as exc:
        raise TuneError(str(exc)) from None
    return default if value is None else value


def server_config(model: str, env: dict[str, str]) -> server_settings.Settings:
    """The settings a server of the sweep will run with (validates the swept value, too)."""
    return server_settings.load(model, env={"LAB_DATABASE_URL": server_settings.DEFAULT_DATABASE_URL, **env})


def processes(model: str, cfg: server_settings.Settings, env: dict[str, str],
              server_cpus: list[int] | None) -> int:
    """Processes of one server: multiproc without LAB_WORKERS sizes itself to the server CPUs it is
    pinned to (the runner starts it with that affinity), not to the CPUs this process may use."""
    if model == "multiproc" and not env.get("LAB_WORKERS") and server_cpus:
        return len(server_cpus)
    return cfg.workers


def runner_defaults() -> load_settings.Settings:
    """The load runner's settings from its own knobs' env vars (CPU pinning, Locust workers, SHAPE, the
    servers' LAB_* knobs, ...), less those a sweep sets itself (they would mean something else here).
    No CPU budget unless LAB_SERVER_CPU asks for one."""
    args = vars(load_settings.build_parser().parse_args([]))
    unknown = set(SWEEP_SETS) - set(args)
    if unknown:  # the runner's flags changed: say so rather than sweep with the wrong settings
        raise TuneError(f"the load runner has no settings {sorted(unknown)}: update lab/tune/plan.py")
    base = load_settings.from_args(argparse.Namespace(**{**args, **SWEEP_SETS}))
    return base if os.environ.get("LAB_SERVER_CPU") else dataclasses.replace(base, server_cpu=None)


def sweep_from(args: argparse.Namespace) -> Sweep:
    param = PARAMS.get(args.param.strip())
    if param is None:
        raise TuneError(f"PARAM={args.param!r} is unknown; choose from {', '.join(PARAMS)}")
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [s for s in servers if s not in server_settings.MODELS]
    if bad or not servers:
        raise TuneError(f"SERVER: unknown {', '.join(bad) or '(none)'}; choose from "
                        f"{', '.join(server_settings.MODELS)} (comma-separated for one curve each)")
    servers = list(dict.fromkeys(servers))
    if param.name == "workers" and servers != ["multiproc"]:
        raise TuneError("PARAM=workers changes only the multiproc server (the others always run one "
                        "process); use SERVER=multiproc")
    scenario = args.scenario.strip()
    if "," in scenario:
        raise TuneError(f"SCENARIO={scenario!r}: a sweep runs one scenario; run one tune per scenario")
    if scenario not in catalogue.SCENARIOS:
        raise TuneError(f"SCENARIO={scenario!r} is unknown; choose from {', '.join(catalogue.SCENARIOS)}")
    values = parse_values(args.values or param.defaults, param)
    slo = slo_ms(args.slo_p99_ms)
    reps = int(_number(args.reps, "REPS", DEFAULT_REPS, 1, 100))
    if args.reps.strip() and float(args.reps) != reps:
        raise TuneError(f"REPS must be a whole number, got {args.reps!r}")
    duration = _number(args.duration, "DURATION", DEFAULT_DURATION, 1, 24 * 3600)
    warmup = _number(args.warmup, "WARMUP", DEFAULT_WARMUP, 0, 3600)
    try:
        tune_id = knobs.run_id(args.tune_id, "TUNE_ID") or time.strftime(f"%Y%m%d-%H%M%S-tune-{param.name}")
    except ValueError as exc:
        raise TuneError(str(exc)) from None
    try:
        users = knobs.integer(args.users, "USERS", 1, 100_000)
        base = dataclasses.replace(
            runner_defaults(), servers=tuple(servers), scenarios=(scenario,), users=users, duration=duration,
            warmup=warmup, reps=1, calibrate=args.calibrate, reports_dir=Path(args.reports_dir).absolute(),
            database_url=args.database_url or None)
    except (ValueError, load_settings.RunError) as exc:
        raise TuneError(str(exc)) from None
    for value in values:  # each value against the servers' own limits (servers/settings.py)
        env = {**base.server_env, param.env_var: env_text(param, value)}
        for model in servers:
            try:
                server_config(model, env)
            except server_settings.SettingsError as exc:
                raise TuneError(f"VALUES: {param.name}={fmt_value(value)} is not valid for the {model} "
                                f"server: {exc}") from None
    return Sweep(param, values, servers, scenario, slo, base, tune_id, rounds=reps,
                 force=bool(args.force))


def reproduce(sweep: Sweep) -> str:
    s = sweep.base
    parts = [".venv/bin/python", "-m", "lab", "tune", "--server", ",".join(sweep.servers), "--param",
             sweep.param.name, "--values", ",".join(fmt_value(v) for v in sweep.values), "--scenario",
             sweep.scenario, "--slo-p99-ms", f"{sweep.slo_p99_ms:g}", "--reps", str(sweep.rounds),
             "--duration", f"{s.duration:g}", "--warmup", f"{s.warmup:g}"]
    if s.users:
        parts += ["--users", str(s.users)]
    env = {k: v for k, v in sorted(s.server_env.items()) if k != sweep.param.env_var}
    for k, v in (("LAB_SERVER_CPUS", s.server_cpus), ("LAB_LOAD_CPUS", s.load_cpus)):
        if v:
            env[k] = ",".join(map(str, v))
    if s.locust_workers:
        env["LOCUST_WORKERS"] = str(s.locust_workers)
    if s.shape:
        env["SHAPE"] = s.shape
    prefix = " ".join(f"{k}={v}" for k, v in env.items())
    return (prefix + " " if prefix else "") + " ".join(parts)
