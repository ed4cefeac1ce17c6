"""Request metrics in Prometheus text format, shared by all four servers.

One `Metrics` per process. Multi-process servers merge the JSON snapshots of every worker
(`merge`) so that /metrics answers for the whole server whichever worker serves it. /metrics ends
with the process tree's own cost (servers.process_metrics: process_cpu_seconds_total and so on).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import Any

from servers import process_metrics
from servers.contract import METRICS_LABELS

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REJECTION_REASONS = ("pool_timeout", "pool_fail_fast", "inflight_timeout", "connection_limit",
                     "request_timeout")
UNMATCHED = "unmatched"  # the endpoint label of requests that matched no route

# (pool size, connections in use, requests waiting for one)
PoolStats = Callable[[], tuple[int, int, int]]
Record = Callable[[tuple[int, float]], None]


def _no_pool() -> tuple[int, int, int]:
    return (0, 0, 0)


class Metrics:
    """Counters and gauges for one process. Thread-safe, and cheap on the request path.

    The hot path is `record[route name]((status, seconds))`: the `extend` of that endpoint's list,
    one C call that is atomic under the GIL, so it needs no lock and allocates nothing that
    outlives the call (the status and float it leaves are not tracked by the garbage collector;
    a queue of per-request tuples was, and its collections cost more than the counting).
    `active` (the set of requests in flight) gains and loses a key, also C-level. A background
    thread folds the lists into counters every FOLD_SECONDS, by C-level slicing, sort and
    bisect, and every read folds first, so /metrics is always current. Counted with callgrind
    on `threaded` /json, metrics cost 13 % as locked Python calls per request, 7 % as a queue of
    tuples, and 2-3 % like this.
    """

    FOLD_SECONDS = 0.5

    def __init__(self, model: str, enabled: bool = True, pool_stats: PoolStats = _no_pool) -> None:
        self.model = model
        self.enabled = enabled
        self.pool_stats = pool_stats
        self._lock = threading.Lock()
        # endpoint label -> flat [status, seconds, status, seconds, ...] not folded yet
        self._pending: dict[str, list[Any]] = {}
        # route name (None: no route matched) -> that endpoint's list.extend
        self.record: dict[str | None, Record] = {}
        for name, label in (*METRICS_LABELS.items(), (None, UNMATCHED)):
            pending = self._pending.setdefault(label, [])
            self.record[name] = pending.extend if enabled else _ignore
        self.active: set[object] = set()
        self._requests: dict[tuple[str, int], int] = {}
        # endpoint -> per-bucket counts, an overflow slot, and last the sum of seconds
        self._hist: dict[str, list[float]] = {}
        self._rejections = dict.fromkeys(REJECTION_REASONS, 0)
        self.connections = 0
        self.tree_root: int | None = None  # the process whose tree process_* covers; None: this one
        if enabled:
            threading.Thread(target=self._fold_forever, name="metrics-fold", daemon=True).start()

    def observe(self, name: str | None, status: int, seconds: float) -> None:
        """One request answered; `name` is its route's name, None when none matched. Off the hot
        path: the servers call `record[name]((status, seconds))` directly, one call fewer."""
        self.record.get(name, self.record[None])((status, seconds))

    def _fold_forever(self) -> None:
        while True:
            time.sleep(self.FOLD_SECONDS)
            self._fold()

    def _fold(self) -> None:
        with self._lock:  # one folder at a time; writers never take it
            for label, pending in self._pending.items():
                n = len(pending)  # always even: each extend adds a pair atomically
                if not n:
                    continue
                # Writers only append, and only this (locked) code removes, so the first n items
                # are exactly the batch even if the GIL changes hands between the two lines.
                batch = pending[:n]
                del pending[:n]
                statuses, seconds = batch[0::2], batch[1::2]
                for status in set(statuses):
                    key = (label, status)
                    self._requests[key] = self._requests.get(key, 0) + statuses.count(status)
                counts = self._hist.get(label)
                if counts is None:
                    counts = self._hist[label] = [0] * (len(BUCKETS) + 2)
                seconds.sort()  # then each bucket's count is a difference of two bisections
                below = 0
                for i, bound in enumerate(BUCKETS):
                    upto = bisect_right(seconds, bound, below)
                    counts[i] += upto - below
                    below = upto
                counts[-2] += len(seconds) - below
                counts[-1] += sum(seconds)

    def reject(self, reason: str) -> None:
        with self._lock:
            self._rejections[reason] += 1

    def add_connection(self, delta: int) -> None:
        with self._lock:
            self.connections += delta

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of everything, for merging across processes."""
        self._fold()
        size, in_use, waiting = self.pool_stats()
        with self._lock:
            return {
                "requests": [[e, s, n] for (e, s), n in self._requests.items()],
                "hist": {e: [int(n) for n in c[:-1]] for e, c in self._hist.items()},
                "sum": {e: c[-1] for e, c in self._hist.items()},
                "rejections": dict(self._rejections),
                "gauges": {
                    "inflight_requests": len(self.active),
                    "open_connections": self.connections,
                    "pool_size": size,
                    "pool_in_use": in_use,
                    "pool_waiting": waiting,
                    "processes": 1,
                },
            }

    def render(self, others: Iterable[dict[str, Any]] = ()) -> str:
        """The request metrics of this process and `others`, then the process tree's cost (read
        even with request metrics off: it costs the scrape, not the requests)."""
        text = render(self.model, merge([self.snapshot(), *others]), self.enabled)
        return text + process_metrics.render_tree(self.tree_root)


