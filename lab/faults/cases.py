"""The fault cases of the server process (overload, SIGTERM, a killed worker, a soak) and CASES, all of them.

Each case drives one server through one kind of trouble, bounded in time, and returns its figures and
a verdict. The criteria are the issue's; every number is measured here. The database-side cases are
in lab/faults/db_cases.py, the clients' in lab/faults/client_cases.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from lab.faults import wire
from lab.faults.client_cases import bad_input, disconnects, idempotency_race, schemathesis, slowloris
from lab.faults.db_cases import database_blackhole, database_down, sessions_killed
from lab.faults.load import Load, ms, statuses
from lab.faults.target import Result, Target, judge


def overload(t: Target) -> Result:
    """4x pool capacity on /hold: only 200 or 503 + Retry-After; 503s and /health prompt.

    The fail-fast rule needs the pool's hold time, which a fresh server learns from the first holds
    to end: requests queued before that (the first wave) may wait out the acquire timeout. They are
    counted apart; the 503 p99 is judged on requests that began after one acquire timeout."""
    hold_ms, seconds = 500, (4.0 if t.quick else 8.0)
    began = time.monotonic()
    # Clients back off 50 ms after a 503: 4x the pool in concurrency, not a flood of retries.
    load = Load(t.url, f"/hold?ms={hold_ms}", 4 * t.capacity, seconds, pause_after_503=0.05).start()
    health = Load(t.url, "/health", 1, seconds, pause=0.05).start()
    samples, probes = load.join(), health.join()
    settled = began + t.acquire_timeout  # requests begun from here on meet a server that knows its holds
    first_wave = [s for s in samples if s.start < settled]
    refused = [s for s in samples if s.status == 503 and s.start >= settled]
    slow_first = [s for s in first_wave if s.status == 503 and s.seconds >= 0.9 * t.acquire_timeout]
    others = [s for s in samples if s.status not in (200, 503)]
    figures: dict[str, Any] = {
        "clients": 4 * t.capacity,
        "hold_ms": hold_ms,
        "requests": len(samples),
        "statuses": statuses(samples),
        "ok_p99_ms": ms([s.seconds for s in samples if s.status == 200], 99),
        "503_p50_ms": ms([s.seconds for s in refused], 50),
        "503_p99_ms": ms([s.seconds for s in refused], 99),
        "first_wave_requests": len(first_wave),
        "first_wave_503_after_timeout": len(slow_first),
        "503_without_retry_after": sum(1 for s in samples if s.status == 503 and not s.retry_after),
        "health_p99_ms": ms([s.seconds for s in probes], 99),
        "health_not_200": sum(1 for s in probes if s.status != 200),
    }
    return judge(
        "overload",
        t,
        figures,
        [
            (not others, f"{len(others)} answers neither 200 nor 503"),
            (figures["503_without_retry_after"] == 0, "503 without Retry-After"),
            (figures["503_p99_ms"] < 100, f"503 p99 {figures['503_p99_ms']} ms >= 100 ms"),
            (figures["health_p99_ms"] < 100, f"/health p99 {figures['health_p99_ms']} ms >= 100 ms"),
            (figures["health_not_200"] == 0, "/health not 200"),
        ],
    )


def sigterm(t: Target) -> Result:
    """SIGTERM with 10 requests in flight: all answered, exit 0, new connections refused."""
    proc = t.fresh({})
    results: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        status = wire.request(proc.url, "GET", "/hold?ms=1000", timeout=15.0).status
        with lock:
            results.append(status)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for thread in threads:
        thread.start()
    time.sleep(0.4)
    began = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.7)
    new = wire.exchange(proc.url, b"GET /json HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n", 2.0)
    for thread in threads:
        thread.join(20)
    try:
        code = proc.popen.wait(20)
    except subprocess.TimeoutExpired:
        code = None
    figures: dict[str, Any] = {
        "in_flight": 10,
        "answered_200": results.count(200),
        "statuses": {str(s): results.count(s) for s in set(results)},
        "exit_code": code,
        "exit_s": round(time.monotonic() - began, 2),
        "new_connection_after_0_7s": "refused"
        if "Refused" in new.error
        else (f"answered {new.status}" if new.status else new.error or "closed"),
    }
    return judge(
        "sigterm",
        t,
        figures,
        [
            (
                figures["answered_200"] == 10,
                f"{figures['answered_200']} of 10 in-flight requests answered 200",
            ),
            (code == 0, f"exit code {code}"),
            (new.status == 0, f"a new connection after SIGTERM was {figures['new_connection_after_0_7s']}"),
        ],
    )


def worker_killed(t: Target) -> Result:
    """multiproc: SIGKILL one worker under load: replaced, at most its in-flight requests failed."""
    if t.model != "multiproc":
        return Result("worker_killed", t.model, None, note="multiproc only")
    parent = psutil.Process(t.proc.pid)
    before = {c.pid for c in parent.children()}
    clients = 8
    load = Load(t.url, "/db", clients, 4.0).start()
    time.sleep(1.0)
    victim = sorted(before)[0]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    replaced = None
    while time.monotonic() - killed_at < 5.0:
        now = {c.pid for c in parent.children()}
        if len(now - before) >= 1 and victim not in now:
            replaced = round(time.monotonic() - killed_at, 3)
            break
        time.sleep(0.02)
    samples = load.join()
    failed = sum(1 for s in samples if s.status != 200)
    figures: dict[str, Any] = {
        "replaced_after_s": replaced,
        "requests": len(samples),
        "failed": failed,
        "statuses": statuses(samples),
        "clients": clients,
    }
    return judge(
        "worker_killed",
        t,
        figures,
        [
            (replaced is not None and replaced < 2.0, f"replaced after {replaced} s"),
            (failed <= clients, f"{failed} requests failed (at most its {clients} in flight may)"),
        ],
    )


def soak(t: Target, seconds: float) -> Result:
    """Half capacity for `seconds`: RSS and open fds flat after warm-up (the last third against
    the first third after it, within 10 % and 10 fds), every request answered 200."""
    load = Load(t.url, "/hold?ms=20", max(1, t.capacity // 2), seconds).start()
    samples: list[tuple[float, float, int]] = []
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        rss, fds = _tree_usage(t.proc.pid)
        samples.append((time.monotonic() - began, rss, fds))
        time.sleep(5.0)
    answered = load.join()
    warm = [s for s in samples if s[0] >= min(60.0, seconds / 4)]
    third = max(1, len(warm) // 3)
    first, last = warm[:third] or samples[:1], warm[-third:] or samples[-1:]

    def mean(rows: list[tuple[float, float, int]], i: int) -> float:
        return sum(r[i] for r in rows) / len(rows)

    figures: dict[str, Any] = {
        "seconds": seconds,
        "rss_first_mb": round(mean(first, 1), 1),
        "rss_last_mb": round(mean(last, 1), 1),
        "fds_first": round(mean(first, 2)),
        "fds_last": round(mean(last, 2)),
        "requests": len(answered),
        "statuses": statuses(answered),
        "p99_ms": ms([a.seconds for a in answered], 99),
    }
    not_200 = sum(1 for a in answered if a.status != 200)
    return judge(
        "soak",
        t,
        figures,
        [
            (figures["rss_last_mb"] <= figures["rss_first_mb"] * 1.1, "RSS grew more than 10 %"),
            (figures["fds_last"] <= figures["fds_first"] + 10, "open fds grew"),
            (bool(answered) and not_200 == 0, f"{not_200} of {len(answered)} requests not 200"),
        ],
    )


def _tree_usage(pid: int) -> tuple[float, int]:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20, sum(p.num_fds() for p in procs)
    except psutil.Error:
        return 0.0, 0


CASES: dict[str, Callable[[Target], Result]] = {
    "bad_input": bad_input,
    "idempotency_race": idempotency_race,
    "overload": overload,
    "sessions_killed": sessions_killed,
    "database_down": database_down,
    "database_blackhole": database_blackhole,
    "disconnects": disconnects,
    "slowloris": slowloris,
    "worker_killed": worker_killed,
    "sigterm": sigterm,
    "schemathesis": schemathesis,
}
