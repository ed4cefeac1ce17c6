"""lab.stack.database against real PostgreSQL: the session database and a scratch embedded server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from lab.stack import database, pg_config
from lab.stack.pg_config import PgConfig, PostgresError
from lab.stack.procs import free_port, port_in_use

pytestmark = pytest.mark.integration

IS_ROOT = os.geteuid() == 0


def counts(conn) -> dict[str, int]:
    with conn.cursor() as cur:
        out = {}
        for table in ("world", "fortune", "orders"):
            cur.execute(f"SELECT count(*) FROM {table}")
            out[table] = cur.fetchone()[0]
        return out


# --- the session database --------------------------------------------------------------------


def test_provision_twice_is_idempotent_and_fast(database_url: str, db) -> None:
    before = counts(db)
    began = time.monotonic()
    assert database.provision("serverlab_test") == database_url
    assert time.monotonic() - began < 5.0
    after = counts(db)
    assert after["world"] == 10_000
    assert after["fortune"] == 12
    assert after == before


def test_schema_and_seed_reapply_does_not_duplicate(database_url: str, db) -> None:
    before = counts(db)
    database.apply_schema(database_url)
    database.apply_schema(database_url)
    assert counts(db) == before
    with db.cursor() as cur:
        cur.execute("SELECT count(DISTINCT id), min(id), max(id), min(randomnumber), max(randomnumber) "
                    "FROM world")
        distinct, low, high, rn_low, rn_high = cur.fetchone()
        cur.execute("SELECT message FROM fortune ORDER BY id")
        messages = [row[0] for row in cur.fetchall()]
    assert (distinct, low, high) == (10_000, 1, 10_000)
    assert rn_low >= 1 and rn_high <= 10_000
    assert messages[10].startswith("<script>") and messages[11] == "フレームワークのベンチマーク"


# --- a scratch embedded server (own data dir and port; the session server is not touched) -----


@pytest.fixture(scope="module")
def scratch_root() -> Iterator[Path]:
    # Under /tmp, searchable by others: as root, PostgreSQL runs as serverlab-pg and must get in.
    root = Path(tempfile.mkdtemp(prefix="serverlab-pgtest-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def scratch(scratch_root: Path) -> Iterator[PgConfig]:
    cfg = PgConfig(bin_dir=PgConfig.from_env().bin_dir, data_dir=scratch_root / "pgdata", port=free_port(),
                   max_connections=40)
    try:
        yield cfg
    finally:
        database.stop(cfg)


def test_embedded_stop_start_cycle(scratch: PgConfig, capsys: pytest.CaptureFixture[str]) -> None:
    assert not database.is_running(scratch)
    assert not database.status(scratch).initialised

    assert database.start(scratch) is True
    err = capsys.readouterr().err
    assert "initialising PostgreSQL data dir" in err
    assert f"starting PostgreSQL on 127.0.0.1:{scratch.port}" in err
    state = database.status(scratch)
    assert state.running and state.port == scratch.port and state.pid
    postmaster = psutil.Process(state.pid)
    if IS_ROOT:
        assert postmaster.username() == pg_config.PG_SYSTEM_USER
    listening = [c.laddr for c in postmaster.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)

    assert database.start(scratch) is False  # already running: a no-op that says so
    assert "already running" in capsys.readouterr().err

    url = pg_config.embedded_url("postgres", scratch.port)
    conn = database.connect(url)
    with conn.cursor() as cur:
        cur.execute("SHOW max_connections")
        assert cur.fetchone()[0] == "40"
        cur.execute("CREATE TABLE kept (v text)")
        cur.execute("INSERT INTO kept VALUES ('survives a restart')")
    conn.close()

    with pytest.raises(PostgresError, match="LAB_PG_PORT"):
        database.start(replace(scratch, port=free_port()))  # same data dir, another port

    assert database.stop(scratch) is True
    assert not database.is_running(scratch)
    assert not port_in_use(scratch.port)
    assert database.stop(scratch) is False

    assert database.start(scratch) is True
    assert "initialising" not in capsys.readouterr().err
    conn = database.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT v FROM kept")
        assert cur.fetchall() == [("survives a restart",)]
    conn.close()
    assert database.stop(scratch) is True


def test_ensure_database_creates_once(scratch: PgConfig) -> None:
    database.start(scratch)
    url = pg_config.embedded_url("made_by_test", scratch.port)
    assert database.ensure_database(url, "made_by_test") is True
    assert database.ensure_database(url, "made_by_test") is False
    database.apply_schema(url)
    database.apply_schema(url)
    conn = database.connect(url)
    assert counts(conn) == {"world": 10_000, "fortune": 12, "orders": 0}
    conn.close()


def test_pinned_holds_postmaster_and_new_backends_then_gives_the_affinity_back(scratch: PgConfig) -> None:
    database.start(scratch)
    pid = database.status(scratch).pid
    assert pid
    before = sorted(os.sched_getaffinity(pid))
    target = [max(before)]
    with database.pinned(target, scratch) as cpus:
        assert cpus == target
        assert sorted(os.sched_getaffinity(pid)) == target
        conn = database.connect(pg_config.embedded_url("postgres", scratch.port))
        with conn.cursor() as cur:  # a backend forked after pinning inherits it
            cur.execute("SELECT pg_backend_pid()")
            backend = cur.fetchone()[0]
        assert sorted(os.sched_getaffinity(backend)) == target
        conn.close()
    assert sorted(os.sched_getaffinity(pid)) == before
    with database.pinned(None, scratch) as cpus:
        assert cpus is None


def test_taken_port_is_a_clear_error(scratch_root: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        cfg = PgConfig(bin_dir=PgConfig.from_env().bin_dir, data_dir=scratch_root / "taken", port=port)
        with pytest.raises(PostgresError) as info:
            database.start(cfg)
    assert f"port {port}" in str(info.value) and "LAB_PG_PORT" in str(info.value)
    assert not database.is_running(cfg)


def test_start_failure_names_the_log_and_quotes_it(scratch_root: Path) -> None:
    cfg = PgConfig(bin_dir=PgConfig.from_env().bin_dir, data_dir=scratch_root / "broken", port=free_port(),
                   max_connections=0)  # PostgreSQL rejects this at start
    with pytest.raises(PostgresError) as info:
        database.start(cfg)
    message = str(info.value)
    assert str(cfg.log_path) in message and "max_connections" in message
    assert not database.is_running(cfg)


@pytest.mark.skipif(not IS_ROOT, reason="only root hands PostgreSQL to another user")
def test_root_needs_searchable_parents() -> None:
    private = Path(tempfile.mkdtemp(prefix="serverlab-private-"))  # mode 0700, owned by root
    try:
        cfg = PgConfig(bin_dir=PgConfig.from_env().bin_dir, data_dir=private / "pgdata", port=free_port())
        with pytest.raises(PostgresError) as info:
            database.start(cfg)
        assert str(private) in str(info.value) and "LAB_PG_DATA" in str(info.value)

        hidden_bin = private / "bin"  # binaries the server user cannot reach
        hidden_bin.mkdir()
        for name in ("initdb", "pg_ctl", "postgres"):
            (hidden_bin / name).touch(mode=0o755)
        cfg = replace(cfg, bin_dir=hidden_bin, data_dir=Path("/tmp") / private.name)
        with pytest.raises(PostgresError) as info:
            database.start(cfg)
        assert str(private) in str(info.value) and "LAB_PG_BIN" in str(info.value)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_cli_url_and_status(scratch_root: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LAB_DATABASE_URL"}
    env.update(LAB_PG_PORT="55002", LAB_PG_DATA=str(scratch_root / "cli"))
    url = subprocess.run([sys.executable, "-m", "lab.stack.database", "url"], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    assert url.stdout.strip() == "postgresql://serverlab@127.0.0.1:55002/serverlab"
    state = subprocess.run([sys.executable, "-m", "lab", "database", "status"], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert state.returncode == 3 and "not running" in state.stdout
