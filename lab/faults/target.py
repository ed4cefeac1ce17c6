"""What every fault case shares: the server under test, a case's result and verdict, its database sessions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.faults import wire
from lab.faults.proxy import FaultProxy
from lab.stack import database
from lab.stack.procs import ServerProcess


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


def get(t: Target, target: str, timeout: float = 5.0) -> wire.Answer:
    return wire.request(t.url, "GET", target, timeout=timeout)
