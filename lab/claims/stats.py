"""Median, spread and percentiles: the one place the claims figures are summarised."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """{median, lo, hi, n} over repetitions; lo..hi is the spread the report shows."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"median": None, "lo": None, "hi": None, "n": 0}
    return {"median": statistics.median(vals), "lo": min(vals), "hi": max(vals), "n": len(vals)}


def fmt(value: float | None, unit: str = "") -> str:
    """A figure for people: three significant digits, thousands separated, with its unit."""
    if value is None:
        return "n/a"
    a = abs(value)
    text = f"{value:,.0f}" if a >= 1000 else f"{value:.3g}"
    return f"{text} {unit}".strip() if unit else text


def fmt_summary(s: dict[str, Any], unit: str = "") -> str:
    """'12.3 µs (11.9-13.0, 5 reps)'."""
    if s.get("median") is None:
        return "n/a"
    if s["n"] <= 1:
        return fmt(s["median"], unit)
    return f"{fmt(s['median'], unit)} ({fmt(s['lo'])}-{fmt(s['hi'])}, {s['n']} reps)"
