"""The multiproc parent supervises its workers: restart after kill -9, clean SIGTERM, merged metrics.

A real `python -m servers multiproc --workers 2` process (server_factory) against the test database.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

import psutil
import pytest

from tests.conftest import ServerFactory

pytestmark = pytest.mark.integration

T = TypeVar("T")


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll `probe` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, psutil.Error) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last})")


def workers(parent: psutil.Process) -> set[int]:
    return {child.pid for child in parent.children() if child.status() != psutil.STATUS_ZOMBIE}


def processes_gauge(base: str) -> int:
    status, body = get(f"{base}/metrics")
    assert status == 200, body
    match = re.search(r"^serverlab_processes (\d+)$", body, re.MULTILINE)
    assert match, body
    return int(match.group(1))


@pytest.fixture()
def server(server_factory: ServerFactory) -> tuple[subprocess.Popen[bytes], str]:
    proc = server_factory("multiproc", env={"LAB_WORKERS": "2", "LAB_LOG_LEVEL": "warning"})
    return proc.popen, proc.url


def test_worker_restart_metrics_and_clean_stop(server: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, base = server
    parent = psutil.Process(proc.pid)
    first = wait_for("two workers", lambda: w if len(w := workers(parent)) == 2 else None)

    # /metrics answers for the whole server: every worker's snapshot file is merged in.
    for _ in range(10):
        assert get(f"{base}/json")[0] == 200
    wait_for("serverlab_processes == 2", lambda: processes_gauge(base) == 2, timeout=10)

    # kill -9 one worker: the parent starts a new one and the server keeps answering.
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    survivors = wait_for(
        "a replacement worker",
        lambda: w if len(w := workers(parent)) == 2 and victim not in w else None,
        timeout=15,
    )
    assert survivors != first
    for _ in range(10):
        status, body = get(f"{base}/json")
        assert status == 200 and body == '{"message":"Hello, World!"}'
    assert get(f"{base}/db")[0] == 200
    # The dead worker's snapshot is gone, the new one's has arrived.
    wait_for("serverlab_processes == 2 after the restart", lambda: processes_gauge(base) == 2,
             timeout=10)
    assert proc.poll() is None

    # SIGTERM: workers stop, the parent exits 0 and leaves no child behind.
    children = parent.children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"workers left running: {[p.pid for p in alive]}"
