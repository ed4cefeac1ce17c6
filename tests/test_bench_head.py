"""make bench sends the request head make load's Locust sends: checked on the wire, with a real Locust
run against a real socket (so a Locust upgrade that changes its headers fails here, not in a figure);
and its wrk waits --think-ms after each response before the next request, seen on the wire too."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lab.bench import wrk
from tests.conftest import debian_tool

pytestmark = pytest.mark.integration

LOCUSTFILE = '''
from locust import FastHttpUser, constant, task
class U(FastHttpUser):
    wait_time = constant(5)
    @task
    def t(self):
        self.client.get("/json")
'''


def test_the_locust_head_is_what_locust_sends(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    port = listener.getsockname()[1]
    seen: list[bytes] = []

    def accept_one() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                seen.append(data)

    thread = threading.Thread(target=accept_one)
    thread.start()
    (tmp_path / "lf.py").write_text(LOCUSTFILE)
    subprocess.run([sys.executable, "-m", "locust", "-f", str(tmp_path / "lf.py"), "--headless", "-u", "1",
                    "-r", "1", "-t", "3s", "-H", f"http://127.0.0.1:{port}"],
                   capture_output=True, timeout=60, check=False, cwd=tmp_path)
    thread.join(25)
    assert seen, "Locust sent no request"
    lines = seen[0].decode("latin-1").split("\r\n")[1:]
    sent = sorted(line for line in lines if line and not line.lower().startswith("host:"))
    flags = wrk.head_flags("locust")
    assert sorted(flags[1::2]) == sent and set(flags[0::2]) == {"-H"}
    assert wrk.head_flags("bare") == []



class _Stamped(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection carries every request
    arrivals: list[float] = []

    def do_GET(self) -> None:
        self.arrivals.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def _gaps(think_ms: int) -> list[float]:
    """Seconds between consecutive requests of wrk's one connection over one second."""
    _Stamped.arrivals = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stamped)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        wrk.run_wrk(f"http://127.0.0.1:{server.server_address[1]}/json", 1, 1, None, "locust", think_ms)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    times = sorted(_Stamped.arrivals)
    return [b - a for a, b in itertools.pairwise(times)]


def test_wrk_waits_the_think_time_after_every_response_and_not_otherwise() -> None:
    debian_tool(Path("/usr/bin/wrk"), "wrk")
    paced = _gaps(20)
    assert len(paced) >= 5 and min(paced) >= 0.019, paced  # a slow machine only widens the gaps
    assert min(_gaps(0)) < 0.010  # without it, wrk sends the next request as soon as it can
