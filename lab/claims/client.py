"""The small HTTP clients of the server experiments: a timed keep-alive probe and paced clients."""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any

from lab.claims import stats


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def timed_gets(url: str, path: str, count: int, timeout: float, seconds: float) -> dict[str, Any]:
    """A fresh keep-alive client: up to `count` sequential GETs within `seconds`; latencies in ms.

    `ok` is False when any request failed, answered non-200 or took longer than `timeout`.
    """
    conn = _connection(url, timeout)
    lat: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = _connection(url, timeout)
                continue
            elapsed = (time.perf_counter() - start) * 1000
            if resp.status != 200:
                errors.append(f"HTTP {resp.status}")
            lat.append(elapsed)
    finally:
        conn.close()
    slow = sum(1 for x in lat if x > timeout * 1000)
    return {
        "ok": not errors and not slow and bool(lat),
        "requests": len(lat),
        "errors": errors[:5],
        "error_count": len(errors),
        "slow": slow,
        "p50_ms": stats.percentile(lat, 50),
        "p99_ms": stats.percentile(lat, 99),
        "max_ms": max(lat, default=None),
    }


def paced(
    url: str, path: str, clients: int, seconds: float, interval: float, timeout: float = 5.0
) -> dict[str, Any]:
    """`clients` threads, each on its own keep-alive connection, GET `path` then wait `interval`
    seconds, for `seconds`; latencies (ms) of all of them together."""
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def one() -> None:
        conn = _connection(url, timeout)
        mine: list[float] = []
        try:
            while time.monotonic() < stop_at:
                start = time.perf_counter()
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status != 200:
                        raise OSError(f"HTTP {resp.status}")
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = _connection(url, timeout)
                    time.sleep(0.05)
                    continue
                mine.append((time.perf_counter() - start) * 1000)
                if interval:
                    time.sleep(interval)
        finally:
            conn.close()
            with lock:
                lat.extend(mine)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + timeout + 5)
    return {
        "requests": len(lat),
        "rps": len(lat) / seconds,
        "errors": errors[:5],
        "error_count": len(errors),
        "p50_ms": stats.percentile(lat, 50),
        "p99_ms": stats.percentile(lat, 99),
        "max_ms": max(lat, default=None),
    }
