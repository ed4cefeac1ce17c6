"""`make load`: drive every server with the same Locust scenarios and record what each costs.

    python -m lab load [--profile quick] [--servers a,b] [--scenarios x,y] [--users N]
        [--duration S] [--reps N] [--locust-workers N] [--reports-dir DIR] [--plan]

For each scenario x server: start the server fresh (pinned to the server CPUs), check its health,
then per repetition: run Locust headless as a subprocess (pinned to the load CPUs; its load shape
warms up first, uncounted, then measures), sample the server with lab.load.sampler, and keep every raw
file under reports/<run-id>/<server>/<scenario>/rep-<n>/. After `writes` (and `mixed`) the orders
Locust saw acknowledged are checked against the database. Then results.json is built from the raw
files alone (lab.results.build) and reports/latest points at the run. Knobs: see --help; every flag also
reads an environment variable (the Makefile passes them through).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import os
import resource
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from lab import files, knobs, machine
from lab.cpus import parse_cpus as cpu_list
from lab.cpus import pin_tree
from lab.fmt import fmt_seconds
from lab.knobs import SERVER_KNOBS
from lab.load import calibrate, sampler
from lab.report import run_report as report
from lab.results import build as results
from lab.stack import database, procs
from loadtests import catalogue
from servers.settings import MODELS, redact

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
STOP_TIMEOUT = 12  # seconds Locust lets a request in flight finish at the end (network timeout is 10)
HARD_MARGIN = 60  # seconds on top of the planned Locust run before it is killed
POLL_SECONDS = 0.5
PROGRESS_SECONDS = 2.0
RAW_FORMAT = 1  # version of the raw files' layout; lab/results/build.py reads it
WRITE_SCENARIOS = frozenset({"writes", "mixed"})
# Planning estimates (seconds), measured on the 2-core lab machine.
EST_SERVER_START = 1.0
EST_SERVER_STOP = 0.5
EST_LOCUST_START = 1.6  # interpreter and imports until the first user spawns; the sampler starts meanwhile
EST_LOCUST_WORKERS_START = 2.0  # extra for a master waiting for its workers
EST_LOCUST_STOP = 0.8


class RunError(RuntimeError):
    """A failure a person can act on; the message says what to do."""


def say(message: str) -> None:
    print(message, flush=True)


def parse_cpus(text: str) -> list[int]:
    try:
        return cpu_list(text)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# --- settings -----------------------------------------------------------------------------------------


@dataclass
class Settings:
    profile: str
    servers: list[str]
    scenarios: list[str]
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
    database_url: str | None = None
    run_id: str = ""
    remote_workers: int = 0  # workers on other machines the master waits for (started by hand)
    master_bind: str = "127.0.0.1"
    master_port: int = 0  # 0: a free port
    target_host: str = "127.0.0.1"  # the servers' address as the load generator sees it
    run_token: str = field(default_factory=lambda: secrets.token_hex(4))  # makes order keys unique
    server_env: dict[str, str] = field(default_factory=dict)

    def scenario(self, name: str) -> catalogue.Scenario:
        sc = catalogue.scenario(name, self.users)
        return dataclasses.replace(sc, shape=self.shape) if self.shape else sc


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="python -m lab load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default=env.get("PROFILE") or catalogue.DEFAULT_PROFILE,
                   help=f"{', '.join(catalogue.PROFILES)} [PROFILE, default {catalogue.DEFAULT_PROFILE}]")
    p.add_argument("--servers", default=env.get("SERVERS", ""),
                   help=f"comma-separated, default all: {','.join(MODELS)} [SERVERS]")
    p.add_argument("--scenarios", default=env.get("SCENARIOS", ""),
                   help="comma-separated, default the profile's; any of "
                        f"{','.join(catalogue.SCENARIOS)} [SCENARIOS]")
    p.add_argument("--users", default=env.get("USERS", ""),
                   help="peak users for every selected scenario (default: each scenario's own) [USERS]")
    p.add_argument("--duration", default=env.get("DURATION", ""),
                   help="measured seconds per repetition (default: the profile's) [DURATION]")
    p.add_argument("--warmup", default=env.get("WARMUP", ""),
                   help="seconds at full load before measuring, not counted (default: the profile's)"
                        " [WARMUP]")
    p.add_argument("--reps", default=env.get("REPS", ""),
                   help="repetitions per server x scenario (default: the profile's) [REPS]")
    p.add_argument("--shape", default=env.get("SHAPE", ""),
                   help=f"override every scenario's load shape: {', '.join(catalogue.SHAPES)} [SHAPE]")
    p.add_argument("--locust-workers", default=env.get("LOCUST_WORKERS", "0"),
                   help="0: one Locust process; N: a master and N workers on this machine [LOCUST_WORKERS]")
    p.add_argument("--remote-workers", default=env.get("LOCUST_REMOTE_WORKERS", "0"),
                   help="Locust workers on other machines the master waits for; see loadtests/README.md "
                        "[LOCUST_REMOTE_WORKERS]")
    p.add_argument("--master-bind", default=env.get("LOCUST_MASTER_BIND", "127.0.0.1"),
                   help="address the Locust master listens on for workers [LOCUST_MASTER_BIND]")
    p.add_argument("--master-port", default=env.get("LOCUST_MASTER_PORT", "0"),
                   help="port of the Locust master (0: any free one) [LOCUST_MASTER_PORT]")
    p.add_argument("--target-host", default=env.get("LAB_TARGET_HOST", "127.0.0.1"),
                   help="the servers' address for the load generator; anything but 127.0.0.1 makes the "
                        "servers listen on all interfaces [LAB_TARGET_HOST]")
    p.add_argument("--server-cpus", default=env.get("LAB_SERVER_CPUS", "0"),
                   help="CPUs the servers are pinned to [LAB_SERVER_CPUS, default 0]")
    p.add_argument("--load-cpus", default=env.get("LAB_LOAD_CPUS", "1"),
                   help="CPUs Locust and the sampler are pinned to [LAB_LOAD_CPUS, default 1]")
    p.add_argument("--reports-dir", default=env.get("LAB_REPORTS_DIR", str(REPO / "reports")),
                   help="where run folders go [LAB_REPORTS_DIR, default reports/]")
    p.add_argument("--calibrate", default=env.get("CALIBRATE", "auto"), choices=("auto", "force", "skip"),
                   help="auto: reuse a fresh calibration, else measure; force: measure; skip: none"
                        " [CALIBRATE]")
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL to use (default: database.provision(), i.e. LAB_DATABASE_URL or "
                        "the embedded one)")
    p.add_argument("--run-id", default=env.get("RUN_ID", ""),
                   help="name of the run folder (default <date>-<time>-<profile>) [RUN_ID]")
    p.add_argument("--plan", action="store_true", help="print the plan and its estimated time, run nothing")
    return p


def _int_knob(raw: str, name: str, low: int, high: int) -> int | None:
    try:
        return knobs.integer(raw, name, low, high)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def _float_knob(raw: str, name: str, low: float, high: float) -> float | None:
    try:
        return knobs.number(raw, name, low, high)
    except ValueError as exc:
        raise RunError(f"{exc} (seconds)") from None


def settings_from(args: argparse.Namespace) -> Settings:
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
    users = _int_knob(args.users, "USERS", 1, 100_000)
    duration = _float_knob(args.duration, "DURATION", 1, 24 * 3600) or prof.duration
    warmup = _float_knob(args.warmup, "WARMUP", 0, 3600)
    reps = _int_knob(args.reps, "REPS", 1, 100) or prof.reps
    workers = _int_knob(args.locust_workers, "LOCUST_WORKERS", 0, 64) or 0
    server_cpus: list[int] | None = parse_cpus(args.server_cpus)
    load_cpus: list[int] | None = parse_cpus(args.load_cpus)
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        say("warning: one CPU only: server and load generator share it; pinning is off")
        server_cpus = load_cpus = None
    for name, cpus in (("LAB_SERVER_CPUS", server_cpus), ("LAB_LOAD_CPUS", load_cpus)):
        missing = sorted(set(cpus or []) - set(usable))
        if missing:
            raise RunError(f"{name}: CPUs {missing} are not available here (usable: {usable})")
    if load_cpus and workers > len(load_cpus):
        say(f"warning: {workers} Locust workers share {len(load_cpus)} load CPU(s) {load_cpus}: one Locust "
            "process uses one core, so give LAB_LOAD_CPUS as many CPUs as workers")
    if server_cpus and load_cpus and set(server_cpus) & set(load_cpus):
        say(f"warning: server CPUs {server_cpus} and load CPUs {load_cpus} overlap: the generator and the "
            "server will compete for them")
    return Settings(
        profile=prof.name, servers=servers, scenarios=scenarios, users=users, duration=duration,
        warmup=prof.warmup if warmup is None else warmup, reps=reps, shape=shape, locust_workers=workers,
        server_cpus=server_cpus, load_cpus=load_cpus, reports_dir=Path(args.reports_dir).absolute(),
        calibrate=args.calibrate, database_url=args.database_url,
        server_env={k: os.environ[k] for k in SERVER_KNOBS if os.environ.get(k)},
        run_id=_run_id(args.run_id),
        remote_workers=_int_knob(args.remote_workers, "LOCUST_REMOTE_WORKERS", 0, 1000) or 0,
        master_bind=args.master_bind.strip() or "127.0.0.1",
        master_port=_int_knob(args.master_port, "LOCUST_MASTER_PORT", 0, 65535) or 0,
        target_host=args.target_host.strip() or "127.0.0.1",
    )


def _run_id(raw: str) -> str:
    try:
        return knobs.run_id(raw)
    except ValueError as exc:
        raise RunError(str(exc)) from None


# --- planning ---------------------------------------------------------------------------------------


def rep_seconds(sc: catalogue.Scenario, duration: float, warmup: float, workers: int) -> float:
    first = catalogue.schedule(sc.shape, sc.users, sc.spawn_rate, duration)[0]
    start = EST_LOCUST_START + (EST_LOCUST_WORKERS_START if workers else 0)  # workers: local + remote
    spawn = catalogue.spawn_seconds(first.users, first.spawn_rate)
    return start + spawn + warmup + duration + EST_LOCUST_STOP


def combo_seconds(s: Settings, name: str) -> float:
    sc = s.scenario(name)
    reps = s.reps * rep_seconds(sc, s.duration, s.warmup, s.locust_workers + s.remote_workers)
    return EST_SERVER_START + reps + EST_SERVER_STOP


def plan(s: Settings, with_calibration: bool) -> tuple[list[tuple[str, str]], float]:
    combos = [(server, name) for name in s.scenarios for server in s.servers]
    total = sum(combo_seconds(s, name) for _server, name in combos)
    if with_calibration:
        total += calibrate.estimated_seconds()
    return combos, total


def print_plan(s: Settings, with_calibration: bool) -> float:
    combos, total = plan(s, with_calibration)
    say(f"plan: profile {s.profile}, {len(s.servers)} server(s) x {len(s.scenarios)} scenario(s) = "
        f"{len(combos)} runs, {s.reps} repetition(s) of {s.duration:g}s measured after {s.warmup:g}s warm-up")
    for name in s.scenarios:
        sc = s.scenario(name)
        say(f"  {name:<12} {sc.users:>5} users, {sc.shape:<6} ~{fmt_seconds(combo_seconds(s, name))} per "
            f"server  {sc.description}")
    pin = (f"servers on CPUs {s.server_cpus}, Locust on CPUs {s.load_cpus}" if s.server_cpus
           else "no pinning")
    workers = f"a master and {s.locust_workers} workers" if s.locust_workers else "one process"
    if s.remote_workers:
        workers += f", waiting for {s.remote_workers} workers on other machines"
    say(f"  {pin}; Locust as {workers}" + ("; calibration first" if with_calibration else ""))
    say(f"planned total: ~{fmt_seconds(total)}")
    return total


# --- Locust as subprocesses ----------------------------------------------------------------------------


def _pin_to(cpus: list[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None
    chosen = list(cpus)
    return lambda: os.sched_setaffinity(0, chosen)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for Locust: LOCUST_* variables dropped so that only our flags apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class LocustJob:
    """One Locust run: a process (or a master and its workers), its files and its CPU polls."""

    out_dir: Path
    host: str
    user_class: str
    shape: str
    users: int
    spawn_rate: float
    duration: float
    warmup: float
    workers: int = 0
    remote_workers: int = 0
    master_bind: str = "127.0.0.1"
    master_port: int = 0
    load_cpus: list[int] | None = None
    run_tag: str = "manual"
    commands: list[list[str]] = field(default_factory=list)
    popens: list[subprocess.Popen[bytes]] = field(default_factory=list)
    polls: list[list[Any]] = field(default_factory=list)
    started: float = 0.0
    _procs: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def records(self) -> Path:
        return self.out_dir / "records"

    @property
    def csv_prefix(self) -> Path:
        return self.out_dir / "locust"

    @property
    def run_time(self) -> int:
        """The -t cap the shape honours: spawning, warm-up and the measured phase, with slack."""
        first = catalogue.schedule(self.shape, self.users, self.spawn_rate, self.duration)[0]
        spawn = catalogue.spawn_seconds(first.users, first.spawn_rate)
        return int(spawn * 3 + 15 + self.warmup + self.duration + 10)

    @property
    def hard_timeout(self) -> float:
        return self.run_time + STOP_TIMEOUT + HARD_MARGIN + (150 if self.remote_workers else 0)

    def env(self) -> dict[str, str]:
        return child_env({
            "LAB_SHAPE": self.shape, "LAB_USERS": str(self.users), "LAB_SPAWN_RATE": f"{self.spawn_rate:g}",
            "LAB_DURATION": f"{self.duration:g}", "LAB_WARMUP": f"{self.warmup:g}",
            "LAB_RECORD_DIR": str(self.records), "LAB_RUN_TAG": self.run_tag,
        })

    def build_commands(self) -> list[list[str]]:
        base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
        main = [*base, "--headless", "-H", self.host, "--csv", str(self.csv_prefix), "--csv-full-history",
                "--html", str(self.out_dir / "locust.html"), "--stop-timeout", str(STOP_TIMEOUT),
                "--exit-code-on-error", "0", "--run-time", f"{self.run_time}s", "--loglevel", "INFO"]
        if not self.workers and not self.remote_workers:
            return [[*main, self.user_class]]
        port = self.master_port or procs.free_port()
        wait = 30 + (120 if self.remote_workers else 0)
        master = [*main, "--master", "--master-bind-host", self.master_bind, "--master-bind-port", str(port),
                  "--expect-workers", str(self.workers + self.remote_workers),
                  "--expect-workers-max-wait", str(wait), self.user_class]
        worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                  "--loglevel", "INFO", self.user_class]
        return [master] + [worker] * self.workers

    def start(self) -> None:
        self.records.mkdir(parents=True, exist_ok=True)
        self.commands = self.build_commands()
        env = self.env()
        self.started = time.time()
        for i, cmd in enumerate(self.commands):
            name = "locust.log" if i == 0 else f"locust-worker-{i}.log"
            with (self.out_dir / name).open("wb") as log:
                log.write(f"$ {shlex.join(cmd)}\n".encode())
                log.flush()
                popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=REPO, start_new_session=True,
                                         preexec_fn=_pin_to(self.load_cpus))
            self.popens.append(popen)
            with contextlib.suppress(psutil.Error):
                self._procs[popen.pid] = psutil.Process(popen.pid)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.popens]

    @property
    def load_pids(self) -> list[int]:
        """The processes that send requests: the only one, or the workers."""
        return self.pids[1:] if self.workers or self.remote_workers else self.pids[:1]

    def poll_cpu(self) -> None:
        """Record each Locust process's CPU seconds so far (the generator-bound check reads these)."""
        now = time.time()
        cpu: dict[str, float] = {}
        for pid, proc in self._procs.items():
            try:
                t = proc.cpu_times()
                cpu[str(pid)] = round(t.user + t.system, 3)
            except psutil.Error:
                continue
        if cpu:
            self.polls.append([round(now, 3), cpu])

    def exited(self) -> bool:
        return self.popens[0].poll() is not None

    def progress(self) -> dict[str, Any] | None:
        """The newest aggregated row of Locust's CSV history: users, current rps, failures."""
        path = Path(f"{self.csv_prefix}_stats_history.csv")
        try:
            with path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 8192))
                tail = fh.read().decode("utf-8", "replace")
                fh.seek(0)
                header = fh.readline().decode("utf-8", "replace")
        except OSError:
            return None
        rows = list(csv.reader(io.StringIO(header + "\n".join(tail.splitlines()[1:]))))
        if len(rows) < 2:
            return None
        names = rows[0]
        for row in reversed(rows[1:]):
            if len(row) == len(names) and row[names.index("Name")] == "Aggregated":
                rec = dict(zip(names, row, strict=True))
                try:
                    return {"users": int(rec["User Count"]), "rps": float(rec["Requests/s"]),
                            "requests": int(rec["Total Request Count"]),
                            "failures": int(rec["Total Failure Count"])}
                except (KeyError, ValueError):
                    return None
        return None

    def stop(self) -> list[int | None]:
        """End every process of the job (TERM its group, KILL what is left); their exit codes."""
        for popen in self.popens:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for popen in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(max(0.1, deadline - time.monotonic()))
        for popen in self.popens:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(5)
        return [p.returncode for p in self.popens]

    def wait(self, on_tick: Callable[[LocustJob], str | None] | None = None) -> str:
        """Poll until the master (or only) process exits; 'ok', 'timeout' or the reason on_tick gave."""
        deadline = time.monotonic() + self.hard_timeout
        limit = int(self.hard_timeout / POLL_SECONDS) + 2
        for _ in range(limit):  # bounded: at most one poll per interval until the hard timeout
            self.poll_cpu()
            if self.exited():
                break
            if on_tick is not None:
                reason = on_tick(self)
                if reason:
                    return reason
            if time.monotonic() >= deadline:
                return "timeout"
            time.sleep(POLL_SECONDS)
        else:
            return "timeout"
        # Workers hand their records to the master before it exits; give them a moment to follow.
        for popen in self.popens[1:]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(3)
        return "ok"


