"""The resource sampler against real processes: servers on a real database, real sockets, real files."""

from __future__ import annotations

import http.client
import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lab.load import budget, proctree, sampler
from lab.stack import procs

pytestmark = pytest.mark.integration
CORES = os.cpu_count() or 1

BUSY = "import time\nend = time.monotonic() + 20\nwhile time.monotonic() < end: pass\n"
SLEEPER = "import time; time.sleep(30)"


def _spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)


def _kill(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.kill()
    popen.wait(10)


def _get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _rate(samples: list[dict]) -> tuple[float, float]:
    """(samples per second over the run, per second from the median gap between samples)."""
    gaps = sorted(b["t"] - a["t"] for a, b in itertools.pairwise(samples))
    return (len(samples) - 1) / (samples[-1]["t"] - samples[0]["t"]), 1 / gaps[len(gaps) // 2]


def test_asyncio_server_under_load(server_factory, database_url: str, tmp_path: Path) -> None:
    server = server_factory("asyncio")
    generator = _spawn(BUSY)  # stands in for the load generator: a process that keeps a core busy
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)  # keep-alive throughout
    out = tmp_path / "asyncio.jsonl"
    try:
        assert _get(conn, "/db") == 200  # the pool now holds a database connection
        popen = sampler.start_sampler(out, server.pid, app_name="serverlab-asyncio",
                                      database_url=database_url, metrics_url=f"{server.url}/metrics",
                                      generator_pids=[generator.pid])
        try:
            end = time.monotonic() + 2.2
            for _ in range(100_000):  # bounded by time and count
                if time.monotonic() >= end:
                    break
                for path in ("/db", "/json", "/queries?queries=3"):
                    assert _get(conn, path) == 200
        finally:
            assert sampler.stop_sampler(popen) == 0
    finally:
        conn.close()
        _kill(generator)

    header, samples, footer = sampler.read_samples(out)
    assert header["kind"] == "header" and header["pid"] == server.pid
    assert header["app_name"] == "serverlab-asyncio"
    assert header["interval"] == budget.DEFAULT_INTERVAL and header["sampler_pid"] == popen.pid
    assert header["ports"] == [server.port]
    assert len(samples) >= 6
    overall, typical = _rate(samples)
    assert typical >= 4 * 0.97  # 4 Hz, less 3 % for timer jitter
    assert overall >= 3.5  # a sampler starved of CPU skips slots (late_samples), rarely
    for s in samples:
        assert s["processes"] == 1 and s["rss_bytes"] > 0 and s["threads"] >= 1 and s["fds"] > 0
        assert 0 <= s["cpu_percent"] <= 100 * CORES  # percent of one core: at most every core busy
    assert max(s["cpu_percent"] for s in samples) > 0
    # db and tcp: every sample unless the database is slow or TCP costly (see Sampler's budget)
    with_db = [s["db"] for s in samples if s["db"] is not None]
    assert len(with_db) >= len(samples) / 2 and max(db["total"] for db in with_db) >= 1  # the pool's
    with_tcp = [s["tcp"] for s in samples if s["tcp"] is not None]
    assert samples[0]["tcp"] is not None and all(tcp["LISTEN"] == 1 for tcp in with_tcp)
    assert any(tcp["ESTABLISHED"] >= 1 for tcp in with_tcp)  # our keep-alive connection
    with_uss = [s for s in samples if s["uss_bytes"] is not None]
    assert with_uss and all(0 < s["uss_bytes"] <= s["pss_bytes"] <= s["rss_bytes"] for s in with_uss)
    assert samples[0]["uss_bytes"] is not None  # every uss_every-th sample, starting with the first
    scraped = [s["metrics"] for s in samples if s["metrics"] is not None]
    assert len(scraped) >= len(samples) / 2
    assert all(m["pool_size"] > 0 and m["open_connections"] >= 1 and m["rejections"] == 0 for m in scraped)
    assert max(s["generator_cpu_percent"] for s in samples) > 0  # a busy loop, however shared the CPU

    assert footer is not None and footer["kind"] == "footer" and footer["samples"] == len(samples)
    assert footer["stop_reason"] == "stopped"
    assert 0 <= footer["sampler_cpu_percent"] < 10  # generous; measured at about 1 %
    # the sampling thread's own CPU time: some, and less than the wall time one thread can use
    assert footer["wall_seconds"] > 1 and 0 < footer["sampler_cpu_seconds"] < footer["wall_seconds"]


def _load(port: int, seconds: float) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        end = time.monotonic() + seconds
        for _ in range(100_000):  # bounded by time and count
            if time.monotonic() >= end:
                return
            assert _get(conn, "/db") == 200
    finally:
        conn.close()


def test_multiproc_tree_with_a_worker_restart(server_factory, database_url: str, tmp_path: Path) -> None:
    server = server_factory("multiproc")  # two workers (tests/conftest.py)
    out = tmp_path / "multiproc.jsonl"
    popen = sampler.start_sampler(out, server.pid, app_name="serverlab-multiproc", database_url=database_url,
                                  metrics_url=f"{server.url}/metrics")
    try:
        _load(server.port, 1.2)
        workers = psutil.Process(server.pid).children()
        assert len(workers) == 2
        workers[0].kill()  # the parent restarts it: the sampler must find the new one
        for _ in range(150):  # bounded: 15 s
            now = psutil.Process(server.pid).children()
            if len(now) == 2 and workers[0].pid not in {w.pid for w in now}:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the multiproc server did not restart its worker within 15 s")
        _load(server.port, 1.2)
    finally:
        assert sampler.stop_sampler(popen) == 0
    _header, samples, footer = sampler.read_samples(out)
    print("processes per sample:", [s["processes"] for s in samples])
    assert len(samples) >= 8 and footer is not None and footer["stop_reason"] == "stopped"
    assert samples[0]["processes"] == 3 and samples[-1]["processes"] == 3  # the parent and two workers
    assert all(s["processes"] >= 2 and s["rss_bytes"] > 0 and 0 <= s["cpu_percent"] <= 100 * CORES
               for s in samples)
    assert all(s["threads"] >= s["processes"] for s in samples)
    assert any(s["tcp"] and s["tcp"]["LISTEN"] >= 1 for s in samples)
    assert any(s["metrics"] and s["metrics"]["processes"] == 2 for s in samples)
    assert max(s["db"]["total"] for s in samples if s["db"]) >= 1


def test_server_gone_and_unreachable_parts(tmp_path: Path) -> None:
    """No /metrics, no database, no listening socket: nulls and error counts; the root's end stops it."""
    victim = _spawn(SLEEPER)
    out = tmp_path / "gone.jsonl"
    dead = procs.free_port()
    try:
        popen = sampler.start_sampler(out, victim.pid, app_name="serverlab-none",
                                      database_url=f"postgresql://nobody@127.0.0.1:{dead}/none",
                                      metrics_url=f"http://127.0.0.1:{dead}/metrics")
        time.sleep(0.8)
        victim.kill()  # not reaped yet: a zombie counts as gone
        assert popen.wait(10) == 0
    finally:
        _kill(victim)
    _header, samples, footer = sampler.read_samples(out)
    assert samples[-1]["server_gone"] is True
    assert all(s["metrics"] is None and s["db"] is None and s["tcp"] is None for s in samples[:-1])
    assert footer is not None and footer["stop_reason"] == "server_gone"
    assert footer["metrics_errors"] >= 1 and footer["db_errors"] >= 1 and footer["last_errors"]["metrics"]


def test_a_stopped_sampler_samples_once_more_at_the_stop(tmp_path: Path) -> None:
    """A window that ends just before the stop is still bracketed by samples (its CPU counters are
    interpolated there): stopped between two slots of a long interval, the sampler writes a last sample."""
    victim = _spawn(SLEEPER)
    out = tmp_path / "stopped.jsonl"
    try:
        popen = sampler.start_sampler(out, victim.pid, interval=5.0)
        time.sleep(1.5)  # the header's priming is done; the first slot is 5 s away
        stopped_at = time.time()
        assert sampler.stop_sampler(popen) == 0
    finally:
        _kill(victim)
    _header, samples, footer = sampler.read_samples(out)
    assert footer is not None and footer["stop_reason"] == "stopped"
    assert samples and samples[-1]["t"] >= stopped_at - 0.05, (samples, stopped_at)
    assert isinstance(samples[-1]["cpu_seconds"], int | float)


def test_tcp_states_by_port_in_process() -> None:
    """Several listening ports (the kernel-side OR filter), found from the process's own sockets."""
    listeners, clients, accepted = [], [], []
    try:
        for _ in range(3):
            lsock = socket.socket()
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(8)
            listeners.append(lsock)
        for lsock, n in zip(listeners, (0, 1, 2), strict=True):
            for _ in range(n):
                clients.append(socket.create_connection(lsock.getsockname()))
                accepted.append(lsock.accept()[0])
        ports = sorted(s.getsockname()[1] for s in listeners)
        given = sampler.Sampler(os.getpid(), ports=ports)
        found = sampler.Sampler(os.getpid())
        try:
            counts = given.tcp_states()
            assert counts is not None and counts["LISTEN"] == 3 and counts["ESTABLISHED"] == 3
            assert found.tcp_states() is not None and set(ports) <= set(found.ports)
            only = sampler.Sampler(os.getpid(), ports=[listeners[2].getsockname()[1]])
            assert only.tcp_states() == {"ESTABLISHED": 2, "TIME_WAIT": 0, "LISTEN": 1}
            only.close()
        finally:
            given.close()
            found.close()
    finally:
        for sock in listeners + clients + accepted:
            sock.close()


def test_cpu_of_a_tree_with_children() -> None:
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys\n"
                               f"subprocess.run([sys.executable, '-c', {BUSY!r}])"], stdin=subprocess.DEVNULL)
    try:
        tree = proctree.ProcessTree([parent.pid])
        for _ in range(50):  # until the child shows up (bounded: 5 s)
            if len(tree.pids()) == 2:
                break
            time.sleep(0.1)
        tree.measure()
        time.sleep(1.0)
        stats = tree.measure()
        assert stats.processes == 2 and stats.root_alive and stats.threads >= 2
        assert stats.cpu_percent > 0  # the busy child's (its parent only waits): however shared the CPU
    finally:
        for child in proctree.ProcessTree([parent.pid]).pids()[1:]:
            os.kill(child, 9)
        _kill(parent)


