"""A slow query in one request must not stall another, on all four servers (gevent is the one at risk).

Against the session's real servers and database: holds a pooled connection with GET /hold?ms=3000
from one thread and, while that request is still in flight, expects GET /db and GET /io?ms=10
to answer 200.
Without psycogreen (or without monkey-patching) the gevent server would block its only OS
thread in libpq and answer /db only after /hold.
"""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from lab.stack.procs import ServerProcess

pytestmark = pytest.mark.integration

HOLD_MS = 3000


def _get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def port(server: ServerProcess) -> int:
    """Each of the four session servers (pool size 4) in turn."""
    return server.port


def _pool_in_use(port: int) -> int:
    _status, body = _get(port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("serverlab_pool_in_use "):
            return int(line.split()[1])
    raise AssertionError("serverlab_pool_in_use missing from /metrics")


def test_slow_query_does_not_stall_other_requests(port: int) -> None:
    held: dict[str, object] = {}

    def hold() -> None:
        try:
            held["status"], held["body"] = _get(port, f"/hold?ms={HOLD_MS}")
        except Exception as exc:  # surfaced by the assertions below
            held["error"] = exc

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    # Wait until /hold really holds its pool connection (it sits in pg_sleep).
    deadline = time.monotonic() + 2
    while _pool_in_use(port) < 1:
        assert time.monotonic() < deadline, "GET /hold never took a pool connection"
        assert holder.is_alive(), f"GET /hold ended early: {held}"
        time.sleep(0.02)

    db_status, db_body = _get(port, "/db")
    io_status, io_body = _get(port, "/io?ms=10")

    # Ordering, not absolute timing: both answered while /hold is still in flight.
    assert holder.is_alive() and not held, f"/hold finished before /db and /io answered: {held}"
    assert db_status == 200, db_body
    assert set(json.loads(db_body)) == {"id", "randomNumber"}
    assert io_status == 200, io_body
    assert json.loads(io_body) == {"waited_ms": 10}

    holder.join(timeout=HOLD_MS / 1000 + 10)
    assert not holder.is_alive(), "GET /hold never answered"
    assert held.get("status") == 200, held
    assert json.loads(held["body"]) == {"held_ms": HOLD_MS}  # type: ignore[arg-type]
