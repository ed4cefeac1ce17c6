"""The fault cases: each drives one server through one kind of trouble, bounded in time, and
returns its figures and a verdict. The criteria are the issue's; every number is measured here."""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psutil

from lab.faults import badinput, wire
from lab.faults.load import Load, Sample, ms, statuses
from lab.faults.proxy import FaultProxy
from lab.stack import database
from lab.stack.procs import ServerProcess
from servers.contract import UNANSWERED_GRACE

REPO = Path(__file__).resolve().parents[2]
# A cut session's request ends on the sweeper's next pass (sync servers, every 0.1 s), then answers.
BLACKHOLE_SLACK = 0.5


@dataclass
class Target:
    """One server under test, with what the cases need to hurt it."""

    model: str
    proc: ServerProcess
    proxy: FaultProxy
    database_url: str  # direct, not through the proxy
    app_name: str
    pool_size: int
    workers: int
    acquire_timeout: float
    request_timeout: float
    statement_timeout: float
    quick: bool
    fresh: Callable[[dict[str, str]], ServerProcess]  # a new server of this model (the suite stops it)

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def capacity(self) -> int:
        return self.pool_size * self.workers


@dataclass
class Result:
    case: str
    model: str
    passed: bool | None  # None: does not apply to this model
    figures: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0


def judge(
    case: str, t: Target, figures: dict[str, Any], checks: list[tuple[bool, str]], note: str = ""
) -> Result:
    failed = [text for ok, text in checks if not ok]
    return Result(case, t.model, not failed, figures, failed, note)


# --- database side ----------------------------------------------------------------------------


