"""What can the load generator itself drive on this machine? `python -m lab calibrate [--force]`

Locust runs exactly as `make load` runs it (same locustfile, user settings, pinning to the load
CPUs, worker count) against a canned-response server that costs next to nothing: an asyncio
Protocol on uvloop, pinned to the server CPUs, answering every request with a fixed HTTP/1.1 200.
Whatever rps Locust reaches there is the generator's ceiling: a measured result near it (or with
a Locust process near 100 % of a core) is flagged generator-bound, not passed off as the server's.
Then the open model (OpenUser) offers the same target stepped rates: the highest rate at which it
still starts (almost) every request on time, and answers 95 % of it, is its sustainable rate, and a
capacity step above it is never taken for a server's limit.

The ceiling is stored in .lab/calibration.json (LAB_CALIBRATION_FILE) per (load CPUs, server
CPUs, Locust workers, whether idle CPUs polled: lab/stack/idle.py) with the machine's facts, and
reused while it is fresh: same CPU model, CPU count, memory, kernel, Python and Locust version, and
younger than LAB_CALIBRATION_MAX_DAYS (7).
The last measurement's raw files (Locust's CSV, HTML, records) stay in .lab/calibration-run/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import psutil

from lab import files, machine
from lab.knobs import env_flag
from lab.load.locust_job import LocustJob
from lab.load.settings import RunError, Settings, parse_cpus
from lab.stack import idle, procs
from loadtests import catalogue

REPO = Path(__file__).resolve().parents[2]
VERSION = 3  # 2: the open model's sustainable rate; 3: judged by start lag
DURATION = 8.0
WARMUP = 2.0
# Finer from 2,000/s, where this VM's sustainable rate and the fastest /json knees under the budget lie
# (1,850-2,000/s): a rate capped a step too low leaves those knees only lower bounds.
OPEN_RATES = (500.0, 1000.0, 2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 5000.0, 6000.0)
OPEN_STEP = 1.5
TARGET_BOUND_CPU = 90.0
# An open model kept to its schedule below this share of the closed-loop ceiling: on a quiet machine it
# sustains 0.6 of it (2,000/s against 3,297 rps, 6,000/s against 9,555); far below, the machine was busy
# (11:52 on 2026-12-07: 500/s against 4,858 rps, Locust at 11-20 % of a core while its starts lagged).
OPEN_BUSY_SHARE = 0.25
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: canned\r\nContent-Type: application/json\r\n"
            b"Content-Length: 27\r\n\r\n" b'{"message":"Hello, World!"}')


class CalibrationError(RuntimeError):
    """Calibration could not run; the message says why and what to do."""


def path() -> Path:
    return Path(os.environ.get("LAB_CALIBRATION_FILE") or REPO / ".lab" / "calibration.json")


def max_age_seconds() -> float:
    raw = os.environ.get("LAB_CALIBRATION_MAX_DAYS", "").strip()
    try:
        days = float(raw) if raw else 7.0
    except ValueError:
        raise CalibrationError(f"LAB_CALIBRATION_MAX_DAYS={raw!r} is not a number of days") from None
    return days * 86400


def estimated_seconds() -> float:
    return 4.0 + WARMUP + DURATION + 4.0 + 3.0 + 1.0 + OPEN_STEP * len(OPEN_RATES)


# --- the canned target -------------------------------------------------------------------------------


class Canned(asyncio.Protocol):
    """Answers every request (a header block ending in a blank line) with RESPONSE; keeps alive."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        n = self.buffer.count(b"\r\n\r\n")
        if n:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * n)


def serve(port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio still costs far less than any server under test
        pass

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Canned, "127.0.0.1", port, backlog=4096, reuse_address=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())


def start_target(port: int, cpus: list[int] | None, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "lab.load.calibrate", "--serve", "--port", str(port)]
    chosen = list(cpus or [])
    with log.open("wb") as fh:
        popen = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                                 start_new_session=True,
                                 preexec_fn=(lambda: os.sched_setaffinity(0, chosen)) if chosen else None)
    deadline = time.monotonic() + 15
    for _ in range(300):  # bounded: up to 15 s in 50 ms steps
        if popen.poll() is not None:
            raise CalibrationError(f"the canned target exited with code {popen.returncode}: "
                                   f"{procs.log_tail(log, 10)}")
        with contextlib.suppress(OSError):
            if procs.get(f"http://127.0.0.1:{port}/json", timeout=1.0)[0] == 200:
                return popen
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    stop_target(popen)
    raise CalibrationError(f"the canned target did not answer on port {port} within 15 s; see {log}")


