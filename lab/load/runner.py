"""`make load`: drive every server with the same Locust scenarios and record what each costs.

    python -m lab load [--profile quick] [--servers a,b] [--scenarios x,y] [--reps N] [--server-cpu 0.1] ...

Per scenario: every server is started, pinned to the server CPUs and held to its CPU budget (a cgroup
quota), then the repetitions run interleaved across the servers (rep 1 of each, then rep 2 in a
rotated order, ...) so that drift on the machine hits all of them alike. Each repetition after the
first gets a fresh server process (LAB_FRESH_SERVER=no keeps one): a process can settle into a state
of its own (threaded /db under the budget ran at 330 µs CPU per request in one process and 520 in
the next, every repetition alike), and only repetitions over several processes let the verdicts see
that as noise rather than call two runs different. Per repetition: Locust
runs headless as a subprocess (pinned to the load CPUs; its load shape warms up first, uncounted,
then measures), started held at its gate while the fresh server starts and the last one stops
(lab/load/handover.py), lab.load.sampler samples the server, and every raw file goes under
reports/<run-id>/<server>/<scenario>/rep-<n>/. Capacity (open-model) scenarios first probe each server
briefly to place their offered rates, unless RATES= names them; each repetition adds steps while its last
met the SLO (up to the generator's sustainable rate), and repetitions after the first step finely across
the knee found so far (the median capacity of the repetitions done, never below a lower bound just
found). After `writes` (and `mixed`) the
orders Locust saw acknowledged are checked against the database. Then results.json is built from the
raw files alone (lab.results) and reports/latest points at the run. Every flag also reads an
environment variable (the Makefile passes them through): see --help.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

from lab import machine
from lab.cpus import pin, running_on
from lab.fmt import fmt_seconds
from lab.hosts import netns
from lab.load import calibrate, full_core, handover, knees, plan, probe, rounds, sampler, speed, topology
from lab.load.knees import Live
from lab.load.locust_job import LocustJob
from lab.load.observe import (
    add_throttling,
    count_sessions,
    live_line,
    process_tree,
    server_config,
    throttle_delta,
    tree_rss,
)
from lab.load.run_folder import new_run_dir, point_latest, run_settings, write_json
from lab.load.settings import RunError, Settings, build_parser, from_args, say
from lab.load.writes import WRITE_SCENARIOS, check_writes
from lab.report import run_report as report
from lab.report.digest import digest
from lab.results import build as results
from lab.results.records import ResultsError
from lab.stack import cpu_budget, database, idle, pg_config, procs
from loadtests import catalogue
from servers.settings import redact

PROGRESS_SECONDS = 2.0
# Every server of a scenario gets a short closed-loop burst on the scenario's code path before its first
# repetition (pool connections opened, code paths and caches warm), so that rep 1 is no colder than rep 4
# and each repetition's own Locust warm-up only has to open its connections. (Rep 1 on a process of its
# own was tried: a scenario's first round stayed about 2 % dearer, which the paired verdicts take out.)
WARM_SECONDS, WARM_CONNECTIONS = 0.5, 16
RAW_FORMAT = 2  # version of the raw files' layout; lab/results/build.py reads it (1: one server at a time)


@dataclass
class Runner:
    s: Settings
    run_dir: Path
    database_url: str
    calibration: dict[str, Any] | None
    progress: plan.Progress
    problems: list[str] = field(default_factory=list)
    lives: list[Live] = field(default_factory=list)  # the servers of the scenario under way
    started: float = field(default_factory=time.time)  # the run's start, for its time cap
    rep_cache: dict[Path, dict[str, Any]] = field(default_factory=dict)  # repetitions read for rounds

    def app_name(self, model: str) -> str:
        """This run's application_name for the model: pg_stat_activity counts only its sessions,
        never those of another server of the same model (say, the one `make up` started)."""
        return f"serverlab-{model}-{self.s.run_token}"

    def free_port(self) -> int:
        """A port for the next server process, found where it will listen (on test hosts, host a)."""
        listen, hosts = self.s.topology.bind, self.s.topology.hosts
        if hosts:
            return netns.call_in(hosts.namespace("a"), lambda: procs.free_port(listen))
        return procs.free_port(listen)

    def start_server(self, live: Live, port: int | None = None) -> None:
        # Sized for the server CPUs (multiproc workers); the tree is pinned to them, and put under its
        # budget, once it is up.
        listen, hosts = self.s.topology.bind, self.s.topology.hosts  # where asked, never wider
        model, own = self.s.variants.get(live.model, (live.model, {}))  # a variant: a model, knobs of its own
        logs = live.meta.setdefault("server_logs", [])  # one per process, in the order of server_pids
        logs.append(f"{live.model}-{len(logs) + 1}.log")

        def start() -> procs.ServerProcess:
            return procs.start_server(
                model, port=port or procs.free_port(listen), database_url=self.database_url,
                log_dir=live.scen_dir, log_name=logs[-1], host=listen, cpus=self.s.server_cpus,
                env={**self.s.server_env, **own, "LAB_APP_NAME": self.app_name(live.model)},
                code=self.s.variant_dirs.get(live.model))  # a variant's checkout, else this one

        # On test hosts the server starts (and its port is found free) on host a.
        live.server = netns.call_in(hosts.namespace("a"), start) if hosts else start()
        tree = process_tree(live.server.pid)
        if self.s.server_cpus:
            pin(tree, self.s.server_cpus)
        if self.s.server_cpu is not None:
            live.budget = cpu_budget.CpuBudget(self.s.server_cpu, self.s.cpu_period_us).create()
            live.budget.add(tree)

    def run_scenario(self, name: str) -> None:
        sc = self.s.scenario(name)
        lives = self.lives = [self.prepare(model, sc) for model in self.s.servers]
        left = self.s.scenarios[self.s.scenarios.index(name):]
        more = rounds.Rounds(self.s.reps, 0.0 if sc.open_model else self.s.resolve, self.s.max_reps,
                             rounds.share(self.s.time_cap, time.time() - self.started,
                                          sum(plan.scenario_seconds(self.s, n) for n in left), len(left)))
        try:
            for live in lives:
                self.start(live, sc)
            rep = 0
            while rep < self.s.reps or self.add_round(more, lives, sc):
                rep = more.done = rep + 1
                began = time.monotonic()
                by_model = {live.model: live for live in lives}
                for model in plan.order(self.s.servers, rep):
                    live = by_model[model]
                    self.progress.index += 1
                    if live.ok:
                        self.run_rep_safely(live, sc, rep, fresh=rep > 1 and self.s.fresh_server)
                    cap = (knees.read(live, sc, rep, self.s.slo_p99_ms, self.calibration)
                           if live.ok and sc.open_model and not self.s.rates else None)
                    if live.ok and knees.missed_all(live, sc, rep, cap):  # once, steps lower
                        self.run_rep_safely(live, sc, rep, fresh=self.s.fresh_server)
                        cap = (knees.read(live, sc, rep, self.s.slo_p99_ms, self.calibration)
                               if live.ok else None)
                    if live.ok and rep < self.s.reps:
                        knees.place(live, sc, rep, cap)
                    if self.s.fresh_server:  # this process serves no other repetition
                        handover.retire(live, self.stop_server)
                if rep > self.s.reps:
                    more.spent_s += time.monotonic() - began
            for live in lives:
                live.meta["rounds"] = more.as_dict()
                handover.settle(live, self.fail)
                if live.meta["status"] == "running":
                    live.meta["status"] = "ok"
        finally:
            for live in lives:
                self.finish(live)

    def add_round(self, more: rounds.Rounds, lives: list[Live], sc: catalogue.Scenario) -> bool:
        """Whether the scenario adds a round (lab/load/rounds.py); says why, and counts it into the plan."""
        if not more.resolve or not any(live.ok for live in lives):
            more.stopped = more.stopped or rounds.OFF
            return False
        dirs = {live.model: [live.scen_dir / f"rep-{k}" for k in range(1, more.done + 1)] for live in lives}
        found = rounds.reach(dirs, {live.model: live.meta for live in lives}, self.calibration,
                             self.s.margin_within, self.rep_cache)
        round_s = len(lives) * plan.rep_seconds(self.s, sc, self.s.fresh_server)
        if not more.more(found, round_s):
            say(f"{sc.name}: {more.describe()}")
            return False
        worst = more.worst()
        assert worst is not None
        say(f"{sc.name}: after {more.done} rounds {worst.server}'s CPU per request {worst.could()}, not "
            f"the {more.resolve:.0%} asked for: adding round {more.done + 1} (~{fmt_seconds(round_s)})")
        self.progress.total_runs += len(lives)
        self.progress.planned += round_s
        return True

    def prepare(self, model: str, sc: catalogue.Scenario) -> Live:
        scen_dir = self.run_dir / model / sc.name
        scen_dir.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {
            "server": model, "scenario": sc.name, "user_class": sc.user_class, "shape": sc.shape,
            "users": sc.users, "spawn_rate": sc.spawn_rate, "duration": self.s.duration,
            "warmup": self.s.warmup, "reps": self.s.reps, "uses_db": sc.uses_db,
            "writes": sc.name in WRITE_SCENARIOS, "description": sc.description,
            "open_model": sc.open_model, "path": sc.path or None, "arrival": self.s.arrival if sc.open_model
            else None, "step_seconds": self.s.step_seconds if sc.open_model else None,
            "slo_p99_ms": self.s.slo_p99_ms,
            "cpu_budget": {"cores": self.s.server_cpu, "period_us": self.s.cpu_period_us},
            "full_core_seconds": plan.full_core_seconds(self.s, sc),
            "stages": [] if sc.open_model else [asdict(st) for st in catalogue.schedule(
                sc.shape, sc.users, sc.spawn_rate, self.s.duration)],
            "status": "running", "error": None, "problems": [],
        }
        write_json(scen_dir / "scenario.json", meta)
        return Live(model, scen_dir, meta)

    def start(self, live: Live, sc: catalogue.Scenario) -> None:
        say(f"{live.model} / {sc.name}: starting the server")
        try:
            # The run's own application_name should have no sessions yet; any found are subtracted.
            app = self.app_name(live.model)
            other = live.meta["db_sessions_before_start"] = count_sessions(self.database_url, app)
            if other:
                say(f"  warning: {other} database sessions named {app} exist before this server "
                    "started; results subtract them")
            self.start_server(live)
            assert live.server is not None
            live.meta["server_pid"], live.meta["server_url"] = live.server.pid, live.server.url
            live.meta["server_pids"] = [live.server.pid]
            live.meta["rss_idle_bytes"] = live.rss_idle = tree_rss(live.server.pid)  # before any client
            live.meta["server_config"] = server_config(live.server.url)
            self.warm_up(live, sc)
            if sc.open_model:
                live.rates = self.s.rates or self.probe_rates(live, sc)
                live.meta["rates"] = list(live.rates)
                live.meta["stages"] = [asdict(st) for st in catalogue.schedule(
                    sc.shape, 1, 1.0, self.s.step_seconds, live.rates)]
        except (procs.StartError, RunError, cpu_budget.BudgetError, OSError) as exc:
            self.fail(live, str(exc))
        write_json(live.scen_dir / "scenario.json", live.meta)

    def restart(self, live: Live, port: int) -> None:
        """A fresh process (and budget) on `port` for the next repetition (run_rep warms it up)."""
        assert live.server is not None
        try:
            if handover.settle(live, self.fail):  # stopped in the background since its repetition
                self.stop_server(live)  # (or never retired: the capacity's run-again of a repetition)
                self.start_server(live, port)
                assert live.server is not None
                live.meta["server_pids"].append(live.server.pid)
                live.rss_idle = tree_rss(live.server.pid)
        except (procs.StartError, RunError, cpu_budget.BudgetError, OSError) as exc:
            self.fail(live, f"restarting the server for the next repetition: {exc}")
        write_json(live.scen_dir / "scenario.json", live.meta)

    def warm_up(self, live: Live, sc: catalogue.Scenario) -> None:
        """A short closed-loop burst on a new process before its first measured repetition (and before
        a capacity scenario's probe): pool connections open and code paths run once, not while measured."""
        assert live.server is not None
        probe.probe(self.s.target_host, live.server.port, sc.path, seconds=WARM_SECONDS,
                    connections=WARM_CONNECTIONS, cpus=self.s.load_cpus)

    def stop_server(self, live: Live) -> None:
        """Stop the server and release its budget, adding its throttling to the scenario's; once per process.
        The budget is lifted first: the shutdown is not measured, and under the quota it took ten times as
        long (a second on a busy machine)."""
        if live.budget is not None:
            live.meta["cpu_budget"] = add_throttling(live.meta.get("cpu_budget"), live.budget.stat())
            live.budget.set_limited(False)
        if live.server is not None and live.server.pid not in live.stopped:
            live.stopped.add(live.server.pid)
            began = time.time()
            live.meta["server_exit_code"] = procs.stop_server(live.server)
            live.meta.setdefault("server_exit_codes", []).append(live.meta["server_exit_code"])
            live.meta.setdefault("server_stops", []).append([round(began, 4), round(time.time(), 4)])
        if live.budget is not None:
            live.budget.remove()
            live.budget = None

    def probe_rates(self, live: Live, sc: catalogue.Scenario) -> tuple[float, ...]:
        assert live.server is not None
        rps, failed = probe.probe(self.s.target_host, live.server.port, sc.path, cpus=self.s.load_cpus)
        live.meta["probe"] = {"rps": round(rps, 1), "failed": failed, "seconds": probe.SECONDS,
                              "connections": probe.CONNECTIONS}
        ceiling = (self.calibration or {}).get("open_sustainable_rps")
        rates = catalogue.probe_rates(rps, ceiling)
        say(f"  {live.model}/{sc.name}: a {probe.SECONDS:g}s closed-loop probe answered {rps:,.0f} requests/s"
            f"{f' ({failed} failed)' if failed else ''}; offered rates {', '.join(f'{r:g}' for r in rates)}"
            + (f" (held to the generator's sustainable {ceiling:g}/s)"
               if ceiling and rps * catalogue.PROBE_SHARES[-1] > ceiling else ""))
        return rates

    def fail(self, live: Live, error: str) -> None:
        live.meta["status"], live.meta["error"] = "failed", error
        self.problems.append(f"{live.model}/{live.meta['scenario']}: {error}")
        say(f"  FAILED {live.model}/{live.meta['scenario']}: {error}")

    def finish(self, live: Live) -> None:
        handover.settle(live, self.fail)
        if live.meta["status"] == "running":  # Ctrl-C or SIGTERM on the way out
            live.meta["status"], live.meta["error"] = "interrupted", "the run was interrupted"
        self.stop_server(live)
        write_json(live.scen_dir / "scenario.json", live.meta)

    def run_rep_safely(self, live: Live, sc: catalogue.Scenario, rep: int, *, fresh: bool) -> None:
        """One repetition, on a fresh process when `fresh`. Its Locust starts first, held at its start gate,
        so that its interpreter and imports overlap the server's start and warm-up (lab/load/handover.py)."""
        assert live.server is not None
        timeline = handover.Timeline()
        job: LocustJob | None = None
        try:
            port = self.free_port() if fresh else live.server.port
            job = self.locust_job(live, sc, rep, port)
            job.start()
            timeline.mark("locust_started", job.started)
            if fresh:
                self.restart(live, port)
                timeline.mark("server_ready")
            if live.ok:
                assert live.server is not None
                self.run_rep(live, sc, rep, job, timeline, warm=fresh)
                if not live.server.alive():
                    raise RunError(f"the {live.model} server died (exit {live.server.popen.returncode}); "
                                   f"read {live.server.log_path}:\n{live.server.log_tail()}")
        except (RunError, sampler.SamplerError, OSError) as exc:
            self.fail(live, str(exc))
        finally:
            if job is not None:
                job.stop()  # a job the gate never let start ends here, unsent

    def locust_job(self, live: Live, sc: catalogue.Scenario, rep: int, port: int) -> LocustJob:
        """The repetition's Locust, gated, for the server about to listen on `port`."""
        model = self.s.variants.get(live.model, (live.model, {}))[0]
        rep_dir = live.scen_dir / f"rep-{rep}"
        rep_dir.mkdir(parents=True, exist_ok=True)
        fine = sc.open_model and live.knee is not None and rep > 1
        ceiling = (self.calibration or {}).get("open_sustainable_rps")
        rates = catalogue.knee_rates(live.knee or 0.0, rep, self.s.reps, ceiling) if fine else live.rates
        return LocustJob(out_dir=rep_dir, host=f"http://{self.s.target_host}:{port}",
                         user_class=sc.user_class, shape=sc.shape, users=sc.users, spawn_rate=sc.spawn_rate,
                         duration=self.s.step_seconds if sc.open_model else self.s.duration,
                         warmup=self.s.warmup, workers=self.s.locust_workers,
                         remote_workers=self.s.remote_workers, master_bind=self.s.master_bind,
                         master_port=self.s.master_port, master_prefix=self.s.topology.master_prefix(),
                         worker_prefix=self.s.topology.worker_prefix(),
                         worker_master_host=self.s.topology.worker_master_host(),
                         load_cpus=self.s.load_cpus,
                         run_tag=f"{self.s.run_id}-{self.s.run_token}-{model}-{sc.name}-{rep}",
                         rates=rates, path=sc.path, arrival=self.s.arrival,
                         extend_max=self.s.extend_steps if sc.open_model else 0,
                         extend_factor=catalogue.KNEE_RATIO if fine else catalogue.EXTEND_FACTOR,
                         rate_ceiling=ceiling, slo_p99_ms=self.s.slo_p99_ms,
                         full_core=plan.full_core_seconds(self.s, sc), gated=True,
                         html=self.s.locust_html == "all" or (self.s.locust_html == "first" and rep == 1))

    def run_rep(self, live: Live, sc: catalogue.Scenario, rep: int, job: LocustJob,
                timeline: handover.Timeline, *, warm: bool) -> None:
        """Warm a fresh process up (`warm`) while the sampler starts, settle every stopping server, open
        the gate, and follow the repetition to its end."""
        server = live.server
        assert server is not None
        rep_dir, tag, rates = job.out_dir, job.run_tag, job.rates
        run: dict[str, Any] = {"rep": rep, "run_tag": tag, "status": "running", "error": None,
                               "server": {"model": server.model, "pid": server.pid, "url": server.url},
                               "rss_idle_bytes": live.rss_idle,
                               "rates": list(rates) if sc.open_model else None}
        label = (f"[{self.progress.index}/{self.progress.total_runs}] {live.model}/{sc.name} "
                 + (f"rep {rep}/{self.s.reps}" if rep <= self.s.reps else f"rep {rep} (added)"))
        samp: subprocess.Popen[bytes] | None = None
        last_print, last_phase = [0.0], [""]
        throttle_before: dict[str, Any] | None = None

        def tick(j: LocustJob) -> str | None:
            if not server.alive():
                return f"the server died (exit {server.popen.returncode})"
            now = time.monotonic()
            line = live_line(j, time.time() - j.opened)
            phase = line.split(maxsplit=1)[0]
            if now - last_print[0] >= PROGRESS_SECONDS or phase != last_phase[0]:  # and each new phase
                last_print[0], last_phase[0] = now, phase
                left = fmt_seconds(self.progress.remaining())
                say(f"  {label} {line} | run {fmt_seconds(self.progress.elapsed)} elapsed, ~{left} left")
            return None

        probe_popen = (speed.start(rep_dir / speed.FILE, self.s.server_cpus,
                                   max_seconds=job.hard_timeout + 30) if self.s.speed_probe else None)
        run["speed_probe"] = {"file": speed.FILE, "duty": speed.DEFAULT_DUTY} if probe_popen else None
        lift = (full_core.FullCore(live.budget, job.records, job.hard_timeout).start()
                if live.budget and job.full_core else None)
        try:
            run["locust"] = {"commands": [shlex.join(c) for c in job.commands], "pids": job.pids,
                             "load_pids": job.load_pids, "workers": job.workers,
                             "remote_workers": job.remote_workers, "cpus": job.load_cpus}
            remote = self.s.topology.remote_servers  # read as on another machine: from /metrics only
            with ThreadPoolExecutor(1, thread_name_prefix="sampler-start") as pool:
                starting = pool.submit(
                    sampler.start_sampler, rep_dir / "samples.jsonl", 0 if remote else server.pid,
                    app_name=self.app_name(live.model), database_url=self.database_url,
                    metrics_url=f"{server.url}/metrics", generator_pids=job.pids, ports=[server.port],
                    cpus=job.load_cpus, log_path=rep_dir / "sampler.log", max_seconds=job.hard_timeout + 30,
                    cpu_usage_file=live.budget.usage_file if live.budget and not remote else None)
                try:
                    if warm:
                        self.warm_up(live, sc)
                        timeline.mark("warm")
                finally:
                    samp = starting.result()
            timeline.mark("sampler_ready")
            handover.settle_all(self.lives, self.fail)  # no shutdown runs on the CPUs while measuring
            timeline.mark("settled")
            throttle_before = live.budget.stat() if live.budget else None
            job.go()
            outcome = job.wait(tick)
            timeline.mark("locust_exited")
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
            if lift is not None:
                run["full_core"] = {"seconds": job.full_core, "mark": lift.stop(), "error": lift.error}
            if samp is not None:
                sampler.stop_sampler(samp)
            if probe_popen is not None:
                speed.stop(probe_popen)
            run.setdefault("locust", {})["exit_codes"] = codes
            run["locust"]["exit_code"] = codes[0] if codes else None
            run["generator"] = {"polls": job.polls, "load_pids": job.load_pids}
            run["started_at"], run["finished_at"] = job.started, time.time()
            run["timeline"] = {**timeline.as_dict(), "gate_opened": job.opened or None}
            if live.budget is not None and throttle_before is not None:
                run["cpu_budget"] = throttle_delta(throttle_before, live.budget.stat())
            write_json(rep_dir / "run.json", run)
        if codes and codes[0] not in (0, None) and run["status"] == "ok":
            run["status"], run["error"] = "failed", (
                f"Locust exited with code {codes[0]}; read {rep_dir / 'locust.log'}:\n"
                f"{procs.log_tail(rep_dir / 'locust.log', 15)}")
        if lift is not None and run["status"] == "ok" and not run["full_core"]["mark"]:
            run["status"], run["error"] = "failed", (lift.error or "the full-core phase never began: Locust "
                                                     f"wrote no split.json; read {rep_dir / 'locust.log'}")
        missing = job.records_problem()
        if missing and run["status"] == "ok":
            run["status"], run["error"] = "failed", missing
        if sc.name in WRITE_SCENARIOS:
            try:
                run["writes"] = check_writes(self.database_url, tag, job.records)
            except (psycopg2.Error, OSError, ValueError) as exc:
                run["writes"] = {"run_tag": tag, "ok": False,
                                 "message": f"could not check the orders against the database: {exc}"}
            if not run["writes"]["ok"]:
                where = f"{live.model}/{sc.name} rep {rep}"
                say(f"  !!! WRITES CHECK FAILED for {where}: {run['writes']['message']}")
                self.problems.append(f"{where}: {run['writes']['message']}")
            else:
                say(f"  {label} writes check: {run['writes']['message']}")
        write_json(rep_dir / "run.json", run)
        if run["status"] != "ok":
            raise RunError(str(run["error"]))
        p = job.progress()
        if p:
            say(f"  {label} done: {p['requests']:,} requests measured, {p['failures']:,} failures")


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def check_budget(s: Settings) -> None:
    """Fail before anything starts when the CPU budget cannot be enforced here."""
    if s.server_cpu is None:
        return
    try:
        cpu_budget.CpuBudget(s.server_cpu, s.cpu_period_us).create().remove()
    except cpu_budget.BudgetError as exc:
        raise RunError(str(exc)) from None


def run(s: Settings, *, link_latest: bool = True) -> int:
    """One run into reports_dir/<run-id>; link_latest=False leaves reports_dir/latest alone (make tune)."""
    raise_fd_limit()
    try:
        check_budget(s)
    except RunError as exc:
        say(f"load run failed: {exc}")
        return 2
    s.reports_dir.mkdir(parents=True, exist_ok=True)
    run_dir = new_run_dir(s)
    s = s.replace(run_id=run_dir.name)
    started = time.time()
    status: dict[str, Any] = {"started_at": started, "finished_at": None, "exit_status": None, "problems": []}
    write_json(run_dir / "status.json", status)
    write_json(run_dir / "machine.json", machine.facts())

    if s.database_url:
        os.environ["LAB_DATABASE_URL"] = s.database_url
    need_cal = calibrate.needed(s)
    planned = plan.print_plan(s, need_cal)
    settings_doc = run_settings(s, RAW_FORMAT, planned)
    write_json(run_dir / "settings.json", settings_doc)
    say(f"run {s.run_id}: raw files and results under {run_dir}")

    exit_status = 1
    runner: Runner | None = None
    holds = contextlib.ExitStack()
    try:
        holds.enter_context(running_on(s.load_cpus))  # the runner's own polling stays off the servers' CPUs
        hosts = s.topology.hosts
        if hosts is not None:
            say(f"topology: {s.topology.describe(s.locust_workers, s.remote_workers)}")
            holds.enter_context(netns.claimed(hosts, f"load run {s.run_id}"))  # no one else's, meanwhile
            holds.callback(topology.stop_database, hosts)
        url = topology.provision_on(hosts) if hosts else database.provision()
        settings_doc["database_url"] = redact(url)
        held = holds.enter_context(idle.polling(s.idle_poll))
        settings_doc["idle"] = held.as_dict()
        say(f"while measuring, {held.describe()} (LAB_IDLE_POLL)")
        write_json(run_dir / "settings.json", settings_doc)
        calibration = None
        if s.calibrate != "skip":
            calibration = calibrate.ensure(s.load_cpus, s.server_cpus, s.locust_workers, held.polling,
                                           force=s.calibrate == "force")
            write_json(run_dir / "calibration.json", calibration)
        runner = Runner(s, run_dir, url, calibration, plan.Progress(len(plan.repetitions(s)), planned - (
            calibrate.estimated_seconds() if need_cal else 0)), started=started)
        with database.pinned(s.database_cpus) as database_cpus:
            settings_doc["database_cpus"] = database_cpus  # what was pinned: None for an external database
            write_json(run_dir / "settings.json", settings_doc)
            for name in s.scenarios:
                runner.run_scenario(name)
        exit_status = 0 if not runner.problems else 1
    except KeyboardInterrupt:
        status["problems"].append("interrupted")
        exit_status = 130
        say("interrupted: servers, samplers and Locust are stopped; building results from what ran")
    except (pg_config.PostgresError, calibrate.CalibrationError, RunError, idle.IdleError,
            netns.HostsError) as exc:
        status["problems"].append(str(exc))
        say(f"load run failed: {exc}")
        exit_status = 1
    finally:
        holds.close()
        status["finished_at"] = time.time()
        status["wall_seconds"] = round(status["finished_at"] - started, 1)
        status["exit_status"] = exit_status
        write_json(run_dir / "status.json", status)

    try:
        out = results.write(run_dir)
    except ResultsError as exc:
        say(f"could not build results.json: {exc}")
        return exit_status or 1
    data = json.loads(out.read_text(encoding="utf-8"))
    if link_latest:
        point_latest(s.reports_dir, run_dir)
    html: Path | None = None
    try:
        html, _markdown = report.build(run_dir)
    except Exception as exc:  # the raw files and results.json stand; `make report` can retry
        where = run_dir.relative_to(s.reports_dir) if run_dir.is_relative_to(s.reports_dir) else run_dir
        say(f"could not build the report ({exc}); rebuild it with `make report RUN={where}`")
        exit_status = exit_status or 1
    say("")
    say("\n".join(digest(data, run_dir, html)))  # every figure stays in summary.md
    if data["problems"] and exit_status == 0:
        exit_status = 1
    return exit_status


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(description=__doc__)
    parser.add_argument("--plan", action="store_true",
                        help="print the plan and its estimated time, run nothing")
    args = parser.parse_args(argv)
    try:
        s = from_args(args)
    except (RunError, KeyError) as exc:
        print(f"lab load: {exc}", file=sys.stderr)
        return 2
    if args.plan:
        plan.print_plan(s, calibrate.needed(s))
        return 0
    signal.signal(signal.SIGTERM, _sigterm)
    return run(s)


if __name__ == "__main__":
    sys.exit(main())
