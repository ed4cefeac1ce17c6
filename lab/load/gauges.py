"""A server's gauges read from outside: its PostgreSQL connections by state, and its /metrics."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import psycopg2

SAMPLER_APP_NAME = "serverlab-sampler"
METRICS_TIMEOUT = 0.5
DB_RETRY_SECONDS = 2.0
DB_STATES = ("active", "idle", "idle in transaction")
METRIC_FIELDS = {
    "serverlab_pool_size": "pool_size",
    "serverlab_pool_in_use": "pool_in_use",
    "serverlab_pool_waiting": "pool_waiting",
    "serverlab_rejections_total": "rejections",  # summed over reasons
    "serverlab_inflight_requests": "inflight",
    "serverlab_open_connections": "open_connections",
    "serverlab_processes": "processes",
    # The server's process tree as it reports it (servers/process_metrics.py): what a lab that cannot
    # read the server's host takes its CPU, memory, threads and fds from.
    "process_cpu_seconds_total": "process_cpu_seconds",
    "process_resident_memory_bytes": "process_rss_bytes",
    "process_open_fds": "process_fds",
    "process_threads": "process_threads",
    "serverlab_process_tree_processes": "process_count",
}
FLOAT_FIELDS = frozenset({"process_cpu_seconds"})  # nanosecond clock: keep the fraction
_METRIC_LINE = re.compile("^(" + "|".join(METRIC_FIELDS) + r")(?:\{[^}\n]*\})? (\S+)$", re.MULTILINE)

_DB_QUERY = ("SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
             "WHERE application_name = %s GROUP BY 1")


class DbCounter:
    """pg_stat_activity rows of one application_name, over one persistent autocommit connection."""

    def __init__(self, url: str, app_name: str) -> None:
        self.url, self.app_name = url, app_name
        self.conn: Any = None
        self.errors = 0
        self.last_error: str | None = None
        self._retry_at = 0.0

    def count(self) -> dict[str, int] | None:
        try:
            if self.conn is None:
                if time.monotonic() < self._retry_at:
                    return None
                # autocommit: pg_stat_activity is a per-transaction snapshot, so each query needs its own
                self.conn = psycopg2.connect(self.url, application_name=SAMPLER_APP_NAME, connect_timeout=2,
                                             options="-c statement_timeout=1000")
                self.conn.autocommit = True
            with self.conn.cursor() as cur:
                cur.execute(_DB_QUERY, (self.app_name,))
                rows = cur.fetchall()
        except psycopg2.Error as exc:
            self.errors += 1
            self.last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.close()
            self._retry_at = time.monotonic() + DB_RETRY_SECONDS
            return None
        counts = dict.fromkeys(DB_STATES, 0)
        for state, n in rows:
            counts[state] = int(n)
        counts["total"] = sum(counts.values())
        return counts

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self.conn.close()
            self.conn = None


def parse_metrics(text: str) -> dict[str, float]:
    """The gauges the sampler records, from Prometheus text; rejections summed over reasons."""
    found: dict[str, float] = {}
    for name, value in _METRIC_LINE.findall(text):  # one regex pass: the text is mostly histograms
        field = METRIC_FIELDS[name]
        number = float(value) if field in FLOAT_FIELDS else int(float(value))
        found[field] = found.get(field, 0) + number
    if not found:
        raise ValueError("no serverlab_ gauges in the answer; is this a serverlab /metrics URL?")
    return found


class MetricsScraper:
    """GET /metrics with a short timeout; a new connection each time, closed by us first (so its
    TIME_WAIT lands on our side, not among the server's sockets)."""

    def __init__(self, url: str, timeout: float = METRICS_TIMEOUT) -> None:
        parts = urlsplit(url)
        try:
            port = parts.port or 80
        except ValueError:  # a port that is not a number
            port = 0
        if parts.scheme != "http" or not parts.hostname or not port:
            raise ValueError(f"--metrics-url must be an http:// URL such as "
                             f"http://127.0.0.1:8003/metrics, got {url!r}")
        self.url = url
        self.host, self.port = parts.hostname, port
        self.path = (parts.path or "/metrics") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout
        self._request = (f"GET {self.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                         f"User-Agent: {SAMPLER_APP_NAME}\r\n\r\n").encode("latin-1")
        self.errors = 0
        self.last_error: str | None = None

    def scrape(self) -> dict[str, float] | None:
        try:
            return parse_metrics(self._get().decode("utf-8", "replace"))
        except (OSError, ValueError) as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return None

    def _get(self) -> bytes:
        """The body of a 200 answer. Plain HTTP/1.1 over a socket: a third of http.client's CPU."""
        deadline = time.monotonic() + self.timeout
        with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
            sock.sendall(self._request)
            buf, head, length = b"", b"", -1
            for _ in range(100_000):
                if not head and b"\r\n\r\n" in buf:
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    length = self._check_head(head)
                if head and 0 <= length <= len(buf):
                    return buf[:length]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"GET {self.url}: no complete answer within {self.timeout}s")
                chunk = sock.recv(65536)
                if not chunk:  # the server closed: the body is what came
                    if head and length < 0:
                        return buf
                    raise ValueError(f"GET {self.url}: the answer was cut off")
                buf += chunk
        raise ValueError(f"GET {self.url}: answer too long")

    def _check_head(self, head: bytes) -> int:
        """Content-Length from the status line and headers (-1: read to the end); ValueError unless 200."""
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or not status[0].startswith("HTTP/") or status[1] != "200":
            raise ValueError(f"GET {self.url} answered {lines[0][:100]!r}")
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                raise ValueError(f"GET {self.url}: chunked answers are not supported")
        return length
