"""Where the lab's PostgreSQL lives and how it is reached: its knobs, home, binaries, URLs and errors."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from lab import knobs
from servers.settings import DEFAULT_DATABASE_URL

REPO = Path(__file__).resolve().parents[2]
PG_SYSTEM_USER = "serverlab-pg"  # runs the server when the lab runs as root
HOMES = Path("/var/lib/serverlab")  # PostgreSQL homes of clones serverlab-pg cannot enter
COPY = "pgserver-copy"  # the home's copy of pgserver's binaries, laid out as in site-packages
DEFAULT_PORT = 54320
DEFAULT_MAX_CONNECTIONS = 300


class PostgresError(RuntimeError):
    """Provisioning failed; the message says why and what to read or do next."""


def say(message: str) -> None:
    """A progress line for the person waiting (stderr, so `url` output stays clean)."""
    print(f"[postgres] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class PgConfig:
    bin_dir: Path
    data_dir: Path
    port: int = DEFAULT_PORT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    home: Path | None = None  # None: the data dir's parent
    home_reason: str = ""  # why the home is not the run folder ("" when it is)
    listen: str = "127.0.0.1"  # listen_addresses; a test host's address when it runs on one
    netns: str | None = None  # the test host's network namespace it runs in (None: this machine's)
    trust_subnet: str | None = None  # also trust connections from this subnet (the test hosts')

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> PgConfig:
        port = _int_env("LAB_PG_PORT", DEFAULT_PORT, 1, 65535, env)
        max_conn = _int_env("LAB_PG_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, 1, 10_000, env)
        home, reason = pg_home(env)
        data = Path(env.get("LAB_PG_DATA") or home / "pgdata").expanduser().absolute()
        return cls(bin_dir=_bin_dir(env), data_dir=data, port=port, max_connections=max_conn, home=home,
                   home_reason=reason)

    @property
    def home_dir(self) -> Path:
        return self.home or self.data_dir.parent

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    @property
    def lock_path(self) -> Path:
        return self.data_dir.parent / f".{self.data_dir.name}.lock"

    def exe(self, name: str) -> str:
        return str(self.bin_dir / name)


def _int_env(name: str, default: int, low: int, high: int, env: Mapping[str, str] = os.environ) -> int:
    try:
        value = knobs.integer(env.get(name), name, low, high)
    except ValueError as exc:
        raise PostgresError(str(exc)) from None
    return default if value is None else value


def pg_home(env: Mapping[str, str] = os.environ) -> tuple[Path, str]:
    """(the PostgreSQL home, why it is not the run folder or "" when it is); lab/stack/database.py's
    docstring says what the home holds and when it moves."""
    raw = env.get("LAB_PG_HOME")
    if raw:
        return Path(raw).expanduser().absolute(), f"LAB_PG_HOME={raw}"
    state = Path(env.get("LAB_STATE_DIR") or REPO / ".lab").expanduser().absolute()
    closed = _closed_to_others(state) if os.geteuid() == 0 else None
    if closed is None:
        return state, ""
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
    mode = stat.filemode(closed.stat().st_mode)
    return HOMES / digest, f"{PG_SYSTEM_USER} cannot enter {closed} (mode {mode})"


def _closed_to_others(path: Path) -> Path | None:
    """The first existing directory on the way to `path` that other users may not enter, if any."""
    for step in [*reversed(path.parents), path]:
        if not step.exists():
            return None
        if not step.stat().st_mode & stat.S_IXOTH:
            return step
    return None


def _bin_dir(env: Mapping[str, str] = os.environ) -> Path:
    raw = env.get("LAB_PG_BIN")
    if raw:
        path = Path(raw).expanduser().absolute()
        source = f"LAB_PG_BIN={raw}"
    else:
        # Locate pgserver's binaries without importing it (its import has side effects).
        spec = importlib.util.find_spec("pgserver")
        if spec is None or not spec.submodule_search_locations:
            raise PostgresError(
                "no PostgreSQL binaries: install the `pgserver` package (`pip install pgserver`, part of "
                "serverlab's dependencies), set LAB_PG_BIN to a PostgreSQL bin dir "
                "(e.g. /usr/lib/postgresql/15/bin), or set LAB_DATABASE_URL to an existing server"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        source = "the pgserver package"
    missing = [n for n in ("initdb", "pg_ctl", "postgres") if not (path / n).is_file()]
    if missing:
        raise PostgresError(f"{path} (from {source}) lacks {', '.join(missing)}: not a PostgreSQL bin dir")
    return path


def embedded_url(dbname: str = "serverlab", port: int | None = None) -> str:
    """URL of a database on the embedded server (port: LAB_PG_PORT, default 54320)."""
    if port is None:
        port = _int_env("LAB_PG_PORT", DEFAULT_PORT, 1, 65535)
    return with_database(DEFAULT_DATABASE_URL, dbname).replace(f":{DEFAULT_PORT}/", f":{port}/", 1)


def database_url() -> str:
    """LAB_DATABASE_URL when set, else the embedded server's `serverlab` database."""
    return os.environ.get("LAB_DATABASE_URL") or embedded_url()


def with_database(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))
