"""PostgreSQL for the lab: the one module that provisions it.

`provision()` is the call tests and `make up` use. With LAB_DATABASE_URL set it only applies the
schema and seed there; otherwise it runs an embedded PostgreSQL from the binaries the `pgserver`
pip package ships (driven with initdb/pg_ctl directly), creates the database and applies the
schema and seed. PostgreSQL refuses to run as root, so as root the server runs as the system user
`serverlab-pg`, created on first use.

The PostgreSQL home holds the data dir, the log and (when needed) a copy of pgserver's binaries:
the run folder LAB_STATE_DIR (.lab) by default. As root, when serverlab-pg cannot enter the run
folder (a clone under a mode-700 home such as /root), the home is /var/lib/serverlab/<hash of the
run folder's path> instead, and pgserver's binaries are copied there; `clean()` removes it.

Knobs: LAB_DATABASE_URL, LAB_PG_PORT (54320), LAB_PG_HOME (see above; flag --pg-home),
LAB_PG_DATA (<home>/pgdata), LAB_PG_MAX_CONNECTIONS (300), LAB_PG_BIN (a PostgreSQL bin dir
instead of pgserver's).
CLI: `python -m lab database {up,down,status,url,clean}`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from lab.cpus import pin_tree
from lab.hosts import netns
from lab.stack.pg_config import (
    COPY,
    HOMES,
    PgConfig,
    PostgresError,
    database_url,
    embedded_url,
    say,
    with_database,
)
from lab.stack.pg_user import RunAs, check_owner, make_home, prepare_dirs, run_as, with_binaries
from lab.stack.procs import log_tail, port_user, wait_for_port
from servers.settings import redact

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "db" / "schema.sql"
SEED = REPO / "db" / "seed.sql"
SUPERUSER = "serverlab"
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
STOP_TIMEOUT = 30
LOG_TAIL_LINES = 25


def clean(cfg: PgConfig | None = None) -> list[Path]:
    """Remove the (stopped) server's data dir, log, lock and binaries copy; a home under /var/lib/serverlab
    goes entirely. Returns what was removed."""
    cfg = cfg or PgConfig.from_env()
    if is_running(cfg):
        raise PostgresError(f"PostgreSQL of {cfg.data_dir} still runs: `python -m lab database down` first")
    removed = []
    home = cfg.home_dir
    for path in (cfg.data_dir, cfg.log_path, cfg.lock_path, home / COPY, home / (COPY + ".tmp")):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path)
    if home.parent == HOMES and home.is_dir() and not any(home.iterdir()):
        home.rmdir()
        removed.append(home)
    with contextlib.suppress(OSError):
        HOMES.rmdir()  # only when empty: other clones' homes stay
    return removed


# --- the embedded server --------------------------------------------------------------------


@dataclass(frozen=True)
class PgStatus:
    running: bool
    pid: int | None
    port: int | None
    data_dir: Path
    log_path: Path
    initialised: bool

    def describe(self) -> str:
        if self.running:
            return (f"PostgreSQL is running (pid {self.pid}) on 127.0.0.1:{self.port}, "
                    f"data {self.data_dir}, log {self.log_path}")
        state = "initialised" if self.initialised else "not initialised"
        return f"PostgreSQL is not running; data dir {self.data_dir} ({state}), log {self.log_path}"


def status(cfg: PgConfig | None = None) -> PgStatus:
    cfg = cfg or PgConfig.from_env()
    pid, port = _postmaster(cfg)
    return PgStatus(pid is not None, pid, port, cfg.data_dir, cfg.log_path,
                    (cfg.data_dir / "PG_VERSION").exists())


def is_running(cfg: PgConfig | None = None) -> bool:
    return status(cfg).running


@contextlib.contextmanager
def pinned(cpus: list[int] | None, cfg: PgConfig | None = None) -> Iterator[list[int] | None]:
    """The lab's own PostgreSQL pinned to `cpus` for the block (backends fork from the postmaster and
    inherit it), its earlier affinity given back after. Yields the CPUs it holds, or None when it was
    left alone: no CPUs asked for, an external LAB_DATABASE_URL, or no lab PostgreSQL running."""
    pg = status(cfg)
    if not cpus or not pg.running or not pg.pid or (cfg is None and os.environ.get("LAB_DATABASE_URL")):
        yield None
        return
    try:
        before = sorted(os.sched_getaffinity(pg.pid))
    except OSError:
        yield None
        return
    pin_tree(pg.pid, cpus)
    try:
        yield cpus
    finally:
        pin_tree(pg.pid, before)


def _postmaster(cfg: PgConfig) -> tuple[int | None, int | None]:
    """(pid, port) of the live postmaster of this data dir, from postmaster.pid."""
    try:
        lines = (cfg.data_dir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None, None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None, None  # stale file after a crash
    except PermissionError:
        pass  # alive, owned by another user
    return pid, port


def _run(cmd: Sequence[str], who: RunAs, timeout: float) -> subprocess.CompletedProcess[str]:
    # Files, not pipes: the postmaster that pg_ctl forks must not hold our pipe open.
    with tempfile.TemporaryFile("w+") as out:
        try:
            done = subprocess.run(
                list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                timeout=timeout, cwd="/", start_new_session=True, check=False, **who.kwargs(),
            )
        except subprocess.TimeoutExpired:
            out.seek(0)
            raise PostgresError(f"{Path(cmd[0]).name} did not finish within {timeout:.0f}s: "
                                f"{out.read().strip()}") from None
        out.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, out.read(), "")


@contextlib.contextmanager
def _locked(cfg: PgConfig) -> Iterator[None]:
    """Serialise start/stop of one data dir across processes (tests and `make up` at once)."""
    cfg.lock_path.parent.mkdir(parents=True, exist_ok=True)
    with cfg.lock_path.open("a") as fh:
        deadline = time.monotonic() + START_TIMEOUT + 30
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PostgresError(f"another process holds {cfg.lock_path} for too long") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _major(text: str) -> str:
    return text.strip().split()[-1].split(".")[0] if text.strip() else "?"


def _initdb(cfg: PgConfig, who: RunAs) -> None:
    say(f"initialising PostgreSQL data dir {cfg.data_dir} ...")
    # initdb into a sibling and rename, so an interrupted initdb never leaves a half-made data dir.
    tmp = cfg.data_dir.with_name(cfg.data_dir.name + ".initdb-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    os.chown(tmp, who.uid, who.gid)
    done = _run([cfg.exe("initdb"), "-D", str(tmp), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                 "--locale=C", "--no-instructions"], who, timeout=180)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PostgresError(f"initdb failed (exit {done.returncode}) for {cfg.data_dir}:\n"
                            f"{done.stdout.strip()}")
    if cfg.data_dir.exists():
        cfg.data_dir.rmdir()  # empty (checked by the caller)
    tmp.rename(cfg.data_dir)


def start(cfg: PgConfig | None = None) -> bool:
    """Start the embedded server; True if started, False if it was already running."""
    cfg = cfg or PgConfig.from_env()
    who = run_as()
    make_home(cfg, who)
    with _locked(cfg):
        pid, port = _postmaster(cfg)
        if pid is not None:
            if port != cfg.port:
                raise PostgresError(
                    f"PostgreSQL of {cfg.data_dir} already runs (pid {pid}) on port {port}, but LAB_PG_PORT "
                    f"asks for {cfg.port}: run `python -m lab database down` first, or use port {port}"
                )
            say(f"PostgreSQL already running on {cfg.listen}:{port} (pid {pid})")
            return False
        if cfg.netns is None and not wait_for_port(cfg.port, say=say):
            raise PostgresError(
                f"port {cfg.port} on 127.0.0.1 is already in use{port_user(cfg.port)}; "
                f"set LAB_PG_PORT to a free port (or stop that program)"
            )
        cfg = with_binaries(cfg, who)
        if cfg.home_reason:
            parts = "data, log and binaries" if cfg.home_dir in cfg.bin_dir.parents else "data and log"
            say(f"PostgreSQL's {parts} are in {cfg.home_dir}: {cfg.home_reason}")
        prepare_dirs(cfg, who)
        check_owner(cfg, who)
        if not (cfg.data_dir / "PG_VERSION").exists():
            if cfg.data_dir.exists() and any(cfg.data_dir.iterdir()):
                raise PostgresError(
                    f"{cfg.data_dir} is not empty but holds no PostgreSQL data dir (no PG_VERSION); "
                    f"remove it or set LAB_PG_DATA to another directory"
                )
            _initdb(cfg, who)
        version = _run([cfg.exe("postgres"), "--version"], who, timeout=30).stdout
        data_major = (cfg.data_dir / "PG_VERSION").read_text().strip()
        if _major(version) != data_major:
            raise PostgresError(
                f"{cfg.data_dir} was made by PostgreSQL {data_major}, "
                f"but {cfg.bin_dir} is {version.strip()}; "
                f"set LAB_PG_BIN to a PostgreSQL {data_major} bin dir or LAB_PG_DATA to a new directory"
            )
        where = f"{cfg.listen}:{cfg.port}" + (f" on test host {cfg.netns}" if cfg.netns else "")
        say(f"starting PostgreSQL on {where} (data {cfg.data_dir}, log {cfg.log_path}) ...")
        _trust(cfg)
        options = (f"-c listen_addresses={cfg.listen} -c port={cfg.port} -c unix_socket_directories='' "
                   f"-c max_connections={cfg.max_connections}")
        cmd = [cfg.exe("pg_ctl"), "start", "-D", str(cfg.data_dir), "-l", str(cfg.log_path), "-w",
               "-t", str(START_TIMEOUT), "-o", options]
        if cfg.netns is not None:
            namespace = cfg.netns
            done = netns.call_in(namespace, lambda: _run(cmd, who, timeout=START_TIMEOUT + 15))
        else:
            done = _run(cmd, who, timeout=START_TIMEOUT + 15)
        if done.returncode != 0 or _postmaster(cfg)[0] is None:
            raise PostgresError(
                f"PostgreSQL did not start on {where}: {done.stdout.strip()}\n"
                f"read {cfg.log_path}; its last lines:\n{log_tail(cfg.log_path, LOG_TAIL_LINES)}"
            )
        say(f"PostgreSQL is up on {where}")
        return True


def _trust(cfg: PgConfig) -> None:
    """Let the test hosts' subnet in as the embedded server lets in 127.0.0.1 (trust: no password)."""
    if not cfg.trust_subnet:
        return
    hba = cfg.data_dir / "pg_hba.conf"
    line = f"host all all {cfg.trust_subnet} trust"
    text = hba.read_text(encoding="utf-8")
    if line not in text.splitlines():
        hba.write_text(text.rstrip("\n") + f"\n# the lab's test hosts\n{line}\n", encoding="utf-8")


