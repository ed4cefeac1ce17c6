"""Experiment 4: the GIL. CPU-bound work in threads against processes, in servers and bare loops.

- `/cpu` on threaded with 1 and 2 concurrent clients, on multiproc with 1 and 2 workers (2 clients);
- the same loop, sequentially, in this process (no HTTP);
- the loop in 1, 2 and 4 threads against 1, 2 and 4 processes (lab/claims/cpuloop.py), and in
  threads on a free-threaded interpreter when one is given (LAB_FT_PYTHON) or on PATH.
Speed-ups are throughput over the one-thread (one-client, one-worker) figure; repetitions are
interleaved so drift on a shared machine hits every variant alike.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.claims import client, servers, stats, worker
from lab.claims.plan import Plan
from servers.contract import cpu_work

FT_NAMES = ("python3.14t", "python3.13t")
FT_HOWTO = (
    "none found: set LAB_FT_PYTHON (or --ft-python) to a free-threaded CPython 3.13t/3.14t, "
    "e.g. `uv python install 3.13t` then LAB_FT_PYTHON=$(uv python find 3.13t), or a "
    "python3.13-nogil package; the thread loop then runs there too"
)
WORKERS = (1, 2, 4)


def find_free_threaded(given: str) -> tuple[str | None, str]:
    """(interpreter, what was found): LAB_FT_PYTHON first, then python3.14t/3.13t on PATH.

    An interpreter counts only if sys._is_gil_enabled() is False when it runs."""
    candidates = [given] if given else [p for p in (shutil.which(n) for n in FT_NAMES) if p]
    if not candidates:
        return None, FT_HOWTO
    path = candidates[0]
    probe = "import sys; print(sys.version.split()[0], getattr(sys, '_is_gil_enabled', lambda: True)())"
    try:
        done = subprocess.run([path, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{path} does not run ({exc}); {FT_HOWTO}"
    words = done.stdout.split()
    if done.returncode != 0 or len(words) != 2:
        return None, f"{path} failed: {done.stderr.strip()[-300:]}; {FT_HOWTO}"
    if words[1] != "False":
        return None, (
            f"{path} (Python {words[0]}) runs with the GIL enabled "
            f"(sys._is_gil_enabled() is not False); {FT_HOWTO}"
        )
    return path, f"{path}: Python {words[0]}, GIL disabled"


def sequential(n: int, seconds: float) -> float:
    """Calls of the /cpu loop per second, one after another in this process."""
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        cpu_work(n)
        calls += 1
    return calls / (time.perf_counter() - start)


def _cpu_rps(url: str, plan: Plan, clients: int) -> float:
    out = client.paced(url, f"/cpu?n={plan.cpu_n}", clients, plan.gil_seconds, 0.0, timeout=30.0)
    if out["error_count"]:
        raise RuntimeError(f"/cpu failed: {out['errors']}")
    return float(out["rps"])


def served(plan: Plan, database_url: str, log_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """/cpu requests per second: threaded with 1 and 2 clients, multiproc with 1 and 2 workers."""
    reps: dict[str, list[float]] = {
        k: []
        for k in (
            "sequential",
            "threaded-1-client",
            "threaded-2-clients",
            "multiproc-1-worker",
            "multiproc-2-workers",
        )
    }
    with (
        servers.running("threaded", database_url, log_dir / "gil-threaded") as th,
        servers.running("multiproc", database_url, log_dir / "gil-mp1", {"LAB_WORKERS": "1"}) as mp1,
        servers.running("multiproc", database_url, log_dir / "gil-mp2", {"LAB_WORKERS": "2"}) as mp2,
    ):
        for url in (th.url, mp1.url, mp2.url):  # warm-up
            client.timed_gets(url, f"/cpu?n={plan.cpu_n}", 3, 30.0, 10.0)
        for _ in range(plan.reps):
            reps["sequential"].append(sequential(plan.cpu_n, plan.gil_seconds))
            reps["threaded-1-client"].append(_cpu_rps(th.url, plan, 1))
            reps["threaded-2-clients"].append(_cpu_rps(th.url, plan, 2))
            reps["multiproc-1-worker"].append(_cpu_rps(mp1.url, plan, 2))
            reps["multiproc-2-workers"].append(_cpu_rps(mp2.url, plan, 2))
    out = {k: stats.summary(v) for k, v in reps.items()}
    for k, s in out.items():
        say(f"gil /cpu {k}: {stats.fmt_summary(s, 'req/s')}")
    return {"rps": out, "reps": reps}


def loops(plan: Plan, ft_python: str | None, say: Callable[[str], None]) -> dict[str, Any]:
    """Work units per second of the loop in k threads and k processes (and free-threaded threads)."""
    import sys

    variants = [
        (f"{mode}-{k}", sys.executable, mode, k) for mode in ("threads", "processes") for k in WORKERS
    ]
    if ft_python:
        variants += [(f"ft-threads-{k}", ft_python, "threads", k) for k in WORKERS]
    reps: dict[str, list[float]] = {name: [] for name, *_ in variants}
    cores: dict[str, list[float]] = {name: [] for name, *_ in variants}
    gil_seen: dict[str, bool] = {}
    for _ in range(plan.reps):
        for name, python, mode, k in variants:
            out = worker.run(
                "lab.claims.cpuloop",
                [mode, str(k), str(plan.loop_units), str(plan.cpu_n)],
                timeout=300,
                python=python,
                script=True,
            )
            reps[name].append(out["units_per_second"])
            cores[name].append(out["cores_used"])
            gil_seen[name] = out["gil"]
    per = {name: stats.summary(v) for name, v in reps.items()}
    # Speed-up within each repetition (its variants ran back to back), then the median over them.
    base = reps["threads-1"]
    speedup = {name: stats.summary([x / b for x, b in zip(v, base, strict=True)]) for name, v in reps.items()}
    ft_base = reps.get("ft-threads-1")
    ft_speedup = (
        {
            name: stats.summary([x / b for x, b in zip(v, ft_base, strict=True)])["median"]
            for name, v in reps.items()
            if name.startswith("ft-")
        }
        if ft_base
        else {}
    )
    for name in per:
        say(
            f"gil loop {name}: {stats.fmt_summary(per[name], 'units/s')}, speed-up vs one thread "
            f"{speedup[name]['median']:.2f}x, cores used {stats.summary(cores[name])['median']:.2f}"
        )
    return {
        "units_per_second": per,
        "speedup": speedup,
        "ft_speedup": ft_speedup,
        "gil": gil_seen,
        "reps": reps,
        "cores_used": {name: stats.summary(v) for name, v in cores.items()},
    }


def run(plan: Plan, database_url: str, log_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    ft, ft_note = find_free_threaded(plan.ft_python)
    say(f"gil: free-threaded Python: {ft_note}")
    out: dict[str, Any] = {
        "cpu_n": plan.cpu_n,
        "loop_units": plan.loop_units,
        "free_threaded": ft,
        "free_threaded_note": ft_note,
        "cpus": servers.usable_cpus(),
    }
    out["served"] = served(plan, database_url, log_dir, say)
    rps = out["served"]["rps"]
    out["served_speedup"] = {
        "threaded 2 clients vs 1": rps["threaded-2-clients"]["median"] / rps["threaded-1-client"]["median"],
        "multiproc 2 workers vs 1": rps["multiproc-2-workers"]["median"]
        / rps["multiproc-1-worker"]["median"],
    }
    out["loops"] = loops(plan, ft, say)
    return out
