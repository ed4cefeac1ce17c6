"""servers/metrics.py: counting, folding under concurrent writers, merging processes, the text format."""

from __future__ import annotations

import random
import threading
from bisect import bisect_left

import pytest

from servers.metrics import BUCKETS, Metrics, merge, render

pytestmark = pytest.mark.unit


def test_observations_land_in_counters_and_buckets() -> None:
    m = Metrics("threaded")
    m.observe("json", 200, 0.0004)
    m.observe("json", 200, 0.2)
    m.observe("db", 503, 99.0)  # beyond the last bucket: the overflow slot
    snap = m.snapshot()
    assert sorted(map(tuple, snap["requests"])) == [("/db", 503, 1), ("/json", 200, 2)]
    assert snap["hist"]["/json"][0] == 1 and snap["hist"]["/json"][BUCKETS.index(0.25)] == 1
    assert snap["hist"]["/db"][-1] == 1
    assert abs(snap["sum"]["/json"] - 0.2004) < 1e-9


def test_folded_histogram_matches_a_per_request_count() -> None:
    """Sort-and-bisect folding against the obvious per-request bucketing, bounds included."""
    rng = random.Random(7)
    values = [rng.choice(BUCKETS) for _ in range(300)]  # exactly on a bound: that bound's bucket
    values += [rng.lognormvariate(-5, 2) for _ in range(3000)] + [0.0, 11.0]
    m = Metrics("threaded")
    for took in values:
        m.observe("queries", rng.choice((200, 200, 503)), took)
    m.observe("no-such-route", 404, 0.0)  # unknown names count as unmatched
    m.observe(None, 400, 0.0)
    snap = m.snapshot()
    expected = [0] * (len(BUCKETS) + 1)
    for took in values:
        expected[bisect_left(BUCKETS, took)] += 1
    assert snap["hist"]["/queries"] == expected
    assert abs(snap["sum"]["/queries"] - sum(values)) < 1e-6
    statuses = {s: n for e, s, n in snap["requests"] if e == "/queries"}
    assert sum(statuses.values()) == len(values) and set(statuses) == {200, 503}
    assert sorted((e, s, n) for e, s, n in snap["requests"] if e == "unmatched") == [
        ("unmatched", 400, 1), ("unmatched", 404, 1)]


def test_nothing_is_lost_while_threads_write_and_a_reader_folds() -> None:
    m = Metrics("threaded")
    per_thread, threads = 20_000, 4
    plan = [("json", 200), ("db", 200), ("db", 503), (None, 404)]
    halfway, resume = threading.Barrier(threads + 1), threading.Event()

    def write(i: int) -> None:
        record = m.record  # the servers' hot path
        for j in range(per_thread):
            if j == per_thread // 2:
                halfway.wait()
                resume.wait()
            name, status = plan[(i + j) % len(plan)]
            record[name]((status, 0.001 * (j % 7)))

    workers = [threading.Thread(target=write, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    halfway.wait()
    mid = m.snapshot()  # every writer is paused exactly halfway
    resume.set()
    while any(w.is_alive() for w in workers):
        m.snapshot()  # folds concurrently with the writers
    total = per_thread * threads
    assert sum(n for _, _, n in mid["requests"]) == total // 2
    snap = m.snapshot()
    assert sorted(map(tuple, snap["requests"])) == [
        ("/db", 200, total // 4), ("/db", 503, total // 4), ("/json", 200, total // 4),
        ("unmatched", 404, total // 4)]
    assert sum(snap["hist"]["/db"]) == total // 2


def test_disabled_metrics_record_nothing() -> None:
    m = Metrics("asyncio", enabled=False)
    m.observe("json", 200, 0.001)
    assert m.snapshot()["requests"] == []
    assert 'metrics="0"' in m.render()


def test_processes_merge_and_render_as_prometheus_text() -> None:
    a, b = Metrics("multiproc"), Metrics("multiproc")
    a.observe("db", 200, 0.003)
    b.observe("db", 200, 0.004)
    b.active.add(1)
    text = render("multiproc", merge([a.snapshot(), b.snapshot()]))
    assert 'serverlab_requests_total{endpoint="/db",status="200"} 2' in text
    assert 'serverlab_request_duration_seconds_count{endpoint="/db"} 2' in text
    assert 'serverlab_request_duration_seconds_bucket{endpoint="/db",le="+Inf"} 2' in text
    assert "serverlab_inflight_requests 1" in text and "serverlab_processes 2" in text