def stop(cfg: PgConfig | None = None) -> bool:
    """Stop the embedded server (fast mode, bounded); True if it was running."""
    cfg = cfg or PgConfig.from_env()
    with _locked(cfg):
        pid, _ = _postmaster(cfg)
        if pid is None:
            say(f"PostgreSQL of {cfg.data_dir} is not running")
            return False
        who = run_as()
        cfg = with_binaries(cfg, who)
        say(f"stopping PostgreSQL (pid {pid}) ...")
        ctl = [cfg.exe("pg_ctl"), "stop", "-D", str(cfg.data_dir), "-w", "-t", str(STOP_TIMEOUT)]
        done = _run([*ctl, "-m", "fast"], who, timeout=STOP_TIMEOUT + 15)
        if done.returncode != 0 and _postmaster(cfg)[0] is not None:
            say(f"fast shutdown failed ({done.stdout.strip()}); trying immediate")
            done = _run([*ctl, "-m", "immediate"], who, timeout=STOP_TIMEOUT + 15)
        if _postmaster(cfg)[0] is not None:
            raise PostgresError(f"PostgreSQL (pid {pid}) did not stop: {done.stdout.strip()}; "
                                f"read {cfg.log_path}")
        say("PostgreSQL stopped")
        return True


# --- databases, schema and seed --------------------------------------------------------------