def test_read_samples_tolerates_a_killed_sampler(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    path.write_text('{"kind":"header","pid":1}\n{"t":1.0,"rss_bytes":5}\n{"t":1.25,"rss_')
    header, samples, footer = sampler.read_samples(path)
    assert header["pid"] == 1 and samples == [{"t": 1.0, "rss_bytes": 5}] and footer is None
    path.write_text('{"t":1.0}\n')
    with pytest.raises(ValueError, match="no header"):
        sampler.read_samples(path)
    path.write_text('{"kind":"header"}\nnot json\n{"t":1.0}\n')
    with pytest.raises(ValueError, match=":2: not a JSON line"):
        sampler.read_samples(path)


@pytest.mark.parametrize(("args", "message"), [
    (["--pid", "999999999"], "no process with pid 999999999"),
    (["--pid", "1", "--interval", "0"], "--interval must be from 0.01 to 60"),
    (["--pid", "1", "--max-seconds", "-1"], "--max-seconds must be above 0"),
    (["--pid", "1", "--metrics-url", "localhost:8003"], "--metrics-url must be an http:// URL"),
    (["--pid", "1", "--metrics-url", "http://127.0.0.1:x/metrics"], "--metrics-url must be an http:// URL"),
    (["--pid", "1", "--app-name", "a", "--database-url", "mysql://x@h/x"], "must be a postgresql:// URL"),
    (["--pid", "1", "--budget-percent", "0"], "--budget-percent must be from 0.1 to 100"),
    (["--pid", "1", "--database-url", "postgresql://x@127.0.0.1/x"], "needs --app-name"),
])
def test_bad_arguments_say_what_to_do(args: list[str], message: str, tmp_path: Path) -> None:
    out = str(tmp_path / "x.jsonl")
    done = subprocess.run([sys.executable, "-m", "lab.load.sampler", "--out", out, *args],
                          capture_output=True, text=True, timeout=30, cwd=sampler.REPO)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_bad_env_interval(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "lab.load.sampler", "--out", str(tmp_path / "x.jsonl"), "--pid", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=sampler.REPO,
                          env={**os.environ, "LAB_SAMPLE_INTERVAL": "fast"})
    assert done.returncode == 2 and "LAB_SAMPLE_INTERVAL='fast' is not a number" in done.stderr


def test_start_sampler_failure_quotes_the_reason(tmp_path: Path) -> None:
    with pytest.raises(sampler.SamplerError, match=r"(?s)exited with code 2 while starting.*no process with"):
        sampler.start_sampler(tmp_path / "none.jsonl", 999_999_999)