# --- the database check after writes ---------------------------------------------------------------------


def read_acks(folder: Path) -> dict[str, int]:
    """Idempotency key -> order id, for every order Locust saw acknowledged."""
    acks: dict[str, int] = {}
    for path in sorted(folder.glob("acks-*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            key, oid, _status = line.split("\t")
            acks[key] = int(oid)
    return acks


def check_writes(database_url: str, run_tag: str, folder: Path) -> dict[str, Any]:
    """Acknowledged orders against the rows in the database with this run's key prefix."""
    acks = read_acks(folder)
    prefix = f"{run_tag}-"
    conn = database.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, idempotency_key FROM orders WHERE left(idempotency_key, %s) = %s",
                        (len(prefix), prefix))
            rows = {str(key): int(oid) for oid, key in cur.fetchall()}
    finally:
        conn.close()
    missing = [k for k in acks if k not in rows]
    wrong = [k for k, oid in acks.items() if k in rows and rows[k] != oid]
    unacked = [k for k in rows if k not in acks]
    ok = not missing and not wrong and not unacked
    if ok:
        message = f"{len(acks)} acknowledged orders, {len(rows)} rows: every acknowledged order is stored"
    else:
        message = (f"{len(acks)} acknowledged orders but {len(rows)} rows for run tag {run_tag}: "
                   f"{len(missing)} acknowledged orders LOST, {len(wrong)} with another id, "
                   f"{len(unacked)} rows never acknowledged (e.g. {(missing + wrong + unacked)[:3]})")
    return {"run_tag": run_tag, "acknowledged": len(acks), "rows": len(rows), "missing": len(missing),
            "wrong_id": len(wrong), "unacknowledged_rows": len(unacked), "ok": ok, "message": message}


# --- the run ------------------------------------------------------------------------------------------------


class Progress:
    """Elapsed and remaining time across the whole run."""

    def __init__(self, total_runs: int, planned: float) -> None:
        self.began = time.monotonic()
        self.total_runs = total_runs
        self.planned = planned
        self.done_planned = 0.0
        self.index = 0

    def remaining(self, current_planned: float, current_elapsed: float) -> float:
        left = self.planned - self.done_planned - min(current_elapsed, current_planned)
        return max(0.0, left)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.began


@dataclass
class Runner:
    s: Settings
    run_dir: Path
    database_url: str
    calibration: dict[str, Any] | None
    progress: Progress
    problems: list[str] = field(default_factory=list)

    def app_name(self, model: str) -> str:
        """This run's application_name for the model: pg_stat_activity counts only its sessions,
        never those of another server of the same model (say, the one `make up` started)."""
        return f"serverlab-{model}-{self.s.run_token}"

    def start_server(self, model: str, log_dir: Path) -> procs.ServerProcess:
        # Started with the server CPUs as its affinity, so that it sizes itself (multiproc workers)
        # for what it may use; the tree is pinned again once it is up.
        mine = os.sched_getaffinity(0)
        if self.s.server_cpus:
            os.sched_setaffinity(0, self.s.server_cpus)
        try:
            listen = "127.0.0.1" if self.s.target_host == "127.0.0.1" else "0.0.0.0"
            server = procs.start_server(model, port=procs.free_port(listen), database_url=self.database_url,
                                        log_dir=log_dir, host=listen,
                                        env={**self.s.server_env, "LAB_APP_NAME": self.app_name(model)})
        finally:
            os.sched_setaffinity(0, mine)
        if self.s.server_cpus:
            pin_tree(server.pid, self.s.server_cpus)
        return server

    def run_combo(self, model: str, name: str) -> None:
        sc = self.s.scenario(name)
        scen_dir = self.run_dir / model / name
        scen_dir.mkdir(parents=True, exist_ok=True)
        planned = combo_seconds(self.s, name)
        meta: dict[str, Any] = {
            "server": model, "scenario": name, "user_class": sc.user_class, "shape": sc.shape,
            "users": sc.users, "spawn_rate": sc.spawn_rate, "duration": self.s.duration,
            "warmup": self.s.warmup, "reps": self.s.reps, "uses_db": sc.uses_db,
            "writes": name in WRITE_SCENARIOS, "description": sc.description,
            "stages": [asdict(st) for st in catalogue.schedule(sc.shape, sc.users, sc.spawn_rate,
                                                                self.s.duration)],
            "status": "running", "error": None, "problems": [],
        }
        write_json(scen_dir / "scenario.json", meta)
        began = time.monotonic()
        server: procs.ServerProcess | None = None
        try:
            # The run's own application_name should have no sessions yet; any found are subtracted.
            app = self.app_name(model)
            other = meta["db_sessions_before_start"] = count_sessions(self.database_url, app)
            if other:
                say(f"  warning: {other} database sessions named {app} exist before this server "
                    "started; results subtract them")
            server = self.start_server(model, scen_dir)
            meta["server_pid"], meta["server_url"] = server.pid, server.url
            meta["server_config"] = server_config(server.url)
            write_json(scen_dir / "scenario.json", meta)
            for rep in range(1, self.s.reps + 1):
                self.run_rep(server, sc, scen_dir, rep, planned, began)
                if not server.alive():
                    raise RunError(f"the {model} server died (exit {server.popen.returncode}); "
                                   f"read {server.log_path}:\n{server.log_tail()}")
            meta["status"] = "ok"
        except (procs.StartError, RunError, sampler.SamplerError, OSError) as exc:
            meta["status"], meta["error"] = "failed", str(exc)
            self.problems.append(f"{model}/{name}: {exc}")
            say(f"  FAILED {model}/{name}: {exc}")
        finally:
            if meta["status"] == "running":  # Ctrl-C or SIGTERM on the way out
                meta["status"], meta["error"] = "interrupted", "the run was interrupted"
            if server is not None:
                code = procs.stop_server(server)
                meta["server_exit_code"] = code
            write_json(scen_dir / "scenario.json", meta)
            self.progress.done_planned += planned

    def run_rep(self, server: procs.ServerProcess, sc: catalogue.Scenario, scen_dir: Path, rep: int,
                planned: float, combo_began: float) -> None:
        rep_dir = scen_dir / f"rep-{rep}"
        rep_dir.mkdir(parents=True, exist_ok=True)
        tag = f"{self.s.run_id}-{self.s.run_token}-{server.model}-{sc.name}-{rep}"
        job = LocustJob(out_dir=rep_dir, host=f"http://{self.s.target_host}:{server.port}",
                        user_class=sc.user_class, shape=sc.shape,
                        users=sc.users, spawn_rate=sc.spawn_rate, duration=self.s.duration,
                        warmup=self.s.warmup, workers=self.s.locust_workers,
                        remote_workers=self.s.remote_workers, master_bind=self.s.master_bind,
                        master_port=self.s.master_port, load_cpus=self.s.load_cpus,
                        run_tag=tag)
        run: dict[str, Any] = {"rep": rep, "run_tag": tag, "status": "running", "error": None,
                               "server": {"model": server.model, "pid": server.pid, "url": server.url}}
        label = (f"[{self.progress.index}/{self.progress.total_runs}] {server.model}/{sc.name} "
                 f"rep {rep}/{self.s.reps}")
        samp: subprocess.Popen[bytes] | None = None
        last_print = [0.0]
        last_count: list[Any] = [-1, 0.0]  # requests at the last progress line, and when

        def tick(j: LocustJob) -> str | None:
            if not server.alive():
                return f"the server died (exit {server.popen.returncode})"
            now = time.monotonic()
            if now - last_print[0] >= PROGRESS_SECONDS:
                last_print[0] = now
                elapsed = time.time() - j.started
                p = j.progress()
                ready = EST_LOCUST_START + catalogue.spawn_seconds(sc.users, sc.spawn_rate) + self.s.warmup
                phase = "warm-up" if elapsed < ready else "measuring"
                live = "starting"
                if p:
                    # Locust resets its counts when measuring starts: a drop restarts the rate.
                    before = last_count[0] if 0 <= last_count[0] <= p["requests"] else 0
                    rate = (p["requests"] - before) / max(0.5, now - last_count[1]) if last_count[1] else 0.0
                    last_count[:] = [p["requests"], now]
                    live = f"{p['users']} users, {rate:.0f} rps, {p['failures']} failures"
                gen = generator_now(j)
                left = self.progress.remaining(planned, now - combo_began)
                cpu = f", Locust CPU {gen:.0f}%" if gen is not None else ""
                say(f"  {label} {phase:<9} {fmt_seconds(elapsed):>6} | {live}{cpu} | "
                    f"run {fmt_seconds(self.progress.elapsed)} elapsed, ~{fmt_seconds(left)} left")
            return None

        try:
            job.start()
            run["locust"] = {"commands": [shlex.join(c) for c in job.commands], "pids": job.pids,
                             "load_pids": job.load_pids, "workers": job.workers,
                             "remote_workers": job.remote_workers, "cpus": job.load_cpus}
            samp = sampler.start_sampler(
                rep_dir / "samples.jsonl", server.pid, app_name=self.app_name(server.model),
                database_url=self.database_url, metrics_url=f"{server.url}/metrics",
                generator_pids=job.pids, ports=[server.port], cpus=job.load_cpus,
                log_path=rep_dir / "sampler.log", max_seconds=job.hard_timeout + 30)
            outcome = job.wait(tick)
            run["status"] = "ok" if outcome == "ok" else "failed"
            if outcome == "timeout":
                run["error"] = (f"Locust did not finish within {job.hard_timeout:.0f}s and was stopped; "
                                f"read {rep_dir / 'locust.log'}")
            elif outcome != "ok":
                run["error"] = outcome
        except BaseException as exc:
            run["status"], run["error"] = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            codes = job.stop() if job.popens else []
            if samp is not None:
                sampler.stop_sampler(samp)
            run.setdefault("locust", {})["exit_codes"] = codes
            run["locust"]["exit_code"] = codes[0] if codes else None
            run["generator"] = {"polls": job.polls, "load_pids": job.load_pids}
            run["started_at"], run["finished_at"] = job.started, time.time()
            write_json(rep_dir / "run.json", run)
        if codes and codes[0] not in (0, None) and run["status"] == "ok":
            run["status"], run["error"] = "failed", (
                f"Locust exited with code {codes[0]}; read {rep_dir / 'locust.log'}:\n"
                f"{procs.log_tail(rep_dir / 'locust.log', 15)}")
        if not list(job.records.glob("record-*.json")) and run["status"] == "ok":
            run["status"] = "failed"
            run["error"] = f"Locust wrote no latency record; read {rep_dir / 'locust.log'}"
        if sc.name in WRITE_SCENARIOS:
            try:
                run["writes"] = check_writes(self.database_url, tag, job.records)
            except (psycopg2.Error, OSError, ValueError) as exc:
                run["writes"] = {"run_tag": tag, "ok": False,
                                 "message": f"could not check the orders against the database: {exc}"}
            if not run["writes"]["ok"]:
                where = f"{server.model}/{sc.name} rep {rep}"
                say(f"  !!! WRITES CHECK FAILED for {where}: {run['writes']['message']}")
                self.problems.append(f"{where}: {run['writes']['message']}")
            else:
                say(f"  {label} writes check: {run['writes']['message']}")
        write_json(rep_dir / "run.json", run)
        if run["status"] != "ok":
            raise RunError(str(run["error"]))
        p = job.progress()
        if p:
            say(f"  {label} done: {p['requests']} requests, {p['failures']} failures")


def generator_now(job: LocustJob) -> float | None:
    """CPU % of the busiest load-sending Locust process over the last two polls."""
    if len(job.polls) < 2:
        return None
    (t0, a), (t1, b) = job.polls[-2], job.polls[-1]
    vals = [100 * (b[str(p)] - a[str(p)]) / (t1 - t0) for p in job.load_pids
            if str(p) in a and str(p) in b and t1 > t0]
    return max(vals) if vals else None


def count_sessions(database_url: str, app_name: str) -> int | None:
    try:
        conn = database.connect(database_url)
    except psycopg2.Error:  # a count we cannot take is recorded as unknown
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app_name,))
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def server_config(url: str) -> dict[str, Any] | None:
    try:
        status, body = procs.get(f"{url}/config", timeout=2.0)
        data = json.loads(body) if status == 200 else None
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    files.write_json(path, data, default=str)


