"""Experiment 5: one blocking call among other clients' /json requests.

Each server runs with LAB_ALLOW_BLOCKING=1 (off by default), which enables GET /block?ms=N: a
blocking sleep in the OS (unpatched under gevent, inside the coroutine under asyncio). Paced
clients call /json for a while alone, then again while one more client calls /block
back-to-back, so one blocking request is always in flight. Their p99 says whether the
blocking call froze everyone (one event loop, one gevent hub) or only its own thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.claims import client, servers, stats
from lab.claims.plan import BLOCKING_SERVERS, Plan

PACE = 0.01  # seconds each /json client waits between its requests


def _phase(url: str, plan: Plan, blocking: bool) -> dict[str, Any]:
    stop = threading.Event()
    blocked: list[float] = []

    def blocker() -> None:
        out = client.paced(
            url,
            f"/block?ms={plan.block_ms}",
            1,
            plan.block_seconds + 0.1,
            0.0,
            timeout=plan.block_ms / 1000 + 10,
        )
        if out["error_count"]:
            raise RuntimeError(f"/block failed: {out['errors']}")
        blocked.append(out["requests"])
        stop.set()

    thread = threading.Thread(target=blocker, daemon=True) if blocking else None
    if thread:
        thread.start()
        time.sleep(0.05)  # the first blocking request is in flight
    out = client.paced(url, "/json", plan.block_clients, plan.block_seconds, PACE)
    if thread:
        thread.join(plan.block_seconds + plan.block_ms / 1000 + 15)
        out["blocking_requests"] = blocked[0] if blocked else 0
    return out


def run(plan: Plan, database_url: str, log_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for model in [m for m in BLOCKING_SERVERS if m in plan.servers]:
        with servers.running(
            model, database_url, log_dir / f"blocking-{model}", {"LAB_ALLOW_BLOCKING": "1"}
        ) as proc:
            client.timed_gets(proc.url, "/json", 20, 2.0, 5.0)  # warm up
            phases: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
            for _ in range(plan.reps):  # interleaved
                phases["without"].append(_phase(proc.url, plan, blocking=False))
                phases["with"].append(_phase(proc.url, plan, blocking=True))
        row: dict[str, Any] = {}
        for name, reps in phases.items():
            errors = sum(r["error_count"] for r in reps)
            row[name] = {
                key: stats.summary([r[key] for r in reps if r[key] is not None])
                for key in ("p50_ms", "p99_ms", "max_ms", "rps")
            }
            row[name]["errors"] = errors
        row["p99_ratio"] = (
            (row["with"]["p99_ms"]["median"] or 0) / row["without"]["p99_ms"]["median"]
            if row["without"]["p99_ms"]["median"]
            else None
        )
        results[model] = row
        say(
            f"blocking {model}: /json p99 {stats.fmt_summary(row['without']['p99_ms'], 'ms')} alone, "
            f"{stats.fmt_summary(row['with']['p99_ms'], 'ms')} beside a blocking /block?ms={plan.block_ms}"
        )
    return {
        "servers": results,
        "block_ms": plan.block_ms,
        "clients": plan.block_clients,
        "pace_ms": PACE * 1000,
        "phase_seconds": plan.block_seconds,
    }
