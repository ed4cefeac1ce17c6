"""lab.stack.procs against real server processes (`python -m servers <model>`) and real sockets."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from lab.stack import procs
from lab.stack.procs import ServerProcess, StartError
from tests.conftest import MODELS

pytestmark = pytest.mark.integration


def gone(pid: int) -> bool:
    """No such process, or a zombie (this machine's init may never reap orphans)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def processes_with(needle: str) -> list[int]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if needle in " ".join(p.info["cmdline"] or []) and not gone(p.pid):
            found.append(p.pid)
    return found


def test_free_port_is_free_and_bindable() -> None:
    port = procs.free_port()
    assert 1024 <= port < 65536 and not procs.port_in_use(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_server_argv() -> None:
    assert procs.server_argv("asyncio", 8003, ["--pool-size", "3"]) == [
        sys.executable, "-m", "servers", "asyncio", "--port", "8003", "--pool-size", "3"]


def test_session_servers_are_healthy_with_the_test_settings(server: ServerProcess) -> None:
    assert server.alive()
    status, body = procs.get(server.url + "/health")
    assert status == 200, body
    status, body = procs.get(server.url + "/config")
    config = json.loads(body)
    assert status == 200 and config["model"] == server.model and config["port"] == server.port
    assert config["pool_size"] == 4 and config["acquire_timeout"] == 2
    assert config["workers"] == (2 if server.model == "multiproc" else 1)
    assert "effective settings" in server.log_path.read_text()


def test_taken_port_is_refused_before_starting(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(procs.PortInUseError) as info:
            procs.start_server("threaded", port=port, database_url=database_url, log_dir=tmp_path)
    message = str(info.value)
    assert f"port {port}" in message and "already in use" in message and "LAB_PORT" in message
    assert not (tmp_path / "threaded.log").exists()  # nothing was started


@pytest.mark.parametrize("model", MODELS)
def test_server_dying_at_start_raises_naming_the_log(model: str, database_url: str, tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(StartError) as info:
        procs.start_server(model, port=procs.free_port(), database_url=database_url, log_dir=tmp_path,
                           args=["--pool-size", "0"])
    message = str(info.value)
    assert time.monotonic() - began < 15  # fails fast, not at the health timeout
    assert "exited with code 2 while starting" in message
    assert str(tmp_path / f"{model}.log") in message
    assert "--pool-size must be from 1 to 1000" in message  # the log's tail is quoted


def test_unhealthy_server_times_out_and_is_stopped(tmp_path: Path) -> None:
    port = procs.free_port()
    nowhere = f"postgresql://serverlab@127.0.0.1:{procs.free_port()}/nothing_listens_here"
    began = time.monotonic()
    with pytest.raises(StartError) as info:
        procs.start_server("threaded", port=port, database_url=nowhere, log_dir=tmp_path, health_timeout=3)
    assert time.monotonic() - began < 20
    assert str(tmp_path / "threaded.log") in str(info.value)
    assert not processes_with(f"--port {port}")
    assert not procs.port_in_use(port)


def test_wait_healthy_gives_up_in_time() -> None:
    began = time.monotonic()
    with pytest.raises(StartError, match="not healthy within"):
        procs.wait_healthy(f"http://127.0.0.1:{procs.free_port()}", 0.5)
    assert time.monotonic() - began < 3


@pytest.mark.parametrize("model", MODELS)
def test_stop_server_leaves_no_process(model: str, server_factory) -> None:
    proc = server_factory(model)
    tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    if model == "multiproc":
        assert len(tree) >= 3, "expected a parent and two workers"
    code = procs.stop_server(proc)
    assert code in (0, -signal.SIGTERM), f"{model} did not stop on SIGTERM (exit {code})"
    assert all(gone(pid) for pid in tree), [pid for pid in tree if not gone(pid)]
    assert not procs.port_in_use(proc.port)
    assert procs.stop_server(proc) == code  # a second stop is harmless


def test_stop_pid_stops_a_server_started_elsewhere(database_url: str, tmp_path: Path) -> None:
    proc = procs.start_server("asyncio", port=procs.free_port(), database_url=database_url, log_dir=tmp_path)
    try:
        procs.stop_pid(proc.pid, "asyncio", timeout=10)
        assert gone(proc.pid)
        assert not procs.port_in_use(proc.port)
    finally:
        procs.stop_server(proc)


STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_stop_server_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    # A process tree that ignores SIGTERM, wrapped as a server, to exercise the SIGKILL path.
    popen = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE,
                             start_new_session=True)
    assert popen.stdout is not None
    child = int(popen.stdout.readline())
    proc = ServerProcess("stubborn", "127.0.0.1", 0, popen.pid, tmp_path / "none.log", popen)
    began = time.monotonic()
    assert procs.stop_server(proc, timeout=1.0) == -signal.SIGKILL
    assert time.monotonic() - began < 5
    assert gone(popen.pid) and gone(child)
    popen.stdout.close()


def _client_on(port: int, server: socket.socket) -> tuple[socket.socket, socket.socket]:
    """A client connection whose local port is `port` (no SO_REUSEADDR, as pip's are), and its peer."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.bind(("127.0.0.1", port))
    client.connect(server.getsockname())
    peer, _ = server.accept()
    return client, peer


def test_a_port_held_by_a_closing_client_is_waited_for_and_a_listener_is_not() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = procs.free_port()
        client, peer = _client_on(port, server)
        peer.close()  # the far end closes first; our end lingers in CLOSE_WAIT until closed below
        assert procs.port_in_use(port) and not procs.listener(port)
        assert not procs.wait_for_port(port, timeout=0.6, say=lambda _: None)
        threading.Timer(0.5, client.close).start()  # the passive closer's port is free at once
        said: list[str] = []
        began = time.monotonic()
        assert procs.wait_for_port(port, timeout=10, say=said.append)
        assert time.monotonic() - began < 5
        assert said and "closing connection" in said[0]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        taken = listening.getsockname()[1]
        began = time.monotonic()
        assert not procs.wait_for_port(taken, timeout=10, say=lambda _: None)
        assert time.monotonic() - began < 1  # a server holds it: no point in waiting
