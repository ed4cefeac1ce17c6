"""Experiment 6: what a receive deadline, a connection cap and a cancellation on disconnect cost a
thread, a greenlet and a coroutine.

Each server runs /json under wrk at -c64 (pinned apart from wrk, as `make bench` measures), with all
its guarantees on, with each of the three switched off alone (LAB_ABLATE, lab only), and with the
three off together; its CPU per request is read over the middle of each run. The three together
are what a thread-per-connection server does per connection that an event loop gets from its
loop: the cost is all on minus the three off, with its 95 % interval from the repetitions
(lab/bench/ablation.py, which `make bench --ablation` also uses for every guarantee).
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.bench import ablation
from lab.claims.plan import Plan

SERVERS = ("threaded", "gevent", "asyncio")
THREE = "-deadline,cap,cancel"  # the three together
CONFIGS_EACH = {ablation.ALL_ON: "", "-deadline": "deadline", "-cap": "cap", "-cancel": "cancel",
                THREE: "deadline,cap,cancel"}
PATH = "/json"


def run(plan: Plan, database_url: str, log_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise RuntimeError("needs wrk, the load generator of make bench: `apt-get install wrk`")
    models = [m for m in SERVERS if m in plan.servers]
    configs = CONFIGS_EACH if plan.guarantee_each else {k: CONFIGS_EACH[k] for k in (ablation.ALL_ON, THREE)}
    two = (os.cpu_count() or 1) >= 2
    server_cpus, load_cpus = ([0], [1]) if two else (None, None)
    args = argparse.Namespace(reps=plan.reps, duration=plan.guarantee_seconds, connections=64, head="locust",
                              think_ms=0, pool_size=10)
    samples = ablation.run(models, database_url, args, log_dir / "guarantees", server_cpus, load_cpus,
                           configs, (PATH,), references=False, say=say)
    servers = {m: ablation.figures(samples[m], PATH) for m in models}
    for m, f in servers.items():
        c = f["costs"].get(THREE)
        if c:
            say(f"guarantees {m}: deadline + cap + cancel cost {c['us']:+.1f} µs per /json request "
                f"[{c['low']:+.1f}, {c['high']:+.1f}] of {f['cpu_us'][ablation.ALL_ON]:.1f}")
    return {"servers": servers, "path": PATH, "seconds": plan.guarantee_seconds, "reps": plan.reps,
            "connections": args.connections, "server_cpus": server_cpus, "load_cpus": load_cpus}
