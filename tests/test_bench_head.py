"""make bench sends the request head make load's Locust sends: checked on the wire, with a real Locust
run against a real socket (so a Locust upgrade that changes its headers fails here, not in a figure)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lab.bench import bench

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
    flags = bench.head_flags("locust")
    assert sorted(flags[1::2]) == sent and set(flags[0::2]) == {"-H"}
    assert bench.head_flags("bare") == []

