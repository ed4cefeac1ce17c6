"""Scale out end to end: `make load PROFILE=smoke` across the lab's test hosts, and nothing on 0.0.0.0.

- Servers and PostgreSQL on host a, the Locust master on b, two workers on c, each a network namespace
  the lab makes: a normal run folder, results.json and report, whose entries take CPU per request from
  the servers' /metrics (the lab reads them as on another machine), with each worker's host and CPU
  from Locust's heartbeats. While it runs, every listening socket on a and b is on its host's address.
- A default `make load` (one machine) listens on loopback only: servers and the Locust master.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from lab.hosts import netns
from tests.netns_hosts import TEST_PREFIX, TEST_SUBNET, made_hosts, require_namespaces

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def listening_in(hosts: netns.TestHosts, host: str) -> set[str]:
    """Local addresses of the TCP sockets listening on a test host, as `ss -ltn` shows them there."""
    done = subprocess.run([*hosts.run_in(host), "ss", "-Hltn"], capture_output=True, text=True, timeout=10,
                          check=False)
    return {line.split()[3] for line in done.stdout.splitlines() if len(line.split()) >= 4}


def watch(probe: Callable[[], set[str]], stop: threading.Event, seen: set[str]) -> None:
    for _ in range(2000):  # bounded: the run ends long before
        seen |= probe()
        if stop.wait(0.5):
            return


def load(args: list[str], reports: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "lab", "load", "--profile", "smoke", "--calibrate", "skip",
                           "--reports-dir", str(reports), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env, check=False)


def test_smoke_across_test_hosts(tmp_path: Path) -> None:
    require_namespaces()
    with made_hosts() as hosts:
        a, b = hosts.address("a"), hosts.address("b")
        stop, on_a, on_b = threading.Event(), set[str](), set[str]()
        probes = ((functools.partial(listening_in, hosts, h), seen) for h, seen in (("a", on_a), ("b", on_b)))
        watchers = [threading.Thread(target=watch, args=(probe, stop, seen)) for probe, seen in probes]
        for w in watchers:
            w.start()
        try:
            done = load(["--test-hosts", "yes", "--hosts-prefix", TEST_PREFIX, "--hosts-subnet", TEST_SUBNET,
                         "--scenarios", "db", "--reps", "1"], tmp_path, timeout=300)
        finally:
            stop.set()
            for w in watchers:
                w.join(10)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    # Servers and PostgreSQL listened on a's address only, the master on b's only.
    assert on_a and all(s.rsplit(":", 1)[0] == a for s in on_a), on_a
    assert on_b and all(s.rsplit(":", 1)[0] == b for s in on_b), on_b
    run = tmp_path / "latest"
    data = json.loads((run / "results.json").read_text())
    settings = json.loads((run / "settings.json").read_text())
    assert settings["topology"]["kind"] == "test-hosts"
    assert settings["topology"]["hosts"] == {"a": a, "b": b, "c": hosts.address("c")}
    assert data["ok"], data["problems"]
    assert {e["server"] for e in data["results"]} == {"threaded", "gevent", "asyncio", "multiproc"}
    for e in data["results"]:
        where = f"{e['server']}/{e['scenario']}"
        assert e["requests"] > 0, where
        assert e["cost"]["cpu_source"] == ["metrics"], where
        assert e["cost"]["cpu_us_per_request"]["median"] > 0, where
        assert e["memory"]["rss_peak_bytes"], where
        (rep,) = (run / e["server"] / e["scenario"]).glob("rep-*")
        run_json = json.loads((rep / "run.json").read_text())
        assert run_json["locust"]["commands"][0].startswith(" ".join(hosts.run_in("b"))), where
        records = list((rep / "records").glob("record-*.json"))
        assert len(records) == 2, f"{where}: one record per worker, got {records}"
        workers = json.loads((rep / "records").glob("workers-*.json").__next__().read_text())["workers"]
        assert len(workers) == 2 and {w["address"] for w in workers.values()} == {hosts.address("c")}, where
        assert e["generator"]["workers_cpu_percent_max"] is not None, where
    page = (run / "index.html").read_text()
    assert "test hosts: servers and PostgreSQL on a" in page


def test_a_default_load_run_listens_on_loopback_only(tmp_path: Path) -> None:
    """`make load`'s default path with a master and a worker: every socket its processes listen on
    (servers, Locust master) is on 127.0.0.1, none on 0.0.0.0 or ::, checked every half second."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "lab", "load", "--profile", "smoke", "--calibrate", "skip", "--servers",
           "threaded,multiproc", "--scenarios", "json", "--reps", "1", "--locust-workers", "1",
           "--reports-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen: set[tuple[str, int, str]] = set()
    try:
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            with_children = {p.pid: p for p in root.children(recursive=True)}
            for c in psutil.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN and c.pid in with_children and c.laddr:
                    try:
                        name = with_children[c.pid].name()
                    except psutil.Error:
                        name = "?"
                    seen.add((c.laddr[0], c.laddr[1], name))
            time.sleep(0.5)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out[-3000:]
    assert len({port for _, port, _ in seen}) >= 2, seen  # at least a server and the master were seen
    assert all(address == "127.0.0.1" for address, _, _ in seen), seen
