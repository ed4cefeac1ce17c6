"""`make up` / `status` / `down` end to end, as a person runs them, on the native backend.

Each test uses its own run folder, PostgreSQL port and server ports, so it never touches a
stack the person already runs (nor the test session's servers).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from lab.stack import pg_config, procs
from servers import settings

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]


def make(target: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", target], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def lab_env() -> Iterator[dict[str, str]]:
    # Under the repo, not pytest's tmp dir (mode 700 for root: PostgreSQL's home would move out of it).
    folder = Path(tempfile.mkdtemp(prefix="e2e-", dir=REPO / ".lab"))
    folder.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env.update({
        "LAB_BACKEND": "native",
        "LAB_STATE_DIR": str(folder),
        "LAB_PG_PORT": str(procs.free_port()),
        "LAB_WORKERS": "2",
        "LAB_POOL_SIZE": "3",
    })
    for model in settings.MODELS:
        env[f"LAB_{model.upper()}_PORT"] = str(procs.free_port())
    if os.environ.get("LAB_DATABASE_URL"):
        env["LAB_DATABASE_URL"] = os.environ["LAB_DATABASE_URL"]
    yield env
    make("down", env)  # whatever a test left, stopped
    make("clean", env)  # and removed, with PostgreSQL's home when it is not under the folder
    shutil.rmtree(folder, ignore_errors=True)


def state(env: dict[str, str]) -> dict:
    return json.loads((Path(env["LAB_STATE_DIR"]) / "state.json").read_text())


def postmaster_pid(env: dict[str, str]) -> int | None:
    pidfile = pg_config.PgConfig.from_env(env).data_dir / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


def test_up_status_up_again_down(lab_env: dict[str, str]) -> None:
    first = make("up", lab_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "backend: native" in first.stdout
    servers = state(lab_env)["servers"]
    assert set(servers) == set(settings.MODELS)
    for model, record in servers.items():
        port = int(lab_env[f"LAB_{model.upper()}_PORT"])
        assert record["port"] == port
        assert procs.get(f"http://127.0.0.1:{port}/health")[0] == 200
        row = next(line for line in first.stdout.splitlines() if line.startswith(model + " "))
        assert f"http://127.0.0.1:{port}" in row and str(record["pid"]) in row and "healthy" in row
        assert " 3 " in row  # the pool size column shows LAB_POOL_SIZE
    pids = {m: r["pid"] for m, r in servers.items()}
    pg_pid = postmaster_pid(lab_env)

    status = make("status", lab_env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.count("healthy") >= len(settings.MODELS)

    again = make("up", lab_env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already running and healthy") == len(settings.MODELS)
    assert {m: r["pid"] for m, r in state(lab_env)["servers"].items()} == pids

    workers = [c.pid for c in psutil.Process(pids["multiproc"]).children()]
    assert len(workers) == 2
    down = make("down", lab_env)
    assert down.returncode == 0, down.stdout + down.stderr
    for pid in [*pids.values(), *workers, *([pg_pid] if pg_pid else [])]:
        assert gone(pid), f"pid {pid} still runs after make down"
    after = make("status", lab_env)
    assert after.returncode != 0 and "nothing is running" in after.stdout


def test_port_conflict_is_reported_and_nothing_is_left(lab_env: dict[str, str]) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", int(lab_env["LAB_ASYNCIO_PORT"])))
    holder.listen()
    try:
        done = make("up", lab_env)
    finally:
        holder.close()
    assert done.returncode != 0
    assert f"port {lab_env['LAB_ASYNCIO_PORT']}" in done.stderr and "already in use" in done.stderr
    assert "LAB_PORT" in done.stderr or "LAB_ASYNCIO_PORT" in done.stderr
    leftover = [p for p in psutil.process_iter(["cmdline", "environ"])
                if _ours(p, lab_env["LAB_STATE_DIR"], lab_env["LAB_PG_PORT"])]
    assert not leftover, f"a failed up left processes running: {[p.pid for p in leftover]}"
    assert postmaster_pid(lab_env) is None or gone(postmaster_pid(lab_env) or 0)


def _ours(proc: psutil.Process, state_dir: str, pg_port: str) -> bool:
    try:
        cmd = " ".join(proc.info["cmdline"] or [])
        env = proc.info["environ"] or {}
    except (psutil.Error, TypeError):
        return False
    return ("-m servers" in cmd and env.get("LAB_STATE_DIR") == state_dir) or f"port={pg_port}" in cmd
