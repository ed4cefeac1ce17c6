"""Locust as subprocesses: one run (a process, or a master and workers), its files, CPU and progress."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lab.stack import procs
from loadtests import catalogue, gate

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
STOP_TIMEOUT = 12  # seconds Locust lets a request in flight finish at the end (network timeout is 10)
HARD_MARGIN = 60  # seconds on top of the planned Locust run before it is killed
POLL_SECONDS = 0.5

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
    master_prefix: list[str] = field(default_factory=list)  # runs the master on a test host
    worker_prefix: list[str] = field(default_factory=list)  # runs the workers started here on a test host
    worker_master_host: str = "127.0.0.1"  # where those workers find the master
    load_cpus: list[int] | None = None
    run_tag: str = "manual"
    rates: tuple[float, ...] = ()  # open model: offered requests/s per step (`duration` seconds each)
    path: str = ""  # open model: the request
    arrival: str = "uniform"
    # open model: steps added while the last met the SLO (loadtests/open_model.py extend())
    extend_max: int = 0
    extend_factor: float = catalogue.EXTEND_FACTOR
    rate_ceiling: float | None = None
    slo_p99_ms: float = catalogue.DEFAULT_SLO_P99_MS
    full_core: float = 0.0  # seconds after the measured window with the server's budget lifted
    gated: bool = False  # start() leaves Locust held at its start gate (loadtests/gate.py) until go()
    html: bool = True  # Locust's own HTML report (about 1 MB), beside the lab's
    commands: list[list[str]] = field(default_factory=list)
    popens: list[subprocess.Popen[bytes]] = field(default_factory=list)
    polls: list[list[Any]] = field(default_factory=list)
    started: float = 0.0  # when the processes were started
    opened: float = 0.0  # when the test began: the gate opened (or, ungated, the start)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _go: int | None = None  # the gate's write end while it is shut

    @property
    def records(self) -> Path:
        return self.out_dir / "records"

    @property
    def csv_prefix(self) -> Path:
        return self.out_dir / "locust"

    @property
    def run_time(self) -> int:
        """The -t cap the shape honours: spawning, warm-up and the measured phase, with slack."""
        first = catalogue.schedule(self.shape, self.users, self.spawn_rate, self.duration, self.rates)[0]
        spawn = catalogue.spawn_seconds(first.users, first.spawn_rate)
        return int(spawn * 3 + 15 + self.warmup + self.measured_seconds + 10)

    @property
    def measured_seconds(self) -> float:
        if self.rates:
            return self.duration * (len(self.rates) + self.extend_max)
        return self.duration + self.full_core

    @property
    def hard_timeout(self) -> float:
        return self.run_time + STOP_TIMEOUT + HARD_MARGIN + (150 if self.remote_workers else 0)

    def env(self) -> dict[str, str]:
        return child_env({
            "LAB_SHAPE": self.shape, "LAB_USERS": str(self.users), "LAB_SPAWN_RATE": f"{self.spawn_rate:g}",
            "LAB_DURATION": f"{self.duration:g}", "LAB_WARMUP": f"{self.warmup:g}",
            "LAB_RECORD_DIR": str(self.records), "LAB_RUN_TAG": self.run_tag,
            "LAB_RATES": ",".join(f"{r:g}" for r in self.rates), "LAB_PATH": self.path,
            "LAB_ARRIVAL": self.arrival, "LAB_EXTEND_MAX": str(self.extend_max),
            "LAB_EXTEND_FACTOR": f"{self.extend_factor:g}", "LAB_RATE_CEILING": f"{self.rate_ceiling or 0:g}",
            "LAB_SLO_P99_MS": f"{self.slo_p99_ms:g}", "LAB_FULL_CORE_SECONDS": f"{self.full_core:g}",
        })

    def build_commands(self) -> list[list[str]]:
        base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
        html = ["--html", str(self.out_dir / "locust.html")] if self.html else []
        main = [*base, "--headless", "-H", self.host, "--csv", str(self.csv_prefix), *html,
                "--stop-timeout", str(STOP_TIMEOUT),
                "--exit-code-on-error", "0", "--run-time", f"{self.run_time}s", "--loglevel", "INFO"]
        if not self.workers and not self.remote_workers:
            return [[*main, self.user_class]]
        port = self.master_port or procs.free_port()
        wait = 30 + (120 if self.remote_workers else 0)
        master = [*self.master_prefix, *main, "--master", "--master-bind-host", self.master_bind,
                  "--master-bind-port", str(port),
                  "--expect-workers", str(self.workers + self.remote_workers), "--expect-workers-max-wait",
                  str(wait), self.user_class]
        worker = [*self.worker_prefix, *base, "--worker", "--master-host", self.worker_master_host,
                  "--master-port", str(port), "--loglevel", "INFO", self.user_class]
        return [master] + [worker] * self.workers

    def start(self) -> None:
        """Start the processes: the test begins at once, or, gated, at go()."""
        self.records.mkdir(parents=True, exist_ok=True)
        self.commands = self.build_commands()
        env = self.env()
        held = None
        if self.gated:  # only the master (or only) process holds: workers wait for it anyway
            held, self._go = gate.open_pipe()
        self.started = time.time()
        try:
            for i, cmd in enumerate(self.commands):
                name = "locust.log" if i == 0 else f"locust-worker-{i}.log"
                fds = (held,) if held is not None and i == 0 else ()
                with (self.out_dir / name).open("wb") as log:
                    log.write(f"$ {shlex.join(cmd)}\n".encode())
                    log.flush()
                    popen = subprocess.Popen(
                        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                        env={**env, gate.GO_FD_ENV: str(held)} if fds else env, pass_fds=fds, cwd=REPO,
                        start_new_session=True, preexec_fn=_pin_to(self.load_cpus))
                self.popens.append(popen)
                with contextlib.suppress(psutil.Error):
                    self._procs[popen.pid] = psutil.Process(popen.pid)
        finally:
            if held is not None:
                os.close(held)
        if not self.gated:
            self.opened = self.started

    def go(self) -> None:
        """Open the start gate: the held Locust begins its test (spawn, warm-up, measure) now."""
        assert self._go is not None, "go() needs a gated job started and not yet opened"
        fd, self._go = self._go, None
        self.opened = time.time()
        with contextlib.suppress(BrokenPipeError):  # it died while held: wait() reports its exit
            gate.go(fd)

    def shut(self) -> None:
        """Close a gate never opened: the held Locust ends without sending a request."""
        if self._go is not None:
            fd, self._go = self._go, None
            os.close(fd)

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

    def records_problem(self) -> str | None:
        """Why the latency records are incomplete (one per process that sent requests), or None."""
        found = len(list(self.records.glob("record-*.json")))
        expected = (self.workers + self.remote_workers) or 1
        log = self.out_dir / "locust.log"
        if not found:
            return f"Locust wrote no latency record; read {log}"
        if found < expected:
            return (f"only {found} of {expected} Locust workers' latency records arrived, so this repetition "
                    f"lacks the others' requests; {log} names the worker(s) that did not report")
        return None

    def exited(self) -> bool:
        return self.popens[0].poll() is not None

    def progress(self) -> dict[str, Any] | None:
        """Live figures from the lab's own per-second records (progress-*.json, one per process that
        sends requests): phase, users, requests and failures so far, and the rate of the newest whole
        second. Locust's own current-rps window lags by seconds; these do not."""
        found = []
        for path in self.records.glob("progress-*.json"):
            with contextlib.suppress(OSError, ValueError):
                found.append(json.loads(path.read_text(encoding="utf-8")))
        if not found:
            return None
        return {
            "phase": found[0].get("phase"),
            "users": sum(int(p.get("users") or 0) for p in found),
            "requests": sum(int(p.get("requests") or 0) for p in found),
            "failures": sum(int(p.get("failures") or 0) for p in found),
            "rps": sum(float(p.get("last_second_rps") or 0) for p in found),
            "offered_rps": sum(float(p.get("offered_rps") or 0) for p in found) or None,
            "late": sum(int(p.get("late") or 0) for p in found),
            "dropped": sum(int(p.get("dropped") or 0) for p in found),
            # open model (one process): the step under way, of how many, and how many were added
            **{k: found[0].get(k) for k in ("step", "steps", "steps_added")},
        }

    def stop(self) -> list[int | None]:
        """End every process of the job (TERM its group, KILL what is left); their exit codes."""
        self.shut()
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
            with contextlib.suppress(subprocess.TimeoutExpired):  # a poll interval, or until it exits
                self.popens[0].wait(POLL_SECONDS)
        else:
            return "timeout"
        # Workers hand their records to the master before it exits; give them a moment to follow.
        for popen in self.popens[1:]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(3)
        return "ok"



def generator_now(job: LocustJob) -> float | None:
    """CPU % of the busiest load-sending Locust process over the last two polls."""
    if len(job.polls) < 2:
        return None
    (t0, a), (t1, b) = job.polls[-2], job.polls[-1]
    vals = [100 * (b[str(p)] - a[str(p)]) / (t1 - t0) for p in job.load_pids
            if str(p) in a and str(p) in b and t1 > t0]
    return max(vals) if vals else None
