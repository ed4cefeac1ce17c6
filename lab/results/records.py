"""A run's raw files read back: JSON files, and Locust's latency records merged into HDR histograms."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

RECORD_FORMAT = "serverlab-locust-record"
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99_9": 99.9}


class ResultsError(RuntimeError):
    """The folder is not a run, or its files are broken; the message names the file."""


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ResultsError(f"cannot read {path}: {exc}") from None




def load_records(folder: Path) -> list[dict[str, Any]]:
    """The record-*.json files Locust processes wrote (one per process that sent requests)."""
    records = []
    for path in sorted(folder.glob("record-*.json")):
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ResultsError(f"{path} is not a {RECORD_FORMAT} file")
        records.append(data)
    return records


def merge(encoded: Iterable[str], digits: int = 3) -> HdrHistogram:
    """One histogram from encoded ones (any precision)."""
    merged: HdrHistogram | None = None
    for blob in encoded:
        h = HdrHistogram.decode(blob)
        if merged is None:
            merged = h
        else:
            merged.add(h)
    return merged if merged is not None else HdrHistogram(1, 120_000_000, digits)


def latency_ms(h: HdrHistogram) -> dict[str, Any] | None:
    """Percentiles, mean and max in milliseconds; None without requests."""
    count = h.get_total_count()
    if not count:
        return None
    values = h.get_percentile_to_value_dict(list(PERCENTILES.values()))
    top = h.get_max_value()
    out: dict[str, Any] = {}
    previous = 0.0
    for name, pct in PERCENTILES.items():
        value = min(values[pct], top) / 1000.0
        out[name] = round(max(value, previous), 3)
        previous = out[name]
    out["max"] = round(max(top / 1000.0, previous), 3)
    out["min"] = round(h.get_min_value() / 1000.0, 3)
    out["mean"] = round(h.get_mean_value() / 1000.0, 3)
    out["count"] = count
    return out


def encode(h: HdrHistogram) -> str:
    data: bytes = h.encode()
    return data.decode("ascii")
