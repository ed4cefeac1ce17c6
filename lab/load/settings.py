"""The settings of one load run: a frozen dataclass built by one factory from flags and env vars."""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from lab import cpus as cpu_lists
from lab import knobs
from lab.hosts import netns
from lab.hosts.cli import add_hosts_flags, hosts_from
from lab.knobs import SERVER_KNOBS, env_flag
from lab.load import speed, topology, variants
from lab.results import stats
from lab.stack import cpu_budget, idle
from loadtests import catalogue
from servers.settings import MODELS

REPO = Path(__file__).resolve().parents[2]
ARRIVALS = ("uniform", "poisson")
CALIBRATE_MODES = ("auto", "force", "skip")
LOCUST_HTML = ("first", "all", "none")  # the load generator's calibration: reuse, measure, none


class RunError(RuntimeError):
    """A failure a person can act on; the message says what to do."""


def say(message: str) -> None:
    print(message, flush=True)


def parse_cpus(text: str) -> list[int]:
    try:
        return cpu_lists.parse_cpus(text)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def check_run_id(raw: str) -> str:
    """A run folder's name: letters, digits, '-', '_' and '.'; '' means 'make one up'."""
    try:
        return knobs.run_id(raw)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


@dataclass(frozen=True)
class Settings:
    profile: str
    servers: tuple[str, ...]
    scenarios: tuple[str, ...]
    users: int | None
    duration: float
    warmup: float
    reps: int
    shape: str | None
    locust_workers: int
    server_cpus: list[int] | None
    load_cpus: list[int] | None
    reports_dir: Path
    calibrate: str  # auto | force | skip
    server_cpu: float | None = None  # cores per server (cgroup quota); None: no budget
    resolve: float = 0.0  # rounds added until every server's CPU per request sees this (lab/load/rounds.py)
    max_reps: int = 0  # the most repetitions rounds added reach (at least `reps`)
    time_cap: float | None = None  # seconds the whole run may take with rounds added; None: no cap
    full_core: float = 0.0  # measured seconds per repetition with the budget lifted (catalogue.Profile)
    cpu_period_us: int = cpu_budget.DEFAULT_PERIOD_US
    rates: tuple[float, ...] = ()  # offered rates of open-model (capacity) scenarios; (): probe first
    step_seconds: float = catalogue.STEP_SECONDS  # measured seconds per offered rate
    slo_p99_ms: float = catalogue.DEFAULT_SLO_P99_MS
    extend_steps: int = catalogue.EXTEND_MAX  # steps a capacity repetition may add past its planned ones
    arrival: str = "uniform"  # uniform | poisson
    fresh_server: bool = True  # a new server process for every repetition (False: one per scenario)
    idle_poll: str = "auto"  # idle CPUs poll while measuring: auto | yes | no (lab/stack/idle.py)
    margin_within: float = stats.DEFAULT_MARGINS[stats.WITHIN]  # the verdicts' margin between servers
    speed_probe: bool = True  # the machine's speed measured beside the servers (lab/load/speed.py)
    locust_html: str = "first"  # Locust's own HTML report: each entry's first repetition, all, none
    database_cpus: list[int] | None = None  # the lab's PostgreSQL pinned here for the run; None: left alone
    database_url: str | None = None
    run_id: str = ""
    remote_workers: int = 0  # workers on other machines the master waits for (started by hand)
    master_bind: str = "127.0.0.1"
    master_port: int = 0  # 0: a free port
    target_host: str = "127.0.0.1"  # the servers' address as the load generator sees it
    topology: topology.Topology = field(default_factory=topology.Topology)  # where each part runs
    run_token: str = field(default_factory=lambda: secrets.token_hex(4))  # makes order keys unique
    server_env: dict[str, str] = field(default_factory=dict)
    # Servers of the run that are a model with knobs of their own (make selfcheck's power curve: the same
    # server twice, one with extra CPU work): name in `servers` -> (model, its extra server knobs).
    variants: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    variant_dirs: dict[str, str] = field(default_factory=dict)  # name -> the checkout its server runs from

    def scenario(self, name: str) -> catalogue.Scenario:
        sc = catalogue.scenario(name, self.users)
        return dataclasses.replace(sc, shape=self.shape) if self.shape and not sc.open_model else sc

    def variants_run(self) -> dict[str, tuple[str, dict[str, str]]]:
        """The variants among this run's servers (a derived run may keep fewer servers than variants)."""
        return {name: v for name, v in self.variants.items() if name in self.servers}

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def build_parser(prog: str = "python -m lab load", description: str | None = None) -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default=env.get("PROFILE") or catalogue.DEFAULT_PROFILE,
                   help=f"{', '.join(catalogue.PROFILES)} [PROFILE, default {catalogue.DEFAULT_PROFILE}]")
    p.add_argument("--servers", default=env.get("SERVERS", ""),
                   help=f"comma-separated, default all: {','.join(MODELS)} [SERVERS]")
    p.add_argument("--variants", default=env.get("LAB_VARIANTS", ""),
                   help=f"extra servers of the run, each a model with knobs of its own or its code from "
                        f"another checkout, interleaved and judged like any server: {variants.GRAMMAR}, "
                        f"e.g. {variants.EXAMPLE} (see docs/load.md) [LAB_VARIANTS]")
    p.add_argument("--scenarios", default=env.get("SCENARIOS", ""),
                   help="comma-separated, default the profile's; any of "
                        f"{','.join(catalogue.SCENARIOS)} [SCENARIOS]")
    p.add_argument("--users", default=env.get("USERS", ""),
                   help="peak users for every selected closed-loop scenario (default: each scenario's own)"
                        " [USERS]")
    p.add_argument("--duration", default=env.get("DURATION", ""),
                   help="measured seconds per repetition (default: the profile's) [DURATION]")
    p.add_argument("--warmup", default=env.get("WARMUP", ""),
                   help="seconds at full load before measuring, not counted (default: the profile's)"
                        " [WARMUP]")
    p.add_argument("--reps", default=env.get("REPS", ""),
                   help="repetitions per server x scenario, interleaved across servers (default: the "
                        "profile's) [REPS]")
    p.add_argument("--resolve", default=env.get("RESOLVE", ""),
                   help="per cent: after its repetitions, a scenario adds rounds while some server's CPU per "
                        "request could not see this change within the run (80 %% power), up to MAX_REPS "
                        "and TIME_CAP; 0: the repetitions only (default: the profile's) [RESOLVE]")
    p.add_argument("--max-reps", default=env.get("MAX_REPS", ""),
                   help="the most repetitions a scenario reaches with rounds added (default: the profile's)"
                        " [MAX_REPS]")
    p.add_argument("--time-cap", default=env.get("TIME_CAP", ""),
                   help="minutes the whole run may take, calibration included, when adding rounds; each "
                        "scenario may spend its share of what the plan leaves; 0: no cap (default: the "
                        "profile's) [TIME_CAP]")
    p.add_argument("--shape", default=env.get("SHAPE", ""),
                   help="override every closed-loop scenario's load shape: "
                        f"{', '.join(catalogue.SHAPES)} [SHAPE]")
    p.add_argument("--server-cpu", default=env.get("LAB_SERVER_CPU", ""),
                   help="CPU budget per server in cores, enforced by a cgroup quota, e.g. 0.5; 'none' runs "
                        "unbudgeted (default: the profile's) [LAB_SERVER_CPU]")
    p.add_argument("--cpu-period-us", default=env.get("LAB_SERVER_CPU_PERIOD_US", ""),
                   help=f"the quota's period in microseconds (default {cpu_budget.DEFAULT_PERIOD_US}) "
                        "[LAB_SERVER_CPU_PERIOD_US]")
    p.add_argument("--full-core-seconds", default=env.get("LAB_FULL_CORE_SECONDS", ""),
                   help="seconds each steady repetition goes on after its budgeted window with the CPU "
                        "budget lifted; CPU per request comes from them; 0: none, CPU per request under the "
                        "budget (default: the profile's) [LAB_FULL_CORE_SECONDS]")
    p.add_argument("--rates", default=env.get("RATES", ""),
                   help="offered requests/s of the capacity scenarios' steps, e.g. 200,400,800 (default: "
                        "derived from a quick probe of each server) [RATES]")
    p.add_argument("--step-seconds", default=env.get("STEP_SECONDS", ""),
                   help=f"measured seconds per offered rate (default {catalogue.STEP_SECONDS:g})"
                        " [STEP_SECONDS]")
    p.add_argument("--slo-p99-ms", default=env.get("SLO_P99_MS", ""),
                   help=f"the latency budget of capacity at SLO (default {catalogue.DEFAULT_SLO_P99_MS:g}) "
                        "[SLO_P99_MS]")
    p.add_argument("--extend-steps", default=env.get("EXTEND_STEPS", ""),
                   help="steps a capacity repetition adds, each "
                        f"{catalogue.EXTEND_FACTOR:g}x higher, while its last step met the SLO, up to the "
                        f"generator's sustainable rate (default {catalogue.EXTEND_MAX}; 0: the planned steps "
                        "only) [EXTEND_STEPS]")
    env_flag(p, "--arrival", "ARRIVAL", "uniform", "open-model arrivals: evenly spaced or Poisson "
             "(default uniform)", env, choices=ARRIVALS)
    env_flag(p, "--fresh-server", "LAB_FRESH_SERVER", "yes", "start a new server process for every "
             "repetition, so that the state a process settles into is part of the noise the verdicts see, "
             "not a difference between runs; 'no': one process per server and scenario (default yes)", env,
             choices=("yes", "no"))
    p.add_argument("--locust-workers", default=env.get("LOCUST_WORKERS", "0"),
                   help="0: one Locust process; N: a master and N workers on this machine [LOCUST_WORKERS]")
    p.add_argument("--remote-workers", default=env.get("LOCUST_REMOTE_WORKERS", "0"),
                   help="Locust workers on other machines the master waits for; see docs/scale-out.md "
                        "[LOCUST_REMOTE_WORKERS]")
    p.add_argument("--master-bind", default=env.get("LOCUST_MASTER_BIND", ""),
                   help="address the Locust master listens on for workers (default 127.0.0.1; with remote "
                        "workers, LAB_BIND) [LOCUST_MASTER_BIND]")
    p.add_argument("--master-port", default=env.get("LOCUST_MASTER_PORT", "0"),
                   help="port of the Locust master (0: any free one) [LOCUST_MASTER_PORT]")
    p.add_argument("--target-host", default=env.get("LAB_TARGET_HOST", ""),
                   help="the servers' address as the load generator reaches it (default LAB_BIND) "
                        "[LAB_TARGET_HOST]")
    p.add_argument("--bind", default=env.get("LAB_BIND", ""),
                   help="the one address the servers listen on (default 127.0.0.1, or LAB_TARGET_HOST "
                        "when that is an address of this machine; never every interface unless given "
                        "as 0.0.0.0) [LAB_BIND]")
    env_flag(p, "--test-hosts", "LAB_TEST_HOSTS", "no", "run across the lab's test hosts (network "
             "namespaces, made when missing): servers and PostgreSQL on a, the Locust master on b, "
             f"LOCUST_WORKERS workers (default {topology.TEST_HOST_WORKERS}) on c; needs root", env,
             choices=("yes", "no", "1", "0"))
    add_hosts_flags(p, env)
    p.add_argument("--server-cpus", default=env.get("LAB_SERVER_CPUS", "0"),
                   help="CPUs the servers are pinned to [LAB_SERVER_CPUS, default 0]")
    p.add_argument("--load-cpus", default=env.get("LAB_LOAD_CPUS", "1"),
                   help="CPUs Locust and the sampler are pinned to [LAB_LOAD_CPUS, default 1]")
    p.add_argument("--database-cpus", default=env.get("LAB_DATABASE_CPUS", "load"),
                   help="CPUs the lab's own PostgreSQL is pinned to for the run: 'load' (the load CPUs, "
                        "so its work does not land on the servers' CPUs), a list, or 'none' "
                        "[LAB_DATABASE_CPUS, default load]")
    env_flag(p, "--idle-poll", "LAB_IDLE_POLL", "auto", "idle CPUs poll while measuring, so no server pays "
             "to wake a halted CPU: auto (where allowed, else the report says why not), yes (or stop), no "
             "(default auto)", env, choices=idle.CHOICES)
    stats.add_margin_flag(p, stats.WITHIN)
    env_flag(p, "--speed-probe", "LAB_SPEED_PROBE", "yes", "a drift control: a fixed loop of CPU work on "
             "the server CPUs (SCHED_IDLE, 5 %% of one CPU) through every repetition, so that results carry "
             "the machine's speed and CPU per request at the run's speed beside the raw figure; no: none "
             "(default yes)", env, choices=speed.CHOICES)
    env_flag(p, "--locust-html", "LAB_LOCUST_HTML", "first", "Locust's own HTML report (about 1 MB a "
             "repetition; the lab's report does not need it): first (each server and scenario's first "
             "repetition), all, none (default first)", env, choices=LOCUST_HTML)
    p.add_argument("--allow-extra-cpu", action="store_true",
                   default=knobs.yes(env.get("LAB_ALLOW_EXTRA_CPU")),
                   help="start the servers with LAB_EXTRA_CPU_US from the environment (or a variant's), a "
                        "lab-only knob that adds CPU work to every request (refused without this) "
                        "[LAB_ALLOW_EXTRA_CPU=1]")
    p.add_argument("--reports-dir", default=env.get("LAB_REPORTS_DIR", str(REPO / "reports")),
                   help="where run folders go [LAB_REPORTS_DIR, default reports/]")
    env_flag(p, "--calibrate", "CALIBRATE", "auto", "auto: reuse a fresh calibration, else measure; force: "
             "measure; skip: none", env, choices=CALIBRATE_MODES)
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL to use (default: LAB_DATABASE_URL or the embedded one)")
    p.add_argument("--run-id", default=env.get("RUN_ID", ""),
                   help="name of the run folder (default <date>-<time>-<profile>) [RUN_ID]")
    return p