def connect(url: str, **kwargs: Any) -> Any:
    """A psycopg2 connection in autocommit mode, with a bounded connect timeout."""
    conn = psycopg2.connect(url, connect_timeout=10, application_name="serverlab-lab", **kwargs)
    conn.autocommit = True
    return conn


def ensure_database(url: str, dbname: str) -> bool:
    """Create database `dbname` on the server of `url` if missing; True if created."""
    conn = connect(with_database(url, "postgres"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone():
                return False
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
                return False  # created concurrently
            return True
    finally:
        conn.close()


def apply_schema(url: str) -> None:
    """Run db/schema.sql then db/seed.sql (both idempotent), one session at a time."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = '120s'")
            cur.execute("SELECT pg_advisory_lock(hashtext('serverlab-schema'))")
            try:
                for path in (SCHEMA, SEED):
                    cur.execute(path.read_text(encoding="utf-8"))
            finally:
                cur.execute("SELECT pg_advisory_unlock(hashtext('serverlab-schema'))")
    finally:
        conn.close()


def provision(dbname: str | None = None) -> str:
    """Make a ready database and return its URL: the one call tests and `make up` use.

    LAB_DATABASE_URL set: use that database as is (dbname is ignored), apply schema and seed.
    Otherwise: start the embedded server, create `dbname` (default serverlab), apply schema and seed.
    """
    external = os.environ.get("LAB_DATABASE_URL")
    if external:
        url, hint = external, "check that server, or unset LAB_DATABASE_URL to use the embedded PostgreSQL"
        say(f"using LAB_DATABASE_URL={redact(url)}")
    else:
        cfg = PgConfig.from_env()
        start(cfg)
        url, hint = embedded_url(dbname or "serverlab", cfg.port), f"see {cfg.log_path}"
    try:
        if not external and ensure_database(url, dbname or "serverlab"):
            say(f"created database {dbname or 'serverlab'}")
        apply_schema(url)
    except psycopg2.Error as exc:
        raise PostgresError(f"cannot prepare {redact(url)}: {str(exc).strip()}; {hint}") from exc
    say(f"applied schema and seed to {redact(url)}")
    return url


def add_home_flag(parser: argparse.ArgumentParser) -> None:
    """--pg-home DIR: sets LAB_PG_HOME for this command (the module doc says what the home holds)."""
    parser.add_argument("--pg-home", type=_set_home, default=None, metavar="DIR",
                        help="PostgreSQL's home: data, log, binaries copy [LAB_PG_HOME]")


def _set_home(raw: str) -> str:
    os.environ["LAB_PG_HOME"] = raw
    return raw


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab database", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "url", "clean"],
                        help="up: start and provision; down: stop; status: show; url: print the URL; "
                             "clean: stop, then remove the data, log and binaries copy")
    parser.add_argument("--dbname", default=None, help="database to provision with `up` (default serverlab)")
    add_home_flag(parser)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(provision(args.dbname))
        elif args.command == "down":
            if os.environ.get("LAB_DATABASE_URL"):
                say("LAB_DATABASE_URL is set: that server is not the lab's to stop")
            else:
                stop()
        elif args.command == "status":
            if os.environ.get("LAB_DATABASE_URL"):
                print(f"using LAB_DATABASE_URL={redact(database_url())} (the embedded server is not used)")
            now = status()
            print(now.describe())
            return 0 if now.running or os.environ.get("LAB_DATABASE_URL") else 3
        elif args.command == "clean":
            if not os.environ.get("LAB_DATABASE_URL"):
                stop()
                for path in clean():
                    say(f"removed {path}")
        else:
            print(database_url())
    except PostgresError as exc:
        print(f"lab.stack.database: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
