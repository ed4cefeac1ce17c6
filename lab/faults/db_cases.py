"""The fault cases on the database side: PostgreSQL down, its sessions killed, its answers swallowed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab.faults.load import Load, Sample, ms, statuses
from lab.faults.target import Result, Target, get, judge, terminate_sessions
from servers.contract import UNANSWERED_GRACE

REPO = Path(__file__).resolve().parents[2]
# A cut session's request ends on the sweeper's next pass (sync servers, every 0.1 s), then answers.
BLACKHOLE_SLACK = 0.5


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
    after = [get(t, "/db").status for _ in range(2 * t.capacity)]
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
    ready = get(t, "/ready")
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
