"""servers/process_metrics.py against real child processes: CPU of ended threads at ns resolution,
sums over a forked tree, fds, threads, memory, and the Prometheus text it renders."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from servers import process_metrics
from tests.contract_client import metric_value

pytestmark = pytest.mark.unit

# A child that forks `KIDS` children; each of the three burns CPU in a thread that then ends, opens
# files, starts one idle thread, prints "pid cpu-ns" and sleeps until killed.
CHILD = r"""
import os, sys, threading, time
KIDS = int(sys.argv[1])

def burn(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass

def work():
    t = threading.Thread(target=burn, args=(0.15,))
    t.start(); t.join()  # that thread's CPU must still count once it has ended
    keep = [open(os.devnull) for _ in range(7)]
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # one idle extra thread
    return keep

kids = []
for _ in range(KIDS):
    pid = os.fork()
    if pid == 0:
        keep = work()
        os.write(1, f"{os.getpid()} {time.process_time_ns()}\n".encode())  # one write: never interleaved
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
keep = work()
os.write(1, f"{os.getpid()} {time.process_time_ns()}\n".encode())
time.sleep(60)
"""


@pytest.fixture
def child() -> Iterator[tuple[subprocess.Popen[str], int]]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        reports: dict[int, int] = {}
        for _ in range(3):
            pid, cpu = proc.stdout.readline().split()
            reports[int(pid)] = int(cpu)
        yield proc, reports[proc.pid]
    finally:
        for kid in psutil.Process(proc.pid).children():
            kid.kill()
        proc.kill()
        proc.wait()


def test_cpu_of_one_process_is_its_own_clock_including_ended_threads(
    child: tuple[subprocess.Popen[str], int],
) -> None:
    proc, own_cpu_ns = child
    seen = process_metrics.cpu_ns(proc.pid)
    # The process reported its clock, then only sleeps: what we read is that plus a little.
    assert own_cpu_ns <= seen < own_cpu_ns + 20_000_000
    # The burning thread has ended: the main thread's schedstat alone misses its 0.15 s.
    with open(f"/proc/{proc.pid}/schedstat", encoding="ascii") as file:
        main_thread_ns = int(file.read().split()[0])
    assert seen - main_thread_ns > 140_000_000


def test_the_tree_sums_every_process(child: tuple[subprocess.Popen[str], int]) -> None:
    proc, _ = child
    root = psutil.Process(proc.pid)
    tree = [root, *root.children(recursive=True)]
    got = process_metrics.measure(proc.pid)
    assert got.processes == 3
    assert got.threads == 6
    assert got.open_fds == sum(p.num_fds() for p in tree)
    assert got.open_fds >= 3 * 7
    # Each process burnt at least 0.15 s in its ended thread.
    assert got.cpu_seconds > 3 * 0.15
    # /proc's tick counters agree to within their resolution (10 ms per process and field).
    ticks = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
    assert abs(got.cpu_seconds - ticks) < 3 * 2 * 0.011 + 0.01
    rss = sum(p.memory_info().rss for p in tree)
    assert abs(got.resident_bytes - rss) <= 0.02 * rss
    assert abs(got.start_time - root.create_time()) < 0.05
    assert got.max_fds == root.rlimit(psutil.RLIMIT_NOFILE)[0]


def test_a_process_that_is_gone_is_skipped_not_fatal() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    got = process_metrics.measure(proc.pid)
    assert got.processes == 0 and got.cpu_seconds == 0.0


def test_render_uses_the_prometheus_process_names() -> None:
    """A fresh process with no children renders itself: one process, one thread, its own CPU."""
    code = ("import time\nfrom servers import process_metrics\nend = time.process_time() + 0.05\n"
            "while time.process_time() < end: pass\nprint(process_metrics.render_tree())")
    text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=True).stdout
    assert metric_value(text, "serverlab_process_tree_processes") == 1
    assert metric_value(text, "process_threads") == 1
    cpu = metric_value(text, "process_cpu_seconds_total")
    assert cpu is not None and 0.05 <= cpu < 5
    fds = metric_value(text, "process_open_fds")
    assert fds is not None and 3 <= fds < 100
    for name, kind, _attr, _text in process_metrics.FAMILIES:
        assert f"# TYPE {name} {kind}\n{name} " in text
