"""What a server cost over a window, from the sampler's samples: memory, connections, CPU per request."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

MAX_RESOURCE_POINTS = 240


def _window(samples: Sequence[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [s for s in samples if start <= s.get("t", 0) <= end and not s.get("server_gone")]


def _values(samples: Iterable[dict[str, Any]], *path: str) -> list[float]:
    out = []
    for s in samples:
        v: Any = s
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if isinstance(v, int | float) and not isinstance(v, bool):
            out.append(v)
    return out


def _peak(values: Sequence[float]) -> float | None:
    return max(values) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 2) if values else None


def _mean_bytes(values: Sequence[float]) -> int | None:
    return round(statistics.fmean(values)) if values else None


def client_connections(sample: dict[str, Any]) -> int | float | None:
    """Open client connections: ESTABLISHED sockets on the server's port (else the server's own gauge)."""
    tcp = sample.get("tcp")
    if isinstance(tcp, dict) and isinstance(tcp.get("ESTABLISHED"), int):
        return int(tcp["ESTABLISHED"])
    metrics = sample.get("metrics")
    if isinstance(metrics, dict) and isinstance(metrics.get("open_connections"), int | float):
        return max(0, metrics["open_connections"] - 1)  # the gauge counts the scrape's own connection
    return None


def resources(samples: list[dict[str, Any]], start: float, end: float,
              idle_rss: int | None = None) -> dict[str, Any]:
    """What the server cost during the measured window, from the sampler's file. `idle_rss`: the
    server's RSS when it had started and no client had ever connected (the runner records it); the
    baseline of memory per connection, since a server serves several repetitions and RSS rarely falls."""
    inside = _window(samples, start, end)
    before = [s for s in samples if s.get("t", 0) < start and not s.get("server_gone")]
    # Else (raw files before it was recorded): the last sample before any client connected.
    idle = [s for s in before if not client_connections(s)]
    baseline = idle_rss or (idle[-1] if idle else (samples[0] if samples else {})).get("rss_bytes")
    rss = _values(inside, "rss_bytes")
    conns = [c for c in (client_connections(s) for s in inside) if c is not None]
    peak_conn = _peak(conns)
    peak_rss = _peak(rss)
    per_conn = None
    if peak_rss is not None and baseline is not None and peak_conn:
        per_conn = round(max(0.0, peak_rss - baseline) / peak_conn)
    rejections = _values(inside, "metrics", "rejections")
    return {
        "samples": len(inside),
        "rss_peak_bytes": peak_rss,
        "rss_mean_bytes": _mean_bytes(rss),
        "rss_baseline_bytes": baseline,
        "rss_per_connection_bytes": per_conn,
        "uss_peak_bytes": _peak(_values(inside, "uss_bytes")),
        "pss_peak_bytes": _peak(_values(inside, "pss_bytes")),
        "cpu_percent_mean": _mean(_values(inside, "cpu_percent")),
        "cpu_percent_peak": _peak(_values(inside, "cpu_percent")),
        "threads_peak": _peak(_values(inside, "threads")),
        "processes_peak": _peak(_values(inside, "processes")),
        "fds_peak": _peak(_values(inside, "fds")),
        "client_connections_peak": peak_conn,
        "client_connections_mean": _mean(conns),
        "db_connections_peak": _peak(_values(inside, "db", "total")),
        "db_connections_mean": _mean(_values(inside, "db", "total")),
        "db_active_peak": _peak(_values(inside, "db", "active")),
        "pool_size": _peak(_values(inside, "metrics", "pool_size")),
        "pool_in_use_peak": _peak(_values(inside, "metrics", "pool_in_use")),
        "pool_waiting_peak": _peak(_values(inside, "metrics", "pool_waiting")),
        "inflight_peak": _peak(_values(inside, "metrics", "inflight")),
        "rejections": (max(rejections) - min(rejections)) if rejections else None,
        "sampler_generator_cpu_percent_mean": _mean(_values(inside, "generator_cpu_percent")),
    }


def resource_timeline(samples: list[dict[str, Any]], start: float, end: float) -> dict[str, list[Any]]:
    """The window's samples as columns (t in seconds from the window start), at most 240 points."""
    inside = _window(samples, start, end)
    step = max(1, -(-len(inside) // MAX_RESOURCE_POINTS))
    picked = inside[::step]

    def col(*path: str) -> list[Any]:
        out = []
        for s in picked:
            v: Any = s
            for key in path:
                v = v.get(key) if isinstance(v, dict) else None
            out.append(v)
        return out

    return {
        "t": [round(s["t"] - start, 3) for s in picked],
        "rss_bytes": col("rss_bytes"),
        "cpu_percent": col("cpu_percent"),
        "threads": col("threads"),
        "client_connections": [client_connections(s) for s in picked],
        "db_connections": col("db", "total"),
        "pool_in_use": col("metrics", "pool_in_use"),
        "pool_waiting": col("metrics", "pool_waiting"),
        "generator_cpu_percent": col("generator_cpu_percent"),
    }


# Where a server's CPU seconds come from, best first: its cgroup's exact counter (a CPU budget on this
# host); the server's own /metrics (process_cpu_seconds_total: its processes' nanosecond clocks, the
# same scheduler runtime, readable from any host); /proc here (10 ms ticks per process).
CPU_SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cgroup", ("cgroup_cpu_seconds",)),
    ("metrics", ("metrics", "process_cpu_seconds")),
    ("proc", ("cpu_seconds",)),
)


def _get(sample: dict[str, Any], path: Sequence[str]) -> Any:
    v: Any = sample
    for key in path:
        v = v.get(key) if isinstance(v, dict) else None
    return v


def _at(samples: Sequence[dict[str, Any]], key: str | Sequence[str], t: float) -> float | None:
    """A cumulative counter of the samples (a key, or a path of keys), interpolated linearly at time t;
    None outside them."""
    path = (key,) if isinstance(key, str) else key
    points = [(s["t"], v) for s in samples
              if isinstance(v := _get(s, path), int | float) and not isinstance(v, bool)
              and not s.get("server_gone")]
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return None


def cpu_by_source(samples: Sequence[dict[str, Any]], start: float, end: float) -> dict[str, float]:
    """The server tree's CPU seconds over [start, end] from every source that covers the window."""
    out = {}
    for source, path in CPU_SOURCES:
        a, b = _at(samples, path, start), _at(samples, path, end)
        if a is not None and b is not None:
            out[source] = max(0.0, b - a)
    return out


def cpu_seconds(samples: Sequence[dict[str, Any]], start: float, end: float) -> tuple[float | None, str]:
    """The server tree's CPU seconds over [start, end] and where they come from: the best of
    CPU_SOURCES that covers the window, else (raw files before cumulative counters) the sampled CPU
    percentages integrated over the window."""
    found = cpu_by_source(samples, start, end)
    for source, _path in CPU_SOURCES:
        if source in found:
            return found[source], source
    inside = [s for s in samples if start < s.get("t", 0) <= end and not s.get("server_gone")]
    if len(inside) < 2:
        return None, "none"
    total = sum((s.get("cpu_percent") or 0) / 100 * (s["t"] - p["t"]) for p, s in itertools.pairwise(inside))
    return total * (end - start) / (inside[-1]["t"] - inside[0]["t"]), "percent"


def cost(samples: Sequence[dict[str, Any]], start: float, end: float, ok_requests: int) -> dict[str, Any]:
    cpu, source = cpu_seconds(samples, start, end)
    per = round(cpu * 1e6 / ok_requests, 2) if cpu is not None and ok_requests else None
    by_source = {k: round(v * 1e6 / ok_requests, 2) for k, v in cpu_by_source(samples, start, end).items()
                 if ok_requests}
    return {"cpu_seconds": None if cpu is None else round(cpu, 6), "cpu_source": source,
            "cpu_us_per_request": per, "cpu_us_per_request_by_source": by_source}