def point_latest(reports_dir: Path, run_dir: Path) -> None:
    latest = reports_dir / "latest"
    tmp = reports_dir / ".latest.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    tmp.replace(latest)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def reproduce_command(s: Settings) -> str:
    parts = [".venv/bin/python", "-m", "lab", "load", "--profile", s.profile,
             "--servers", ",".join(s.servers), "--scenarios", ",".join(s.scenarios),
             "--duration", f"{s.duration:g}", "--warmup", f"{s.warmup:g}", "--reps", str(s.reps),
             "--locust-workers", str(s.locust_workers)]
    if s.remote_workers:
        parts += ["--remote-workers", str(s.remote_workers), "--master-bind", s.master_bind,
                  "--master-port", str(s.master_port), "--target-host", s.target_host]
    if s.users:
        parts += ["--users", str(s.users)]
    if s.shape:
        parts += ["--shape", s.shape]
    if s.server_cpus:
        parts += ["--server-cpus", ",".join(map(str, s.server_cpus))]
    if s.load_cpus:
        parts += ["--load-cpus", ",".join(map(str, s.load_cpus))]
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(s.server_env.items()))
    if os.environ.get("LAB_CONNECTIONS_USERS"):
        env = (env + f" LAB_CONNECTIONS_USERS={os.environ['LAB_CONNECTIONS_USERS']}").strip()
    return (env + " " if env else "") + shlex.join(parts)