def stop_target(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(5)


# --- measuring and storing ---------------------------------------------------------------------------


def fingerprint() -> dict[str, Any]:
    facts = machine.facts()
    return {"cpu_model": facts["cpu_model"], "cpus": facts["cpus"], "memory_bytes": facts["memory_bytes"],
            "kernel": facts["kernel"], "python": facts["python"],
            "locust": facts["packages"].get("locust")}


def key(load_cpus: list[int] | None, server_cpus: list[int] | None, workers: int, polling: bool) -> str:
    def cpus(c: list[int] | None) -> str:
        return ",".join(map(str, c)) if c else "all"

    idle_cpus = "poll" if polling else "halt"
    return f"load={cpus(load_cpus)};server={cpus(server_cpus)};workers={workers};idle={idle_cpus}"


def _read_store() -> dict[str, Any]:
    try:
        data = json.loads(path().read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("version") == VERSION:
            return data
    except (OSError, ValueError):
        pass
    return {"version": VERSION, "entries": {}}


def load_fresh(load_cpus: list[int] | None, server_cpus: list[int] | None,
               workers: int, polling: bool) -> dict[str, Any] | None:
    entry = _read_store()["entries"].get(key(load_cpus, server_cpus, workers, polling))
    if not isinstance(entry, dict):
        return None
    if entry.get("fingerprint") != fingerprint():
        return None
    if time.time() - float(entry.get("measured_ts", 0)) > max_age_seconds():
        return None
    return entry


def needed(s: Settings) -> bool:
    """Whether a run with these settings will measure a calibration (its plan counts the time)."""
    return s.calibrate == "force" or (s.calibrate == "auto" and load_fresh(
        s.load_cpus, s.server_cpus, s.locust_workers, idle.expected(s.idle_poll)) is None)


def measure(load_cpus: list[int] | None, server_cpus: list[int] | None, workers: int, polling: bool,
            duration: float = DURATION, users: int | None = None) -> dict[str, Any]:
    users = users or catalogue.SCENARIOS["json"].users
    out_dir = path().parent / "calibration-run"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    port = procs.free_port()
    print(f"calibrating the load generator: Locust ({'1 process' if not workers else f'{workers} workers'}, "
          f"CPUs {load_cpus or 'all'}) against a canned target (CPUs {server_cpus or 'all'}), "
          f"{users} users, {duration:g}s ...", flush=True)
    target = start_target(port, server_cpus, out_dir / "target.log")
    try:
        entry = _measure(target, port, out_dir, load_cpus, server_cpus, workers, duration, users)
        entry["key"] = key(load_cpus, server_cpus, workers, polling)
    finally:
        stop_target(target)
    store = _read_store()
    store["entries"][entry["key"]] = entry
    files.write_json(path(), store)
    return entry


def _measure(target: subprocess.Popen[bytes], port: int, out_dir: Path, load_cpus: list[int] | None,
             server_cpus: list[int] | None, workers: int, duration: float, users: int) -> dict[str, Any]:
    from lab.results.generator import generator_cpu  # imported when needed, as the others below
    from lab.results.records import latency_ms, load_records, merge

    target_proc = psutil.Process(target.pid)
    target_polls: list[tuple[float, float]] = []
    job = LocustJob(out_dir=out_dir, host=f"http://127.0.0.1:{port}", user_class="JsonUser",
                           shape="steady", users=users, spawn_rate=float(users), duration=duration,
                           warmup=WARMUP, workers=workers, load_cpus=load_cpus, run_tag="calibration")

    def tick(_job: LocustJob) -> str | None:
        with contextlib.suppress(psutil.Error):
            t = target_proc.cpu_times()
            target_polls.append((time.time(), t.user + t.system))
        return None if target.poll() is None else "the canned target died"

    try:
        job.start()
        outcome = job.wait(tick)
    finally:
        codes = job.stop() if job.popens else []
    if outcome != "ok" or (codes and codes[0] not in (0, None)):
        log = out_dir / "locust.log"
        raise CalibrationError(f"Locust did not finish the calibration run ({outcome}, exit {codes}); "
                               f"read {log}:\n{procs.log_tail(log, 15)}")
    records = load_records(job.records)
    shape = json.loads((job.records / "shape.json").read_text(encoding="utf-8"))
    start, end = shape["measure_start"], shape["measure_end"]
    requests = sum(r["requests"] for r in records)
    failures = sum(r["failures"] for r in records)
    if not requests:
        raise CalibrationError(f"the calibration run sent no requests; read {out_dir / 'locust.log'}")
    rps = requests / (end - start)
    gen = generator_cpu({"generator": {"polls": job.polls, "load_pids": job.load_pids}}, start, end)
    inside = [p for p in target_polls if start - 0.6 <= p[0] <= end + 0.6]
    target_cpu = (100 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
                  if len(inside) >= 2 and inside[-1][0] > inside[0][0] else None)
    lat = latency_ms(merge(r["latency_ok_us"] for r in records))
    entry = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "measured_ts": time.time(),
        "fingerprint": fingerprint(),
        "machine": machine.facts(),
        "load_cpus": load_cpus, "server_cpus": server_cpus, "locust_workers": workers,
        "users": users, "duration": duration, "warmup": WARMUP, "user_class": "JsonUser",
        "ceiling_rps": round(rps, 1),
        "requests": requests, "failures": failures,
        "generator_cpu_percent": gen["cpu_percent_mean"],
        "generator_cpu_percent_total": gen["cpu_percent_total"],
        "target_cpu_percent": round(target_cpu, 1) if target_cpu is not None else None,
        "target_bound": bool(target_cpu is not None and target_cpu >= TARGET_BOUND_CPU),
        "latency_ms": lat,
    }
    entry.update(measure_open(port, out_dir, load_cpus, target))
    if busy(entry):
        print(f"warning: {busy_note(entry)}", flush=True)
    if entry["target_bound"]:
        print(f"warning: the canned target used {target_cpu:.0f}% of its CPU: the ceiling "
              f"({rps:.0f} rps) is the target's, so the real generator ceiling is higher", flush=True)
    return entry


def measure_open(port: int, out_dir: Path, load_cpus: list[int] | None,
                 target: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The open model against the canned target: per offered rate, the share of late starts and
    Locust's CPU; the sustainable rate is the highest before the first rate it could not keep."""
    from lab.results.openmodel import DELIVERED_SHARE, LAG_P99_LIMIT_MS, merge_steps, open_steps
    from lab.results.records import load_records

    open_dir = out_dir / "open"
    open_dir.mkdir(parents=True, exist_ok=True)
    print(f"calibrating the open model: offered rates {', '.join(f'{r:g}' for r in OPEN_RATES)}/s, "
          f"{OPEN_STEP:g}s each ...", flush=True)
    job = LocustJob(out_dir=open_dir, host=f"http://127.0.0.1:{port}", user_class="OpenUser", shape="rates",
                    users=1, spawn_rate=1.0, duration=OPEN_STEP, warmup=1.0, load_cpus=load_cpus,
                    run_tag="calibration-open", rates=OPEN_RATES, path="/json")
    try:
        job.start()
        outcome = job.wait(lambda _j: None if target.poll() is None else "the canned target died")
    finally:
        job.stop()
    shape_file = job.records / "shape.json"
    if outcome != "ok" or not shape_file.exists():
        log = open_dir / "locust.log"
        raise CalibrationError(f"Locust did not finish the open-model calibration ({outcome}); read {log}:\n"
                               f"{procs.log_tail(log, 15)}")
    shape = json.loads(shape_file.read_text(encoding="utf-8"))
    run = {"generator": {"polls": job.polls, "load_pids": job.load_pids}}
    acc = merge_steps(load_records(job.records))
    steps = open_steps(shape, acc, shape["measure_start"], run, None, 1e9)
    sustainable = None
    for st in steps:  # against a free target, answers short of the rate are the generator's too
        if st["generator_limited"] or (st["achieved_rps"] or 0.0) < DELIVERED_SHARE * st["rate"]:
            break
        sustainable = st["rate"]
    return {"open_sustainable_rps": sustainable, "open_lag_limit_ms": LAG_P99_LIMIT_MS,
            "open_steps": [{k: st[k] for k in ("rate", "achieved_rps", "late_share", "start_lag_p99_ms",
                                               "generator_cpu_percent", "p99_ms")} for st in steps]}


def busy(entry: dict[str, Any]) -> bool:
    """Did the open model stop far below the closed-loop ceiling (a busy machine, not the generator)?"""
    rate, ceiling = entry.get("open_sustainable_rps"), entry.get("ceiling_rps")
    return bool(ceiling) and (rate or 0.0) < OPEN_BUSY_SHARE * float(ceiling or 0.0)


def busy_note(entry: dict[str, Any]) -> str:
    rate, ceiling = entry.get("open_sustainable_rps") or 0, entry.get("ceiling_rps") or 0
    return (f"the open model kept to its schedule only up to {rate:g}/s, under {OPEN_BUSY_SHARE:.0%} of the "
            f"closed-loop ceiling ({ceiling:g} rps): "
            "the machine was likely busy. Every capacity step stops at that rate, so knees above it are only "
            "lower bounds: run `make calibrate` again when the machine is quiet")


def describe(entry: dict[str, Any]) -> str:
    gen = entry.get("generator_cpu_percent")
    sustainable = entry.get("open_sustainable_rps")
    return (f"generator ceiling {entry['ceiling_rps']:.0f} rps closed-loop, open model sustains "
            f"{f'{sustainable:.0f}/s' if sustainable else 'no tested rate'} ({entry['key']}), Locust at "
            f"{gen if gen is not None else '?'}% of a core, canned target at "
            f"{entry.get('target_cpu_percent')}%; measured {entry['measured_at']}"
            + (f"; WARNING: {busy_note(entry)}" if busy(entry) else ""))


def ensure(load_cpus: list[int] | None, server_cpus: list[int] | None, workers: int, polling: bool,
           force: bool = False) -> dict[str, Any]:
    """A fresh calibration for these settings: the stored one, or a new measurement (with idle CPUs
    polling or not, as the caller holds them)."""
    entry = None if force else load_fresh(load_cpus, server_cpus, workers, polling)
    if entry is not None:
        print(f"calibration: reusing {path()}: {describe(entry)}", flush=True)
        return entry
    entry = measure(load_cpus, server_cpus, workers, polling)
    print(f"calibration: {describe(entry)}; stored in {path()}", flush=True)
    return entry


def main(argv: Sequence[str] | None = None) -> int:

    env = os.environ
    p = argparse.ArgumentParser(prog="python -m lab calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--force", action="store_true", help="measure even when a fresh calibration exists")
    p.add_argument("--show", action="store_true", help="print the stored calibrations and exit")
    p.add_argument("--locust-workers", default=env.get("LOCUST_WORKERS", "0"), help="[LOCUST_WORKERS]")
    p.add_argument("--server-cpus", default=env.get("LAB_SERVER_CPUS", "0"), help="[LAB_SERVER_CPUS]")
    p.add_argument("--load-cpus", default=env.get("LAB_LOAD_CPUS", "1"), help="[LAB_LOAD_CPUS]")
    env_flag(p, "--idle-poll", "LAB_IDLE_POLL", "auto", "idle CPUs poll while measuring, as make load "
             "holds them: auto, yes or no", env, choices=idle.CHOICES)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the canned target itself
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.port)
        return 0
    if args.show:
        print(json.dumps(_read_store(), indent=1))
        return 0
    try:
        workers = int(args.locust_workers)
        server_cpus: list[int] | None = parse_cpus(args.server_cpus)
        load_cpus: list[int] | None = parse_cpus(args.load_cpus)
        if len(os.sched_getaffinity(0)) < 2:
            server_cpus = load_cpus = None
        with idle.polling(args.idle_poll) as held:  # as make load measures
            ensure(load_cpus, server_cpus, workers, held.polling, force=args.force)
    except ValueError:
        print(f"lab.load.calibrate: LOCUST_WORKERS must be an integer, got {args.locust_workers!r}",
              file=sys.stderr)
        return 2
    except (CalibrationError, RunError, idle.IdleError) as exc:
        print(f"lab.load.calibrate: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
