"""LAB_EXTRA_CPU_US, the lab-only knob that adds a fixed amount of CPU work to every request: each of the
four servers spends measurably more CPU per request with it (process CPU time over a burst of real
requests, with and without, side by side), and neither `make up` nor `make load` takes it from a shell
without its opt-in."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from lab import knobs
from lab.load import settings as load_settings
from lab.stack import procs
from servers.settings import MODELS
from tests.conftest import ServerFactory

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
EXTRA_US = 300.0
BURST = 300


def tree_cpu_seconds(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        t = proc.cpu_times()
        total += t.user + t.system
    return total


def cpu_us_per_request(server: procs.ServerProcess, path: str = "/json") -> float:
    """The server tree's CPU time over a burst of keep-alive requests, per request."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for _ in range(20):  # warm: code paths, the connection
            conn.request("GET", path)
            conn.getresponse().read()
        before = tree_cpu_seconds(server.pid)
        for _ in range(BURST):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        return (tree_cpu_seconds(server.pid) - before) / BURST * 1e6
    finally:
        conn.close()


def config(server: procs.ServerProcess) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/config")
        data: dict[str, object] = json.loads(conn.getresponse().read())
        return data
    finally:
        conn.close()


@pytest.mark.parametrize("model", MODELS)
def test_each_server_spends_the_extra_cpu_in_every_request(server_factory: ServerFactory, model: str) -> None:
    plain = server_factory(model)
    slowed = server_factory(model, env={"LAB_EXTRA_CPU_US": str(EXTRA_US)})
    assert config(plain)["extra_cpu_us"] == 0 and config(slowed)["extra_cpu_us"] == EXTRA_US
    # Side by side, alternated, the lower of two bursts each: CPU time, not wall time, so a busy
    # machine delays the bursts but hardly changes what they cost.
    base = min(cpu_us_per_request(plain), cpu_us_per_request(plain))
    more = min(cpu_us_per_request(slowed), cpu_us_per_request(slowed))
    assert more > 1.5 * base and more - base > EXTRA_US / 3, (model, base, more)


def test_a_shell_knob_reaches_no_server_unless_passed(server_factory: ServerFactory,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_EXTRA_CPU_US", "500")
    monkeypatch.setenv("LAB_ALLOW_BLOCKING", "1")
    inherited = config(server_factory("asyncio"))
    assert inherited["extra_cpu_us"] == 0 and inherited["allow_blocking"] is False


def test_a_bad_value_is_refused_by_the_server() -> None:
    done = subprocess.run([sys.executable, "-m", "servers", "threaded", "--extra-cpu-us", "-5"],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert done.returncode == 2 and "LAB_EXTRA_CPU_US / --extra-cpu-us must be from 0" in done.stderr


def test_make_up_refuses_it_unless_asked_for(tmp_path: Path) -> None:
    env = {**os.environ, "LAB_EXTRA_CPU_US": "50", "LAB_STATE_DIR": str(tmp_path / "state")}
    env.pop("LAB_ALLOW_EXTRA_CPU", None)
    done = subprocess.run([sys.executable, "-m", "lab", "up"], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "lab-only" in done.stderr and "LAB_ALLOW_EXTRA_CPU=1 (--allow-extra-cpu)" in done.stderr
    assert not (tmp_path / "state").exists()  # refused before anything started


def test_make_load_refuses_it_unless_asked_for() -> None:
    env = {"LAB_EXTRA_CPU_US": "50"}
    parser = load_settings.build_parser()
    with pytest.raises(load_settings.RunError, match="LAB_ALLOW_EXTRA_CPU=1"):
        load_settings.from_args(parser.parse_args([]), env)
    asked = load_settings.from_args(parser.parse_args(["--allow-extra-cpu"]), env)
    assert asked.server_env["LAB_EXTRA_CPU_US"] == "50"
    assert knobs.lab_only_asked({"LAB_EXTRA_CPU_US": "0"}) == {}  # zero is off: nothing to refuse
    assert knobs.lab_only_asked({"LAB_EXTRA_CPU_US": "9", "LAB_ALLOW_EXTRA_CPU": "1"}) == {
        "LAB_EXTRA_CPU_US": "9"}
