"""A Locust started ahead of its repetition holds at its start gate: imported, alive, and silent.

`make load` starts each repetition's Locust while the fresh server starts (lab/load/handover.py), so
that Locust's imports overlap the server's start instead of following it. Real Locust processes against
a real server: while held, the server answers no request and Locust writes no record; go() starts the
test; a gate closed unopened ends Locust without a request.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lab.load.locust_job import LocustJob
from lab.stack import procs
from loadtests import gate
from tests.conftest import ServerFactory

pytestmark = pytest.mark.integration

HELD_SECONDS = 0.5  # without a gate, users spawn within milliseconds of Locust's start


def gated_job(folder: Path, url: str) -> LocustJob:
    return LocustJob(out_dir=folder, host=url, user_class="JsonUser", shape="steady", users=4, spawn_rate=4,
                     duration=1, warmup=0.5, gated=True)


def json_requests(url: str) -> int:
    """Requests the server answered on /json, from its own counter."""
    status, body = procs.get(f"{url}/metrics")
    assert status == 200
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in body.decode().splitlines()
               if line.startswith("serverlab_requests_total{") and 'endpoint="/json"' in line)


def wait_until_held(job: LocustJob) -> None:
    """Until Locust has started (its imports done: it is at the gate now, or past it if the gate leaks)."""
    log = job.out_dir / "locust.log"
    deadline = time.monotonic() + 60
    while "Starting Locust" not in log.read_text(errors="replace"):
        assert job.popens[0].poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "Locust did not start within 60 s"
        time.sleep(0.05)


def test_a_gated_locust_sends_nothing_until_the_gate_opens(tmp_path: Path,
                                                           server_factory: ServerFactory) -> None:
    server = server_factory("asyncio")
    job = gated_job(tmp_path, server.url)
    job.start()
    try:
        wait_until_held(job)
        time.sleep(HELD_SECONDS)
        assert job.popens[0].poll() is None  # held, not gone
        assert json_requests(server.url) == 0
        assert not list(job.records.glob("*")), "no progress, shape or record file while held"
        job.go()
        outcome = job.wait()
    finally:
        codes = job.stop()
    log = (tmp_path / "locust.log").read_text(errors="replace")
    assert outcome == "ok" and codes == [0], log[-3000:]
    shape = json.loads((job.records / "shape.json").read_text())
    assert shape["began"] >= job.opened > job.started  # the test's clock started at the gate
    assert shape["spawn_complete"] and shape["measure_end"] > shape["measure_start"]
    assert job.records_problem() is None
    assert json_requests(server.url) > 0


def test_a_gate_closed_unopened_ends_locust_without_a_request(tmp_path: Path,
                                                              server_factory: ServerFactory) -> None:
    server = server_factory("asyncio")
    job = gated_job(tmp_path, server.url)
    job.start()
    try:
        wait_until_held(job)
        job.shut()
        code = job.popens[0].wait(30)
    finally:
        job.stop()
    assert code == gate.GATE_CLOSED, (tmp_path / "locust.log").read_text(errors="replace")[-3000:]
    assert json_requests(server.url) == 0
    assert not list(job.records.glob("record-*.json"))
    assert job.opened == 0.0
