"""The machine's speed in results: each repetition's probe reading, and CPU per request at the run's speed.

The speed probe (lab/load/speed.py) ran on the server CPUs through every repetition. A repetition
that ran while the machine was slower reads a lower speed and a higher CPU per request alike, so
`raw x speed / reference` takes the machine's share out: the reference is the run's median speed over
all repetitions, and `run.speed` carries it, so that two runs' references say how far the machine
itself moved between them. The raw figure stays the figure; the adjusted one sits next to it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab.load import speed

PROBE = "a pure-Python loop on the server CPUs, SCHED_IDLE, in bursts (lab/load/speed.py)"


def rep_speed(rep_dir: Path, start: float, end: float) -> dict[str, Any] | None:
    """The probe's reading over a repetition's measured window; None without a probe (or too little CPU)."""
    rows = speed.read(rep_dir / speed.FILE)
    return speed.speed(rows, start, end) if rows and end > start else None


def _of(rep: dict[str, Any]) -> float | None:
    value = (rep.get("speed") or {}).get("work_per_cpu_ms")
    return float(value) if isinstance(value, int | float) and value > 0 else None


def run_speed(entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's reference speed: the median over every repetition with a reading, and their log-sd."""
    values = [v for e in entries for r in e.get("repetitions") or [] if (v := _of(r)) is not None]
    if not values:
        return None
    logs = [math.log(v) for v in values]
    return {"work_per_cpu_ms": round(statistics.median(values), 3), "reps": len(values),
            "log_sd": round(statistics.stdev(logs), 4) if len(logs) > 1 else None,
            "min": min(values), "max": max(values), "probe": PROBE}


def adjust(entries: list[dict[str, Any]], reference: float | None,
           spread: Callable[[Sequence[float]], dict[str, Any]]) -> None:
    """Each entry's `cost.speed_work_per_cpu_ms` and `cost.cpu_us_per_request_speed_adjusted` (spreads over
    its repetitions, in their order), from the repetitions' readings; null where there are none."""
    for e in entries:
        reps = e.get("repetitions") or []
        for r in reps:  # each repetition's own, for the verdicts (lab.results.headline.cpu_figure)
            cpu, v = (r.get("cost") or {}).get("cpu_us_per_request"), _of(r)
            if isinstance(r.get("cost"), dict):
                at_ref = None
                if isinstance(cpu, int | float) and v is not None and reference:
                    at_ref = round(cpu * v / reference, 3)
                r["cost"]["cpu_us_per_request_speed_adjusted"] = at_ref
        speeds = [v for r in reps if (v := _of(r)) is not None]
        adjusted = [round(x, 2) for r in reps
                    if (x := (r.get("cost") or {}).get("cpu_us_per_request_speed_adjusted")) is not None]
        cost = e.setdefault("cost", {})
        cost["speed_work_per_cpu_ms"] = spread(speeds) if speeds else None
        cost["cpu_us_per_request_speed_adjusted"] = spread(adjusted) if adjusted else None