def _ignore(item: tuple[int, float]) -> None:
    """record[...]() when metrics are off."""


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Add snapshots together: counters, histograms and gauges all sum across processes."""
    requests: dict[tuple[str, int], int] = {}
    hist: dict[str, list[int]] = {}
    sums: dict[str, float] = {}
    rejections = dict.fromkeys(REJECTION_REASONS, 0)
    gauges: dict[str, int] = {}
    for snap in snapshots:
        for endpoint, status, n in snap["requests"]:
            requests[(endpoint, status)] = requests.get((endpoint, status), 0) + n
        for endpoint, counts in snap["hist"].items():
            into = hist.setdefault(endpoint, [0] * len(counts))
            for i, n in enumerate(counts):
                into[i] += n
            sums[endpoint] = sums.get(endpoint, 0.0) + snap["sum"][endpoint]
        for reason, n in snap["rejections"].items():
            rejections[reason] = rejections.get(reason, 0) + n
        for name, value in snap["gauges"].items():
            gauges[name] = gauges.get(name, 0) + value
    merged_requests = [[e, s, n] for (e, s), n in sorted(requests.items())]
    return {"requests": merged_requests, "hist": hist, "sum": sums, "rejections": rejections,
            "gauges": gauges}


def _fmt(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(model: str, snap: dict[str, Any], enabled: bool = True) -> str:
    """Prometheus text exposition format 0.0.4."""
    out: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP serverlab_{name} {text}")
        out.append(f"# TYPE serverlab_{name} {kind}")

    family("info", "gauge", "The model of this server and whether request metrics are recorded.")
    out.append(f'serverlab_info{{model="{model}",metrics="{int(enabled)}"}} 1')

    family("requests_total", "counter", "Requests answered, by endpoint and status.")
    for endpoint, status, n in snap["requests"]:
        out.append(f'serverlab_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')

    family("request_duration_seconds", "histogram", "Time from request parsed to reply built.")
    for endpoint in sorted(snap["hist"]):
        counts = snap["hist"][endpoint]
        running = 0
        for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
            running += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(
                f'serverlab_request_duration_seconds_bucket{{endpoint="{endpoint}",le="{le}"}} {running}'
            )
        out.append(f'serverlab_request_duration_seconds_sum{{endpoint="{endpoint}"}} '
                   f'{_fmt(snap["sum"][endpoint])}')
        out.append(f'serverlab_request_duration_seconds_count{{endpoint="{endpoint}"}} {running}')

    family("rejections_total", "counter", "Requests refused with 503, by reason.")
    for reason, n in sorted(snap["rejections"].items()):
        out.append(f'serverlab_rejections_total{{reason="{reason}"}} {n}')

    gauges = snap["gauges"]
    for name, text in (
        ("inflight_requests", "Requests in progress."),
        ("open_connections", "Open client connections."),
        ("pool_size", "Database connections the pool may hold."),
        ("pool_in_use", "Database connections lent out now."),
        ("pool_waiting", "Requests waiting for a database connection."),
        ("processes", "Processes serving (workers for multiproc)."),
    ):
        family(name, "gauge", text)
        out.append(f"serverlab_{name} {gauges.get(name, 0)}")
    return "\n".join(out) + "\n"
