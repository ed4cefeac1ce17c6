"""A load run's folder: its id, its JSON files, reports/latest, and the command that runs it again."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lab import files, knobs
from lab.load import variants
from lab.load.locust_job import STOP_TIMEOUT
from lab.load.settings import Settings
from lab.stack import cpu_budget
from loadtests import catalogue


def write_json(path: Path, data: Any) -> None:
    files.write_json(path, data, default=str)


def point_latest(reports_dir: Path, run_dir: Path) -> None:
    latest = reports_dir / "latest"
    tmp = reports_dir / ".latest.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    tmp.replace(latest)


def reproduce_command(s: Settings) -> str:
    parts = [".venv/bin/python", "-m", "lab", "load", "--profile", s.profile,
             "--servers", ",".join(n for n in s.servers if n not in s.variants),
             "--scenarios", ",".join(s.scenarios),
             "--duration", f"{s.duration:g}", "--warmup", f"{s.warmup:g}", "--reps", str(s.reps),
             "--resolve", f"{s.resolve * 100:g}", "--max-reps", str(s.max_reps),
             "--time-cap", f"{(s.time_cap or 0) / 60:g}",
             "--locust-workers", str(s.locust_workers)]
    hosts = s.topology.hosts
    if hosts is not None:
        parts += ["--test-hosts", "yes", "--hosts-prefix", hosts.prefix, "--hosts-subnet", hosts.subnet]
    elif s.topology.bind != "127.0.0.1":
        parts += ["--bind", s.topology.bind]
    if s.remote_workers:
        parts += ["--remote-workers", str(s.remote_workers), "--master-bind", s.master_bind,
                  "--master-port", str(s.master_port), "--target-host", s.target_host]
    if s.users:
        parts += ["--users", str(s.users)]
    if s.shape:
        parts += ["--shape", s.shape]
    parts += ["--server-cpu", f"{s.server_cpu:g}" if s.server_cpu is not None else "none"]
    if s.server_cpu is not None and s.cpu_period_us != cpu_budget.DEFAULT_PERIOD_US:
        parts += ["--cpu-period-us", str(s.cpu_period_us)]
    if s.server_cpu is not None:
        parts += ["--full-core-seconds", f"{s.full_core:g}"]
    if any(s.scenario(n).open_model for n in s.scenarios):
        parts += ["--step-seconds", f"{s.step_seconds:g}", "--slo-p99-ms", f"{s.slo_p99_ms:g}",
                  "--arrival", s.arrival, "--extend-steps", str(s.extend_steps)]
        if s.rates:
            parts += ["--rates", ",".join(f"{r:g}" for r in s.rates)]
    if s.idle_poll != "auto":
        parts += ["--idle-poll", s.idle_poll]
    if not s.speed_probe:
        parts += ["--speed-probe", "no"]
    if s.locust_html != "first":
        parts += ["--locust-html", s.locust_html]
    if s.server_cpus:
        parts += ["--server-cpus", ",".join(map(str, s.server_cpus))]
    if s.variants_run():
        parts += ["--variants", variants.spec(s.variants_run(), s.variant_dirs)]
    if set(s.server_env).union(*(env for _, env in s.variants_run().values())) & set(knobs.OPT_IN):
        parts += ["--allow-extra-cpu"]
    if s.load_cpus:
        parts += ["--load-cpus", ",".join(map(str, s.load_cpus))]
    if s.database_cpus != s.load_cpus:
        parts += ["--database-cpus", ",".join(map(str, s.database_cpus)) if s.database_cpus else "none"]
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(s.server_env.items()))
    if os.environ.get("LAB_CONNECTIONS_USERS"):
        env = (env + f" LAB_CONNECTIONS_USERS={os.environ['LAB_CONNECTIONS_USERS']}").strip()
    return (env + " " if env else "") + shlex.join(parts)


def run_settings(s: Settings, raw_format: int, planned: float) -> dict[str, Any]:
    """settings.json as the run starts (the runner adds where the database and idle CPUs ended up)."""
    return {
        "raw_format": raw_format, "run_id": s.run_id, "run_token": s.run_token, "profile": s.profile,
        "servers": s.servers, "scenarios": s.scenarios,
        "users": s.users, "duration": s.duration, "warmup": s.warmup, "reps": s.reps, "shape": s.shape,
        "resolve": s.resolve or None, "max_reps": s.max_reps, "time_cap_seconds": s.time_cap,
        "locust_workers": s.locust_workers, "remote_workers": s.remote_workers,
        "target_host": s.target_host, "topology": s.topology.as_dict(s.locust_workers, s.remote_workers),
        "server_cpus": s.server_cpus, "load_cpus": s.load_cpus,
        "server_cpu": s.server_cpu, "cpu_period_us": s.cpu_period_us, "full_core": s.full_core,
        "interleaved": True,
        "rates": list(s.rates), "step_seconds": s.step_seconds, "slo_p99_ms": s.slo_p99_ms,
        "arrival": s.arrival, "margin_within": s.margin_within, "speed_probe": s.speed_probe,
        "locust_html": s.locust_html,
        "runner_cpus": s.load_cpus,
        "database_cpus": None, "calibrate": s.calibrate, "server_env": s.server_env,
        "variants": variants.records(s.variants_run(), s.variant_dirs),
        "connections_users": catalogue.CONNECTIONS_USERS, "planned_seconds": round(planned),
        "stop_timeout": STOP_TIMEOUT, "sample_interval": os.environ.get("LAB_SAMPLE_INTERVAL") or 0.25,
        "scenario_defs": {n: asdict(s.scenario(n)) for n in s.scenarios},
        "command": reproduce_command(s), "argv": sys.argv,
    }


def new_run_dir(s: Settings) -> Path:
    run_id = s.run_id or time.strftime("%Y%m%d-%H%M%S") + f"-{s.profile}"
    run_dir = s.reports_dir / run_id
    for n in range(2, 100):  # two runs in the same second get distinct folders
        if not run_dir.exists():
            break
        run_dir = s.reports_dir / f"{run_id}-{n}"
    run_dir.mkdir(parents=True)
    return run_dir
