"""What a load run reads of a server under test (tree, RSS, throttling, sessions, /config); Locust's line."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import psutil
import psycopg2

from lab.fmt import fmt_seconds
from lab.load.locust_job import LocustJob, generator_now
from lab.stack import database, procs


def live_line(job: LocustJob, elapsed: float) -> str:
    """What runs now, from the lab's own per-second records: phase, users (or offered rate), the newest
    whole second's requests/s, failures; and the Locust process's CPU."""
    p = job.progress()
    gen = generator_now(job)
    cpu = f", Locust CPU {gen:.0f}%" if gen is not None else ""
    if not p:
        return f"starting {fmt_seconds(elapsed):>6}{cpu}"
    phase = {"warmup": "warm-up", "measure": "measuring", "full": "full-core", "tail": "stopping"}.get(
        str(p["phase"]), "starting")
    load = f"offered {p['offered_rps']:,.0f}/s" if p.get("offered_rps") else f"{p['users']} users"
    if p.get("offered_rps") and p.get("step"):  # steps are added while the last met the SLO
        added = f", {p['steps_added']} added" if p.get("steps_added") else ""
        load += f" (step {min(p['step'], p['steps'])} of {p['steps']}{added})"
    late = f", {p['late']} late, {p['dropped']} dropped" if p.get("offered_rps") else ""
    return (f"{phase:<9} {fmt_seconds(elapsed):>6} | {load}, {p['rps']:,.0f} rps, "
            f"{p['failures']} failures{late}{cpu}")


def process_tree(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
        return [root.pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.Error:
        return []


def tree_rss(pid: int) -> int | None:
    """The RSS of a process and its descendants, in bytes."""
    total = 0
    for child in process_tree(pid):
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(child).memory_info().rss
    return total or None


def add_throttling(total: dict[str, Any] | None, stat: dict[str, Any]) -> dict[str, Any]:
    """One budget's stat added to the scenario's: the counters summed over its processes."""
    if not total or "periods" not in total:
        return dict(stat)
    out = dict(stat)
    for key in ("periods", "throttled_periods", "throttled_seconds"):
        if isinstance(total.get(key), int | float) and isinstance(stat.get(key), int | float):
            out[key] = round(total[key] + stat[key], 6)
    return out


def throttle_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The kernel's throttling counters over one repetition."""
    out = {k: after.get(k) for k in ("cores", "period_us", "quota_us", "cgroup_version")}
    for key in ("periods", "throttled_periods", "throttled_seconds"):
        a, b = before.get(key), after.get(key)
        out[key] = round(b - a, 6) if isinstance(a, int | float) and isinstance(b, int | float) else None
    return out


def count_sessions(database_url: str, app_name: str) -> int | None:
    try:
        conn = database.connect(database_url)
    except psycopg2.Error:  # a count we cannot take is recorded as unknown
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app_name,))
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def server_config(url: str) -> dict[str, Any] | None:
    try:
        status, body = procs.get(f"{url}/config", timeout=2.0)
        data = json.loads(body) if status == 200 else None
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None
