"""The fault cases of clients: slow or vanishing ones, bad input, racing retries, a contract fuzzer."""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

from lab.faults import badinput, wire
from lab.faults.load import ms
from lab.faults.target import Result, Target, busy_sessions, judge
from lab.stack import database

REPO = Path(__file__).resolve().parents[2]


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