def run(s: Settings, *, link_latest: bool = True) -> int:
    """One run into reports_dir/<run-id>; link_latest=False leaves reports_dir/latest alone (make tune)."""
    raise_fd_limit()
    s.reports_dir.mkdir(parents=True, exist_ok=True)
    s.run_id = s.run_id or time.strftime("%Y%m%d-%H%M%S") + f"-{s.profile}"
    run_dir = s.reports_dir / s.run_id
    for n in range(2, 100):  # two runs in the same second get distinct folders
        if not run_dir.exists():
            break
        run_dir = s.reports_dir / f"{s.run_id}-{n}"
    s.run_id = run_dir.name
    run_dir.mkdir(parents=True)
    started = time.time()
    status: dict[str, Any] = {"started_at": started, "finished_at": None, "exit_status": None, "problems": []}
    write_json(run_dir / "status.json", status)
    write_json(run_dir / "machine.json", machine.facts())

    if s.database_url:
        os.environ["LAB_DATABASE_URL"] = s.database_url
    need_cal = s.calibrate == "force" or (s.calibrate == "auto" and calibrate.load_fresh(
        s.load_cpus, s.server_cpus, s.locust_workers) is None)
    planned = print_plan(s, need_cal)
    settings_doc = {
        "raw_format": RAW_FORMAT, "run_id": s.run_id, "run_token": s.run_token, "profile": s.profile,
        "servers": s.servers, "scenarios": s.scenarios,
        "users": s.users, "duration": s.duration, "warmup": s.warmup, "reps": s.reps, "shape": s.shape,
        "locust_workers": s.locust_workers, "remote_workers": s.remote_workers,
        "target_host": s.target_host, "server_cpus": s.server_cpus, "load_cpus": s.load_cpus,
        "database_cpus": None, "calibrate": s.calibrate, "server_env": s.server_env,
        "connections_users": catalogue.CONNECTIONS_USERS, "planned_seconds": round(planned),
        "stop_timeout": STOP_TIMEOUT, "sample_interval": os.environ.get("LAB_SAMPLE_INTERVAL") or 0.25,
        "scenario_defs": {n: asdict(s.scenario(n)) for n in s.scenarios},
        "command": reproduce_command(s), "argv": sys.argv,
    }
    write_json(run_dir / "settings.json", settings_doc)
    say(f"run {s.run_id}: raw files and results under {run_dir}")

    exit_status = 1
    runner: Runner | None = None
    try:
        url = database.provision()
        settings_doc["database_url"] = redact(url)
        write_json(run_dir / "settings.json", settings_doc)
        calibration = None
        if s.calibrate != "skip":
            calibration = calibrate.ensure(s.load_cpus, s.server_cpus, s.locust_workers,
                                           force=s.calibrate == "force")
            write_json(run_dir / "calibration.json", calibration)
        combos, _ = plan(s, False)
        runner = Runner(s, run_dir, url, calibration, Progress(len(combos), planned - (
            calibrate.estimated_seconds() if need_cal else 0)))
        for model, name in combos:
            runner.progress.index += 1
            say(f"[{runner.progress.index}/{len(combos)}] {model} / {name}: starting the server")
            runner.run_combo(model, name)
        exit_status = 0 if not runner.problems else 1
    except KeyboardInterrupt:
        status["problems"].append("interrupted")
        exit_status = 130
        say("interrupted: servers, samplers and Locust are stopped; building results from what ran")
    except (database.PostgresError, calibrate.CalibrationError, RunError) as exc:
        status["problems"].append(str(exc))
        say(f"load run failed: {exc}")
        exit_status = 1
    finally:
        status["finished_at"] = time.time()
        status["wall_seconds"] = round(status["finished_at"] - started, 1)
        status["exit_status"] = exit_status
        write_json(run_dir / "status.json", status)

    try:
        out = results.write(run_dir)
    except results.ResultsError as exc:
        say(f"could not build results.json: {exc}")
        return exit_status or 1
    data = json.loads(out.read_text(encoding="utf-8"))
    if link_latest:
        point_latest(s.reports_dir, run_dir)
    try:
        html, markdown = report.build(run_dir)
        say(f"report: {html} (and {markdown.name})")
    except Exception as exc:  # the raw files and results.json stand; `make report` can retry
        where = run_dir.relative_to(s.reports_dir) if run_dir.is_relative_to(s.reports_dir) else run_dir
        say(f"could not build the report ({exc}); rebuild it with `make report RUN={where}`")
        exit_status = exit_status or 1
    say("")
    say("\n".join(results.summary_lines(data)))
    say(f"\nwall time {fmt_seconds(status['wall_seconds'])} (planned ~{fmt_seconds(planned)}); "
        f"results: {out}" + (f"; reports/latest -> {run_dir.name}" if link_latest else ""))
    if data["generator_bound"]:
        say(f"generator-bound (the load generator, not the server, was the limit): "
            f"{', '.join(data['generator_bound'])}")
    for problem in data["problems"]:
        say(f"PROBLEM: {problem}")
    if data["problems"] and exit_status == 0:
        exit_status = 1
    return exit_status


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s = settings_from(args)
    except (RunError, KeyError) as exc:
        print(f"lab.load.runner: {exc}", file=sys.stderr)
        return 2
    if args.plan:
        print_plan(s, s.calibrate == "force" or (s.calibrate == "auto" and calibrate.load_fresh(
            s.load_cpus, s.server_cpus, s.locust_workers) is None))
        return 0
    signal.signal(signal.SIGTERM, _sigterm)
    return run(s)


if __name__ == "__main__":
    sys.exit(main())
