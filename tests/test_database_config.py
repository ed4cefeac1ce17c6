"""lab.stack.database's configuration: URLs, knobs, and where PostgreSQL's home goes (no server started)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from lab.stack import database, pg_config
from lab.stack.pg_config import PgConfig, PostgresError

pytestmark = pytest.mark.unit


# --- URLs ------------------------------------------------------------------------------------


def test_database_url_prefers_lab_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_DATABASE_URL", "postgresql://someone@db.example:5432/elsewhere")
    assert pg_config.database_url() == "postgresql://someone@db.example:5432/elsewhere"
    monkeypatch.delenv("LAB_DATABASE_URL")
    monkeypatch.setenv("LAB_PG_PORT", "55001")
    assert pg_config.database_url() == "postgresql://serverlab@127.0.0.1:55001/serverlab"
    assert pg_config.embedded_url("other") == "postgresql://serverlab@127.0.0.1:55001/other"
    monkeypatch.delenv("LAB_PG_PORT")
    assert pg_config.database_url() == "postgresql://serverlab@127.0.0.1:54320/serverlab"


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_bad_port_setting_says_which(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LAB_PG_PORT", value)
    with pytest.raises(PostgresError, match="LAB_PG_PORT"):
        PgConfig.from_env()


# --- PostgreSQL's home ------------------------------------------------------------------------


def test_home_is_the_run_folder_when_others_may_enter_it() -> None:
    open_dir = Path(tempfile.mkdtemp(prefix="serverlab-open-"))  # under /tmp: everyone may enter
    try:
        open_dir.chmod(0o755)
        state = open_dir / "clone" / ".lab"
        env = {"LAB_STATE_DIR": str(state)}
        assert pg_config.pg_home(env) == (state, "")
        cfg = PgConfig.from_env(env)
        assert cfg.data_dir == state / "pgdata" and cfg.log_path == state / "postgres.log"
    finally:
        shutil.rmtree(open_dir)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root moves the home (PostgreSQL runs as serverlab-pg)")
def test_root_moves_the_home_out_of_a_closed_directory() -> None:
    closed = Path(tempfile.mkdtemp(prefix="serverlab-home-"))  # mode 700 under /tmp, like /root
    try:
        state = closed / "clone" / ".lab"
        home, reason = pg_config.pg_home({"LAB_STATE_DIR": str(state)})
        assert home.parent == pg_config.HOMES and len(home.name) == 12
        assert reason == f"serverlab-pg cannot enter {closed} (mode drwx------)"
        assert pg_config.pg_home({"LAB_STATE_DIR": str(state)})[0] == home  # the same clone, the same home
        assert pg_config.pg_home({"LAB_STATE_DIR": str(closed / "other" / ".lab")})[0] != home
        cfg = PgConfig.from_env({"LAB_STATE_DIR": str(state)})
        assert cfg.data_dir == home / "pgdata" and cfg.home_dir == home
    finally:
        closed.rmdir()


def test_lab_pg_home_and_lab_pg_data_win(tmp_path: Path) -> None:
    env = {"LAB_STATE_DIR": str(tmp_path / "state"), "LAB_PG_HOME": str(tmp_path / "pg")}
    assert pg_config.pg_home(env) == (tmp_path / "pg", f"LAB_PG_HOME={tmp_path / 'pg'}")
    assert PgConfig.from_env(env).data_dir == tmp_path / "pg" / "pgdata"
    env["LAB_PG_DATA"] = str(tmp_path / "data")
    cfg = PgConfig.from_env(env)
    assert cfg.data_dir == tmp_path / "data" and cfg.home_dir == tmp_path / "pg"


def test_clean_removes_what_the_home_holds_and_nothing_else(tmp_path: Path) -> None:
    home = tmp_path / "pg"
    cfg = PgConfig(bin_dir=tmp_path / "bin", data_dir=home / "pgdata", home=home)
    for path in (cfg.data_dir / "base", home / pg_config.COPY / "pgserver"):
        path.mkdir(parents=True)
    cfg.log_path.write_text("log")
    (home / "keep.txt").write_text("not ours")
    removed = database.clean(cfg)
    assert set(removed) == {cfg.data_dir, cfg.log_path, home / pg_config.COPY}
    assert sorted(p.name for p in home.iterdir()) == ["keep.txt"]
    assert database.clean(cfg) == []
