"""servers/metrics.py: counting, folding under concurrent writers, merging processes, the text format."""

from __future__ import annotations

import threading

from servers.metrics import BUCKETS, Metrics, merge, render


def test_observations_land_in_counters_and_buckets() -> None:
    m = Metrics("threaded")
    m.observe(("/json", 200, 0.0004))
    m.observe(("/json", 200, 0.2))
    m.observe(("/db", 503, 99.0))  # beyond the last bucket: the overflow slot
    snap = m.snapshot()
    assert sorted(map(tuple, snap["requests"])) == [("/db", 503, 1), ("/json", 200, 2)]
    assert snap["hist"]["/json"][0] == 1 and snap["hist"]["/json"][BUCKETS.index(0.25)] == 1
    assert snap["hist"]["/db"][-1] == 1
    assert abs(snap["sum"]["/json"] - 0.2004) < 1e-9


def test_nothing_is_lost_while_threads_write_and_a_reader_folds() -> None:
    m = Metrics("threaded")
    per_thread, threads = 20_000, 4

    def write() -> None:
        for _ in range(per_thread):
            m.observe(("/json", 200, 0.001))

    workers = [threading.Thread(target=write) for _ in range(threads)]
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        m.snapshot()  # folds concurrently with the writers
    assert m.snapshot()["requests"] == [["/json", 200, per_thread * threads]]


def test_disabled_metrics_record_nothing() -> None:
    m = Metrics("asyncio", enabled=False)
    m.observe(("/json", 200, 0.001))
    assert m.snapshot()["requests"] == []
    assert 'metrics="0"' in m.render()


def test_processes_merge_and_render_as_prometheus_text() -> None:
    a, b = Metrics("multiproc"), Metrics("multiproc")
    a.observe(("/db", 200, 0.003))
    b.observe(("/db", 200, 0.004))
    b.active.add(1)
    text = render("multiproc", merge([a.snapshot(), b.snapshot()]))
    assert 'serverlab_requests_total{endpoint="/db",status="200"} 2' in text
    assert 'serverlab_request_duration_seconds_count{endpoint="/db"} 2' in text
    assert 'serverlab_request_duration_seconds_bucket{endpoint="/db",le="+Inf"} 2' in text
    assert "serverlab_inflight_requests 1" in text and "serverlab_processes 2" in text
