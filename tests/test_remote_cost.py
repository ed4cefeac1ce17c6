"""CPU per request from /metrics agrees with the cgroup's exact counter, for all four servers.

A lab that cannot read a server's host takes its cost from /metrics (process_cpu_seconds_total). Here
the same server is sampled both ways at once, under real load over real sockets: a local sampler with
the server's cgroup (a CPU budget) and a remote one (--pid 0, /metrics only).
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import psutil
import pytest

from lab.load import sampler
from lab.results.resources import cost, resources
from lab.stack import cpu_budget
from servers.settings import MODELS
from tests.conftest import ServerFactory

pytestmark = pytest.mark.integration

LOAD_SECONDS = 3.0
CLIENTS = 4
AGREE = 0.05  # the bound: within 5 %


def drive(port: int, seconds: float) -> int:
    """Keep-alive GET /db from CLIENTS threads for `seconds`; the count of 200s."""
    done: list[int] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        ok, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            conn.request("GET", "/db")
            response = conn.getresponse()
            response.read()
            ok += response.status == 200
        conn.close()
        done.append(ok)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return sum(done)


@pytest.mark.parametrize("model", MODELS)
def test_metrics_cpu_per_request_matches_the_cgroup(model: str, server_factory: ServerFactory,
                                                    database_url: str, tmp_path: Path) -> None:
    try:
        budget = cpu_budget.CpuBudget(2.0).create()
    except cpu_budget.BudgetError as exc:
        pytest.skip(f"no cgroup CPU counter to compare with: {exc}")
    try:
        server = server_factory(model)
        budget.add([server.pid, *(c.pid for c in psutil.Process(server.pid).children())])
        metrics_url = f"{server.url}/metrics"
        local = sampler.start_sampler(tmp_path / "local.jsonl", server.pid, metrics_url=metrics_url,
                                      cpu_usage_file=budget.usage_file)
        remote = sampler.start_sampler(tmp_path / "remote.jsonl", 0, metrics_url=metrics_url)
        try:
            time.sleep(0.6)
            start = time.time()
            ok = drive(server.port, LOAD_SECONDS)
            end = time.time()
            time.sleep(0.6)
        finally:
            sampler.stop_sampler(local)
            sampler.stop_sampler(remote)
    finally:
        budget.remove()
    _, here, _ = sampler.read_samples(tmp_path / "local.jsonl")
    _, there, _ = sampler.read_samples(tmp_path / "remote.jsonl")
    assert ok > 100
    both = cost(here, start, end, ok)
    by = both["cpu_us_per_request_by_source"]
    assert both["cpu_source"] == "cgroup" and {"cgroup", "metrics", "proc"} <= set(by)
    print(f"{model}: CPU us/request {by}")  # shown with -s: the side-by-side figures
    assert abs(by["metrics"] / by["cgroup"] - 1) < AGREE, by
    far = cost(there, start, end, ok)  # what a lab on another host sees
    assert far["cpu_source"] == "metrics"
    assert abs(far["cpu_us_per_request"] / by["cgroup"] - 1) < AGREE, (far, by)
    # Memory, threads and fds reach the remote lab as well, the same figures as the local tree's.
    near_res, far_res = resources(here, start, end), resources(there, start, end)
    assert far_res["rss_peak_bytes"] == pytest.approx(near_res["rss_peak_bytes"], rel=0.1)
    assert far_res["threads_peak"] == pytest.approx(near_res["threads_peak"], abs=2)
    assert far_res["processes_peak"] == near_res["processes_peak"]
