"""The database connections a sweep implies, against PostgreSQL's max_connections: read, add up, refuse.

A value implies pool size per process x processes per server x servers running at once, plus the
lab's own sessions, plus the sessions other programs already hold.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from lab.fmt import fmt_value
from lab.stack import database
from lab.tune.plan import Sweep, TuneError, processes, server_config

LAB_SESSIONS = 2  # the sampler's session, and one short-lived check (sessions count, orders check)


@dataclass(frozen=True)
class Budget:
    """PostgreSQL's connection limit and what is taken already."""

    max_connections: int
    reserved: int = 0  # slots the servers' role may not use (0 for a superuser)
    others: int = 0  # client sessions other programs hold now
    lab_sessions: int = LAB_SESSIONS

    @property
    def limit(self) -> int:
        return self.max_connections - self.reserved


@dataclass(frozen=True)
class Demand:
    """One value's database connections for one server: pool per process x processes."""

    server: str
    pool_size: int
    processes: int

    @property
    def connections(self) -> int:
        return self.pool_size * self.processes


@dataclass(frozen=True)
class ConnectionTotal:
    value: float
    demands: tuple[Demand, ...]
    concurrent: int  # servers running at once
    budget: Budget
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def servers_part(self) -> int:
        # The `concurrent` largest demands run together (the sweep runs servers one at a time: 1).
        sizes = sorted((d.connections for d in self.demands), reverse=True)
        return sum(sizes[: max(1, self.concurrent)])

    @property
    def total(self) -> int:
        return self.servers_part + self.budget.lab_sessions + self.budget.others

    @property
    def fits(self) -> bool:
        return self.total <= self.budget.limit

    def describe(self, param: str) -> str:
        top = max(self.demands, key=lambda d: d.connections)
        per = (f"{top.pool_size} per process x {top.processes} processes" if top.processes > 1
               else f"{top.pool_size} per process x 1 process")
        at_once = "" if self.concurrent <= 1 else f" x {self.concurrent} servers at once"
        reserved = (f" ({self.budget.reserved} of {self.budget.max_connections} reserved for superusers)"
                    if self.budget.reserved else "")
        noun = "connection" if self.servers_part == 1 else "connections"
        return (f"{param}={fmt_value(self.value)} implies {self.servers_part} database {noun} for the "
                f"{top.server} server ({per}{at_once}) + {self.budget.lab_sessions} lab sessions + "
                f"{self.budget.others} other sessions open now = {self.total} of max_connections "
                f"{self.budget.max_connections}{reserved} ({self.total / max(1, self.budget.limit):.0%})")


def connection_total(value: float, demands: Sequence[Demand], budget: Budget,
                     concurrent: int = 1) -> ConnectionTotal:
    if not demands:
        raise ValueError("connection_total needs at least one server's demand")
    return ConnectionTotal(value, tuple(demands), concurrent, budget)


def largest_fitting_pool(processes: int, budget: Budget, concurrent: int = 1) -> int:
    """The largest pool size per process that still fits under the limit (0 when none does)."""
    room = budget.limit - budget.lab_sessions - budget.others
    return max(0, room // max(1, processes * max(1, concurrent)))


def read_budget(url: str) -> Budget:
    """max_connections, the slots the servers' role may not use, and client sessions open now."""
    conn = database.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('max_connections')::int, "
                        "current_setting('superuser_reserved_connections')::int, "
                        "coalesce(current_setting('reserved_connections', true), '0')::int, "
                        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
                        "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                        " AND pid <> pg_backend_pid())")
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        raise TuneError("PostgreSQL returned no settings for max_connections")
    max_conn, su_reserved, reserved, superuser, others = row
    return Budget(max_connections=int(max_conn),
                  reserved=0 if superuser else int(su_reserved) + int(reserved), others=int(others))


def demands(sweep: Sweep, value: float) -> list[Demand]:
    env = {**sweep.base.server_env, sweep.param.env_var: sweep.env_text(value)}
    out = []
    for model in sweep.servers:
        cfg = server_config(model, env)
        out.append(Demand(model, cfg.pool_size, processes(model, cfg, env, sweep.base.server_cpus)))
    return out


def connection_totals(sweep: Sweep, budget: Budget) -> list[ConnectionTotal]:
    # The runner starts one server at a time and stops it before the next: one server runs at once.
    return [connection_total(v, demands(sweep, v), budget, concurrent=1) for v in sweep.values]


def check_connections(sweep: Sweep, budget: Budget) -> tuple[list[str], list[str]]:
    """(lines showing each value's connections, the refusal message when some exceed the limit, else [])."""
    totals = connection_totals(sweep, budget)
    shown = [f"database connections: max_connections {budget.max_connections}"
             + (f", {budget.reserved} reserved for superusers" if budget.reserved else "")
             + f"; {budget.others} client sessions open now, {budget.lab_sessions} for the lab during "
               "the sweep"]
    shown += [f"  {'OK  ' if t.fits else 'OVER'} {t.describe(sweep.param.name)}" for t in totals]
    over = [t for t in totals if not t.fits]
    if not over:
        return shown, []
    worst = max(over, key=lambda t: t.total)
    need = int(math.ceil(worst.total * 1.2 / 50.0) * 50) + worst.budget.reserved
    procs_per = max(d.processes for d in worst.demands)
    lines = [f"{', '.join(f'{sweep.param.name}={fmt_value(t.value)}' for t in over)} would need up to "
             f"{worst.total} database connections, more than PostgreSQL allows ({budget.limit})."]
    if sweep.param.name == "pool_size":
        fit = largest_fitting_pool(procs_per, budget)
        lines.append(f"Lower VALUES (pool_size up to {fit} fits now), or")
    else:
        lines.append("Lower VALUES, or")
    if os.environ.get("LAB_DATABASE_URL"):
        lines.append(f"raise max_connections to at least {need} on the server of LAB_DATABASE_URL and "
                     "restart it, or")
    else:
        lines.append(f"raise LAB_PG_MAX_CONNECTIONS (e.g. LAB_PG_MAX_CONNECTIONS={need}) and restart the "
                     "embedded PostgreSQL: `make down` (or python -m lab database down), then run the tune "
                     f"with LAB_PG_MAX_CONNECTIONS={need} set (it starts PostgreSQL again), or")
    if budget.others:
        lines.append(f"stop the programs holding the {budget.others} other sessions (e.g. `make down`), or")
    lines.append("pass --force (FORCE=1) to sweep anyway: the servers will get `too many clients` errors.")
    return shown, lines