def int_knob(raw: str, name: str, low: int, high: int) -> int | None:
    try:
        return knobs.integer(raw, name, low, high)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def _extend_steps(raw: str) -> int:
    value = int_knob(raw, "EXTEND_STEPS", 0, 100)
    return catalogue.EXTEND_MAX if value is None else value


def _float_knob(raw: str, name: str, low: float, high: float, unit: str = "seconds") -> float | None:
    try:
        return knobs.number(raw, name, low, high)
    except ValueError as exc:
        raise RunError(f"{exc} ({unit})") from None


def _rates(raw: str) -> tuple[float, ...]:
    rates = []
    for part in _csv_list(raw):
        value = _float_knob(part, "RATES", 1, 1_000_000, "requests/s")
        if value is not None:
            rates.append(value)
    if rates != sorted(rates) or len(set(rates)) != len(rates):
        raise RunError(f"RATES={raw!r}: list the offered rates in increasing order, each once")
    return tuple(rates)


def from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Settings:
    """The one factory: flags (which default to env vars) -> validated Settings."""
    environ = os.environ if env is None else env
    if args.profile not in catalogue.PROFILES:
        raise RunError(f"PROFILE={args.profile!r} is unknown; choose from {', '.join(catalogue.PROFILES)}")
    prof = catalogue.PROFILES[args.profile]
    servers = _csv_list(args.servers) or list(MODELS)
    bad = [s for s in servers if s not in MODELS]
    if bad:
        raise RunError(f"SERVERS: unknown {', '.join(bad)}; choose from {', '.join(MODELS)}")
    scenarios = _csv_list(args.scenarios) or list(prof.scenarios)
    bad = [s for s in scenarios if s not in catalogue.SCENARIOS]
    if bad:
        raise RunError(f"SCENARIOS: unknown {', '.join(bad)}; choose from {', '.join(catalogue.SCENARIOS)}")
    shape = args.shape.strip() or None
    if shape and shape not in catalogue.SHAPES:
        raise RunError(f"SHAPE={shape!r} is unknown; choose from {', '.join(catalogue.SHAPES)}")
    users = int_knob(args.users, "USERS", 1, 100_000)
    duration = _float_knob(args.duration, "DURATION", 1, 24 * 3600) or prof.duration
    warmup = _float_knob(args.warmup, "WARMUP", 0, 3600)
    full_core = _float_knob(args.full_core_seconds, "LAB_FULL_CORE_SECONDS", 0, 3600)
    reps = int_knob(args.reps, "REPS", 1, 100) or prof.reps
    resolve_pct = _float_knob(args.resolve, "RESOLVE", 0, 100, "per cent")
    resolve = prof.resolve if resolve_pct is None else resolve_pct / 100
    max_reps = max(reps, int_knob(args.max_reps, "MAX_REPS", 1, 100) or prof.max_reps
                   or (2 * reps if resolve else reps))
    cap_min = _float_knob(args.time_cap, "TIME_CAP", 0, 7 * 24 * 60, "minutes")
    time_cap = prof.time_cap if cap_min is None else (cap_min * 60 or None)
    workers = int_knob(args.locust_workers, "LOCUST_WORKERS", 0, 64) or 0
    try:
        server_cpu = (cpu_budget.parse(args.server_cpu) if args.server_cpu.strip()
                      else prof.server_cpu)
    except cpu_budget.BudgetError as exc:
        raise RunError(str(exc)) from None
    period = int_knob(args.cpu_period_us, "LAB_SERVER_CPU_PERIOD_US", cpu_budget.MIN_PERIOD_US,
                       cpu_budget.MAX_PERIOD_US) or cpu_budget.DEFAULT_PERIOD_US
    server_cpus: list[int] | None = parse_cpus(args.server_cpus)
    load_cpus: list[int] | None = parse_cpus(args.load_cpus)
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        say("warning: one CPU only: server and load generator share it; pinning is off")
        server_cpus = load_cpus = None
    try:
        database_cpus = cpu_lists.database_cpus(args.database_cpus, load_cpus)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if len(usable) < 2:
        database_cpus = None
    for name, cpus in (("LAB_SERVER_CPUS", server_cpus), ("LAB_LOAD_CPUS", load_cpus),
                       ("LAB_DATABASE_CPUS", database_cpus)):
        missing = sorted(set(cpus or []) - set(usable))
        if missing:
            raise RunError(f"{name}: CPUs {missing} are not available here (usable: {usable})")
    if load_cpus and workers > len(load_cpus):
        say(f"warning: {workers} Locust workers share {len(load_cpus)} load CPU(s) {load_cpus}: one Locust "
            "process uses one core, so give LAB_LOAD_CPUS as many CPUs as workers")
    if server_cpus and load_cpus and set(server_cpus) & set(load_cpus):
        say(f"warning: server CPUs {server_cpus} and load CPUs {load_cpus} overlap: the generator and the "
            "server will compete for them")
    try:
        lab_only = knobs.lab_only_asked(environ, args.allow_extra_cpu)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    try:
        extra = variants.parse(args.variants, args.allow_extra_cpu)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    servers += [v.name for v in extra]
    try:
        margin_within = stats.margin(stats.WITHIN, args.margin_within, environ)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    remote = int_knob(args.remote_workers, "LOCUST_REMOTE_WORKERS", 0, 1000) or 0
    try:
        hosts: netns.TestHosts | None = hosts_from(args) if knobs.yes(args.test_hosts) else None
        topo = topology.resolve(args.bind, args.target_host, args.master_bind, remote, hosts)
    except (topology.TopologyError, netns.HostsError) as exc:
        raise RunError(str(exc)) from None
    if hosts is not None:
        workers = workers or topology.TEST_HOST_WORKERS
    if (workers or remote) and any(catalogue.SCENARIOS[n].open_model for n in scenarios):
        raise RunError("the capacity (open-model) scenarios run in one Locust process: drop LOCUST_WORKERS "
                       "and LOCUST_REMOTE_WORKERS for them, or run them apart")
    return Settings(
        profile=prof.name, servers=tuple(servers), scenarios=tuple(scenarios), users=users,
        duration=duration, warmup=prof.warmup if warmup is None else warmup, reps=reps, shape=shape,
        resolve=resolve, max_reps=max_reps, time_cap=time_cap,
        locust_workers=workers, server_cpus=server_cpus, load_cpus=load_cpus, database_cpus=database_cpus,
        reports_dir=Path(args.reports_dir).absolute(), calibrate=args.calibrate,
        server_cpu=server_cpu, cpu_period_us=period, rates=_rates(args.rates),
        full_core=prof.full_core if full_core is None else full_core,
        step_seconds=_float_knob(args.step_seconds, "STEP_SECONDS", 0.5, 3600) or catalogue.STEP_SECONDS,
        slo_p99_ms=_float_knob(args.slo_p99_ms, "SLO_P99_MS", 0.1, 600_000, "milliseconds")
        or catalogue.DEFAULT_SLO_P99_MS,
        extend_steps=_extend_steps(args.extend_steps),
        arrival=args.arrival, fresh_server=args.fresh_server == "yes", idle_poll=args.idle_poll,
        margin_within=margin_within,
        speed_probe=args.speed_probe == "yes", locust_html=args.locust_html,
        database_url=args.database_url,
        server_env={**{k: environ[k] for k in SERVER_KNOBS if environ.get(k)}, **lab_only},
        variants={v.name: (v.model, v.env) for v in extra},
        variant_dirs={v.name: v.source for v in extra if v.source},
        run_id=check_run_id(args.run_id), remote_workers=remote,
        master_bind=topo.master_bind,
        master_port=int_knob(args.master_port, "LOCUST_MASTER_PORT", 0, 65535) or 0,
        target_host=topo.target_host, topology=topo,
    )