def _sessions(t: Target, where: str) -> int:
    conn = database.connect(t.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND {where}",
                (t.app_name,),
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def busy_sessions(t: Target) -> int:
    return _sessions(t, "state = 'active' AND query LIKE 'SELECT pg_sleep%%'")


def terminate_sessions(t: Target) -> int:
    conn = database.connect(t.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name IN (%s, %s) AND pid <> pg_backend_pid()",
                (t.app_name, f"{t.app_name}-ready"),  # the pool's sessions and the readiness check's
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _get(t: Target, target: str, timeout: float = 5.0) -> wire.Answer:
    return wire.request(t.url, "GET", target, timeout=timeout)


# --- the cases --------------------------------------------------------------------------------


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


def _recovery(samples: list[Sample], since: float) -> float | None:
    """Seconds from `since` to the end of the first 200 that started after it."""
    done = [s.start + s.seconds for s in samples if s.start >= since and s.status == 200]
    return round(min(done) - since, 3) if done else None


def database_down(t: Target) -> Result:
    """PostgreSQL unreachable for 3 s under load (the proxy refuses and resets, as a stopped
    server does): no 500, serving again within 1 s of its return."""
    load = Load(t.url, "/db", 8, 7.0).start()
    time.sleep(1.5)
    t.proxy.down()
    time.sleep(3.0)
    t.proxy.heal()
    back = time.monotonic()
    samples = load.join()
    during = [s for s in samples if back - 3.0 <= s.start < back]
    recovery = _recovery(samples, back)
    figures: dict[str, Any] = {
        "requests": len(samples),
        "statuses": statuses(samples),
        "statuses_while_down": statuses(during),
        "500s": sum(1 for s in samples if s.status == 500),
        "recovery_s": recovery,
        "max_ms": ms([s.seconds for s in samples], 100),
    }
    return judge(
        "database_down",
        t,
        figures,
        [
            (figures["500s"] == 0, f"{figures['500s']} answers 500"),
            (recovery is not None and recovery < 1.0, f"serving again after {recovery} s (want < 1 s)"),
            (0 not in [s.status for s in during], "requests without an answer while the database was down"),
        ],
    )


def sessions_killed(t: Target) -> Result:
    """pg_terminate_backend on every session of the server, under load and on an idle pool:
    no 500, and no failed read (reads retry once on a new session)."""
    load = Load(t.url, "/db", 8, 3.0).start()
    time.sleep(1.0)
    killed_busy = terminate_sessions(t)
    samples = load.join()
    # The idle pool: fill it, let it rest, end every session, then read again.
    Load(t.url, "/queries?queries=5", 2 * t.capacity, 0.8).run()
    time.sleep(0.3)
    killed_idle = terminate_sessions(t)
    time.sleep(0.2)
    after = [_get(t, "/db").status for _ in range(2 * t.capacity)]
    failed_busy = sum(1 for s in samples if s.status != 200)
    figures: dict[str, Any] = {
        "killed_under_load": killed_busy,
        "requests_under_load": len(samples),
        "statuses_under_load": statuses(samples),
        "failed_under_load": failed_busy,
        "500s": sum(1 for s in samples if s.status == 500) + after.count(500),
        "killed_idle": killed_idle,
        "failed_after_idle_kill": sum(1 for s in after if s != 200),
    }
    return judge(
        "sessions_killed",
        t,
        figures,
        [
            (figures["500s"] == 0, f"{figures['500s']} answers 500"),
            (failed_busy <= t.capacity, f"{failed_busy} failed under load (want at most one per connection)"),
            (failed_busy == 0, f"{failed_busy} reads failed under load although reads retry once"),
            (
                figures["failed_after_idle_kill"] == 0,
                f"{figures['failed_after_idle_kill']} failed after the idle kill",
            ),
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


class SlowLoris:
    """`count` sockets that send a request head one byte every `every` seconds, never finishing."""

    def __init__(self, url: str, count: int, every: float = 0.5) -> None:
        self.host, self.port = wire.split_url(url)
        self.count, self.every = count, every
        self.opened: dict[socket.socket, float] = {}
        self.closed_after: list[float] = []  # seconds each socket lived until the server closed it
        self.answers: list[bytes] = []  # what the server sent before closing

    def run(self, seconds: float) -> None:
        sel = selectors.DefaultSelector()
        for _ in range(self.count):
            try:
                sock = socket.create_connection((self.host, self.port), timeout=2.0)
            except OSError:
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.send(b"GET /json HTTP/1.1\r\nHost: lab\r\n")
            self.opened[sock] = time.monotonic()
            sel.register(sock, selectors.EVENT_READ)
        until = time.monotonic() + seconds
        next_byte = time.monotonic() + self.every
        while self.opened and time.monotonic() < until:
            for key, _ in sel.select(timeout=max(0.0, min(next_byte, until) - time.monotonic())):
                sock = cast(socket.socket, key.fileobj)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    self.answers.append(data[:12])
                    continue
                self._gone(sel, sock)
            if time.monotonic() >= next_byte:
                next_byte += self.every
                for sock in list(self.opened):
                    try:
                        sock.send(b"X")
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._gone(sel, sock)
        for sock in list(self.opened):
            sel.unregister(sock)
            sock.close()
        sel.close()

    def _gone(self, sel: selectors.BaseSelector, sock: socket.socket) -> None:
        self.closed_after.append(time.monotonic() - self.opened.pop(sock))
        sel.unregister(sock)
        sock.close()


def _fresh_requests(url: str, seconds: float, pause: float = 0.02) -> list[tuple[float, int]]:
    """(seconds, status) of GET /json, each on a new connection, for `seconds`."""
    out = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        answer = wire.request(url, "GET", "/json", timeout=5.0)
        out.append((answer.seconds, answer.status))
        time.sleep(pause)
    return out


def slowloris(t: Target) -> Result:
    """Slow-loris sockets at 2x the connection cap: normal clients keep their p99 (under 2x the
    baseline, or baseline + 10 ms on this noisy machine), the slow sockets are closed by the
    receive deadline."""
    cap = 50 if t.quick else 100
    proc = t.fresh({"LAB_MAX_CONNECTIONS": str(cap)})
    baseline = _fresh_requests(proc.url, 1.5)
    attack = SlowLoris(proc.url, 2 * cap)
    runner = threading.Thread(target=attack.run, args=(t.request_timeout + 3.0,))
    runner.start()
    time.sleep(0.3)
    during = _fresh_requests(proc.url, t.request_timeout + 2.0)
    runner.join(t.request_timeout + 15)
    base_p99 = ms([s for s, _ in baseline], 99)
    p99 = ms([s for s, _ in during], 99)
    closed = len(attack.closed_after)
    late = [s for s in attack.closed_after if s > t.request_timeout + 1.0]
    figures: dict[str, Any] = {
        "connection_cap": cap,
        "slow_sockets": 2 * cap,
        "baseline_p99_ms": base_p99,
        "p99_ms": p99,
        "normal_requests": len(during),
        "normal_not_200": sum(1 for _, st in during if st != 200),
        "slow_closed": closed,
        "slow_closed_late": len(late),
        "slow_max_open_s": round(max(attack.closed_after, default=0.0), 2),
        "slow_still_open_at_end": 2 * cap - closed,
        "request_timeout_s": t.request_timeout,
    }
    limit = max(2 * base_p99, base_p99 + 10)
    return judge(
        "slowloris",
        t,
        figures,
        [
            (p99 <= limit, f"normal p99 {p99} ms > {limit:.1f} ms"),
            (figures["normal_not_200"] == 0, f"{figures['normal_not_200']} normal requests not 200"),
            (
                figures["slow_still_open_at_end"] == 0,
                f"{figures['slow_still_open_at_end']} slow sockets never closed",
            ),
            (not late, f"{len(late)} slow sockets closed after the deadline + 1 s"),
        ],
    )


def disconnects(t: Target) -> Result:
    """Clients give up after 50 ms on /hold?ms=1000: the database work stops within 200 ms on
    asyncio, gevent and multiproc; threaded cancels held queries too (queued waits still run)."""
    clients = 2 * t.capacity
    socks = []
    for _ in range(clients):
        sock = socket.create_connection(wire.split_url(t.url), timeout=2.0)
        sock.sendall(b"GET /hold?ms=1000 HTTP/1.1\r\nHost: lab\r\n\r\n")
        socks.append(sock)
    time.sleep(0.05)
    for sock in socks:
        sock.close()
    left = time.monotonic()
    idle_after = None
    peak = 0
    while time.monotonic() - left < 3.0:
        busy = busy_sessions(t)
        peak = max(peak, busy)
        if busy == 0:
            idle_after = time.monotonic() - left
            break
        time.sleep(0.02)
    figures: dict[str, Any] = {
        "clients": clients,
        "busy_sessions_peak": peak,
        "database_idle_after_ms": None if idle_after is None else round(idle_after * 1000),
    }
    must = t.model != "threaded"
    ok = idle_after is not None and idle_after < 0.2
    return judge(
        "disconnects",
        t,
        figures,
        [
            (
                ok or not must,
                f"database busy {figures['database_idle_after_ms'] or '>3000'} ms after the clients left",
            ),
        ],
        note=""
        if must
        else "threaded: reported, not judged (a thread waiting in the pool queue cannot be "
        "interrupted; held queries are cancelled)",
    )


def bad_input(t: Target) -> Result:
    """The bad-input table: 0 answers 5xx, each kind the status the table expects."""
    got = {kind.name: badinput.run_kind(t.url, kind).status for kind in badinput.KINDS}
    first, conflict = badinput.idempotency_conflict(t.url, f"faults-{uuid.uuid4()}")
    got["idempotency_key_other_order"] = conflict
    expected = {kind.name: kind.expect for kind in badinput.KINDS} | {"idempotency_key_other_order": 422}
    wrong = {k: v for k, v in got.items() if v != expected[k]}
    figures: dict[str, Any] = {
        "kinds": len(got),
        "5xx": sum(1 for v in got.values() if v >= 500),
        "no_answer": sum(1 for v in got.values() if v == 0),
        "unexpected": wrong,
        "statuses": got,
    }
    return judge(
        "bad_input",
        t,
        figures,
        [
            (figures["5xx"] == 0, f"{figures['5xx']} kinds answered 5xx"),
            (not wrong, f"unexpected statuses: {wrong}"),
            (first == 201, f"the first order answered {first}"),
        ],
    )


def idempotency_race(t: Target) -> Result:
    """20 concurrent POSTs with one Idempotency-Key: exactly one row, one 201 and nineteen 200."""
    key = f"faults-race-{uuid.uuid4()}"
    body = json.dumps({"item": f"race {key}", "qty": 1}).encode()
    barrier = threading.Barrier(20, timeout=10)
    out: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        barrier.wait()
        status = wire.request(
            t.url, "POST", "/orders", body, {"Content-Type": "application/json", "Idempotency-Key": key}
        ).status
        with lock:
            out.append(status)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    conn = database.connect(t.database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM orders WHERE idempotency_key = %s", (key,))
            rows = int(cur.fetchone()[0])
    finally:
        conn.close()
    figures: dict[str, Any] = {
        "posts": 20,
        "rows": rows,
        "201": out.count(201),
        "200": out.count(200),
        "other": len(out) - out.count(201) - out.count(200),
    }
    return judge(
        "idempotency_race",
        t,
        figures,
        [
            (rows == 1, f"{rows} rows"),
            (out.count(201) == 1 and out.count(200) == 19, f"statuses {figures}"),
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


def database_blackhole(t: Target) -> Result:
    """The proxy swallows every byte for longer than a statement may wait: /json keeps answering,
    /ready says 503 within its timeout, and every /db request ends, with 200 or 503 and never 500,
    within acquire timeout + statement timeout + the servers' grace (then they cut the session);
    /db serves again within 1 s of the heal."""
    limit = t.acquire_timeout + t.statement_timeout + UNANSWERED_GRACE
    outage = limit + 1.5
    db = Load(t.url, "/db", 4, outage + 2.5, timeout=limit + 5.0).start()
    fast = Load(t.url, "/json", 1, outage + 2.5, pause=0.05).start()
    time.sleep(0.5)
    t.proxy.blackhole()
    time.sleep(0.3)
    ready = _get(t, "/ready")
    time.sleep(outage - 0.3)
    t.proxy.heal()
    t.proxy.reset()  # sessions nobody cut are stuck for good: end them, as a restarted proxy would
    healed = time.monotonic()
    fast_samples, db_samples = fast.join(), db.join()
    allowed = limit + BLACKHOLE_SLACK
    over = [s for s in db_samples if s.seconds > allowed]
    figures: dict[str, Any] = {
        "outage_s": round(outage, 1),
        "json_p99_ms": ms([s.seconds for s in fast_samples], 99),
        "json_not_200": sum(1 for s in fast_samples if s.status != 200),
        "ready_status": ready.status,
        "ready_ms": round(ready.seconds * 1000),
        "db_statuses": statuses(db_samples),
        "db_max_ms": ms([s.seconds for s in db_samples], 100),
        "db_limit_ms": round(allowed * 1000),
        "db_over_limit": len(over),
        "db_recovery_s": _recovery(db_samples, healed),
    }
    return judge(
        "database_blackhole",
        t,
        figures,
        [
            (figures["json_not_200"] == 0 and figures["json_p99_ms"] < 100, "/json suffered"),
            (
                ready.status == 503 and ready.seconds < 1.5,
                f"/ready answered {ready.status} in {figures['ready_ms']} ms",
            ),
            (
                not [s for s in db_samples if s.status not in (200, 503)],
                f"/db answered {figures['db_statuses']}, not only 200 and 503",
            ),
            (not over, f"{len(over)} /db requests took over {figures['db_limit_ms']} ms"),
            (
                figures["db_recovery_s"] is not None and figures["db_recovery_s"] < 1.0,
                f"/db not serving 1 s after the heal (recovery {figures['db_recovery_s']} s)",
            ),
        ],
    )


def schemathesis(t: Target) -> Result:
    """schemathesis against openapi.yaml, time-boxed: 0 failures, 0 errors (in what it ran). On a
    server with the default statement timeout: the suite's short one would turn the contract's
    longest /hold into a 503, which schemathesis counts as a server error."""
    seconds = 45 if t.quick else 150
    server = t.fresh({"LAB_STATEMENT_TIMEOUT": "30"})
    exe = Path(sys.executable).with_name("schemathesis")
    if not exe.exists():
        return Result(
            "schemathesis",
            t.model,
            False,
            failed=["schemathesis is not installed: run `make venv` (it is in the dev extras)"],
        )
    cmd = [
        str(exe),
        "run",
        str(REPO / "openapi.yaml"),
        "--url",
        server.url,
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "10" if t.quick else "100",
        "--workers",
        "2",
        "--no-color",
        "--request-timeout",
        "15",
        "--seed",
        "1",
    ]  # /hold and /io may take 10 s by contract
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds, cwd=REPO)
        out, code, boxed = done.stdout + done.stderr, done.returncode, False
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or b""
        out, code, boxed = raw.decode() if isinstance(raw, bytes) else raw, None, True
    counts = re.search(r"(\d+) generated, (\d+) passed(?:, (\d+) failed)?(?:, (\d+) errored)?", out)
    failures = "FAILURES" in out or "ERRORS" in out or (code not in (0, None))
    figures: dict[str, Any] = {
        "exit_code": code,
        "time_boxed_at_s": seconds if boxed else None,
        "generated": int(counts.group(1)) if counts else None,
        "failed": int(counts.group(3) or 0) if counts else None,
        "errored": int(counts.group(4) or 0) if counts else None,
    }
    return judge(
        "schemathesis",
        t,
        figures,
        [
            (
                not failures,
                "schemathesis reported failures or errors: "
                + " ".join(out.partition("ERRORS")[2].split("SUMMARY")[0].split())[:300],
            ),
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
