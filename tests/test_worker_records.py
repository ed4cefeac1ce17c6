"""Every Locust worker's latency record reaches the master at the end of a distributed run, however long
its users take to stop; a worker that cannot report is named, and the repetition fails.

A real server behind the lab's fault proxy in delay mode (each request takes about two seconds), a real
Locust master and two workers on loopback, driven as `make load` drives them (lab/load/locust_job.py).
Users start 0.67 s apart, so at the end each worker (three users) has a request in flight with more
than a second to go and needs that long to stop before it sends its record: a master that quits
before it has collected the records loses them (the code before this test lost both, 6 runs of 6).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.faults.proxy import FaultProxy
from lab.load.locust_job import LocustJob
from tests.conftest import ServerFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_url(server_factory: ServerFactory) -> Iterator[str]:
    """A gevent server whose every request takes about two seconds (one each way, by the proxy)."""
    server = server_factory("gevent")
    with FaultProxy((server.host, server.port)) as proxy:
        proxy.delay(1.0)
        yield f"http://{proxy.host}:{proxy.port}"


def job_for(folder: Path, url: str, duration: float) -> LocustJob:
    return LocustJob(out_dir=folder, host=url, user_class="JsonUser", shape="steady", users=6, spawn_rate=1.5,
                     duration=duration, warmup=1, workers=2)


def records(job: LocustJob) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(job.records.glob("record-*.json"))]


def test_each_worker_hands_in_its_record_although_its_users_take_long_to_stop(tmp_path: Path,
                                                                             slow_url: str) -> None:
    job = job_for(tmp_path, slow_url, duration=4)
    job.start()
    try:
        outcome = job.wait()
    finally:
        codes = job.stop()
    log = (tmp_path / "locust.log").read_text()
    assert outcome == "ok" and codes[0] == 0, log[-3000:]
    found = records(job)
    assert len(found) == 2, f"one record per worker, got {len(found)}:\n{log[-3000:]}"
    for record in found:
        assert record["role"] == "worker"
        assert isinstance(record["requests"], int) and record["requests"] > 0, record["requests"]
        # the record left after the worker's users ended their last requests, slow as they were
        tail = record["tail"]
        assert isinstance(tail, dict) and tail["requests"] > 0, tail
    assert job.records_problem() is None
    assert "no latency record" not in log


def measuring(job: LocustJob) -> bool:
    """Whether a worker's progress file says the measured phase has begun."""
    for path in job.records.glob("progress-*.json"):
        try:
            if json.loads(path.read_text()).get("phase") == "measure":
                return True
        except (OSError, ValueError):
            continue
    return False


def test_a_worker_that_stops_answering_is_named_and_the_repetition_fails(tmp_path: Path,
                                                                        slow_url: str) -> None:
    job = job_for(tmp_path, slow_url, duration=8)
    job.start()
    silent = job.popens[2]  # the second worker
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not measuring(job):
            time.sleep(0.2)
        assert measuring(job), (tmp_path / "locust.log").read_text()[-3000:]
        # Frozen while measuring: it misses its heartbeats and never sends its record.
        os.kill(silent.pid, signal.SIGSTOP)
        outcome = job.wait()
    finally:
        os.kill(silent.pid, signal.SIGCONT)
        job.stop()
    log = (tmp_path / "locust.log").read_text()
    assert outcome == "ok", log[-3000:]
    assert len(records(job)) == 1, log[-3000:]
    problem = job.records_problem()
    assert problem is not None and "only 1 of 2" in problem and "locust.log" in problem
    line = next((x for x in log.splitlines() if "no latency record from Locust worker" in x), "")
    assert line, log[-3000:]
    # named with where it runs (its hello at test start: host name, address towards the master)
    assert f"(on {socket.gethostname()}, 127.0.0.1)" in line and "locust-worker-*.log" in line, line
