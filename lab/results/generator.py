"""Whether the load generator, not the server, was the limit: Locust's CPU and its calibrated ceiling."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

GENERATOR_CPU_LIMIT = 90.0  # % of one core for one Locust process: it is the bottleneck
CEILING_SHARE = 0.85  # of the calibrated rps ceiling


def generator_cpu(run: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """CPU of each Locust process over the window, from the runner's polls (pid -> CPU seconds)."""
    gen = run.get("generator") or {}
    polls: list[list[Any]] = gen.get("polls") or []
    listed = gen.get("load_pids")  # None: every polled process sends requests
    loaders = None if listed is None else {str(p) for p in listed}
    inside = [p for p in polls if start - 0.6 <= p[0] <= end + 0.6]
    per_process: dict[str, float] = {}
    peak = 0.0
    if len(inside) >= 2:
        first, last = inside[0], inside[-1]
        wall = last[0] - first[0]
        for pid, cpu in last[1].items():
            if pid in first[1] and wall > 0:
                per_process[pid] = round(100.0 * (cpu - first[1][pid]) / wall, 1)
        for a, b in itertools.pairwise(inside):
            dt = b[0] - a[0]
            for pid, cpu in b[1].items():
                if (loaders is None or pid in loaders) and pid in a[1] and dt > 0:
                    peak = max(peak, 100.0 * (cpu - a[1][pid]) / dt)
    loading = {p: v for p, v in per_process.items() if loaders is None or p in loaders}
    return {
        "processes": len(loading),
        "cpu_percent_per_process": per_process,
        "cpu_percent_mean": max(loading.values()) if loading else None,  # the busiest Locust process
        "cpu_percent_total": round(sum(per_process.values()), 1) if per_process else None,
        "cpu_percent_peak": round(peak, 1) if len(inside) >= 2 and loading else None,
    }


def generator_verdict(cpu_mean: float | None, rps: float | None,
                      calibration: dict[str, Any] | None) -> tuple[bool, list[str], float | None]:
    """(bound, reasons, ceiling rps): was the load generator, not the server, the limit?"""
    reasons = []
    if cpu_mean is not None and cpu_mean >= GENERATOR_CPU_LIMIT:
        reasons.append(f"a Locust process used {cpu_mean:.0f}% of a core (limit {GENERATOR_CPU_LIMIT:.0f}%)")
    ceiling = (calibration or {}).get("ceiling_rps")
    if ceiling and rps is not None and rps >= CEILING_SHARE * ceiling:
        reasons.append(f"{rps:.0f} rps is {rps / ceiling:.0%} of the generator's calibrated ceiling "
                       f"of {ceiling:.0f} rps (limit {CEILING_SHARE:.0%})")
    return bool(reasons), reasons, ceiling


def worker_heartbeats(records_dir: Path, start: float, end: float) -> list[dict[str, Any]]:
    """Each Locust worker's host and CPU over the window, from its heartbeats as the master wrote them
    (loadtests/heartbeats.py): mean and peak percent of one core, and whether it was over the limit."""
    out = []
    for path in sorted(records_dir.glob("workers-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        polls = [p for p in data.get("polls") or [] if start <= p[0] <= end + 1.0]
        for worker_id, info in sorted((data.get("workers") or {}).items()):
            cpus = [p[1][worker_id] for p in polls if isinstance(p[1].get(worker_id), int | float)]
            mean = round(sum(cpus) / len(cpus), 1) if cpus else None
            out.append({"id": worker_id, "host": info.get("host"), "address": info.get("address"),
                        "heartbeats": len(cpus), "cpu_percent_mean": mean,
                        "cpu_percent_peak": max(cpus) if cpus else None,
                        "bound": mean is not None and mean >= GENERATOR_CPU_LIMIT})
    return out


def worker_reasons(workers: list[dict[str, Any]]) -> list[str]:
    return [f"Locust worker {w['id']} on {w['address'] or w['host']} used {w['cpu_percent_mean']:.0f}% of "
            f"its core (its heartbeats; limit {GENERATOR_CPU_LIMIT:.0f}%)" for w in workers if w["bound"]]
