"""The whole stack with one command: `up`, `down`, `status`, `logs`, `clean`.

Backends: `native` (servers as background processes; PostgreSQL embedded, or yours when
LAB_DATABASE_URL is set) and `compose` (docker compose, when a Docker engine answers).
LAB_BACKEND=native|compose forces one. State (pids, ports, backend) lives in one run folder,
LAB_STATE_DIR (default .lab/), so `down` and `status` find what `up` started.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from lab import files
from lab.knobs import SERVER_KNOBS, lab_only_asked  # passed to every server; a change restarts it
from lab.stack import database, pg_config, procs
from servers.settings import DEFAULT_PORTS, MODELS, redact

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"


class StackError(RuntimeError):
    """What went wrong and what to do next."""


def say(message: str) -> None:
    print(f"[lab] {message}", flush=True)


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get("LAB_STATE_DIR") or REPO / ".lab").expanduser().absolute()


def port_of(model: str, env: Mapping[str, str] = os.environ) -> int:
    """LAB_<MODEL>_PORT, else the model's default port (8001-8004)."""
    raw = env.get(f"LAB_{model.upper()}_PORT")
    if not raw:
        return DEFAULT_PORTS[model]
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"LAB_{model.upper()}_PORT={raw!r} is not a port number (1-65535)")
    return int(raw)


def selected(env: Mapping[str, str] = os.environ) -> list[str]:
    raw = env.get("LAB_SERVERS", "").strip()
    if not raw or raw == "all":
        return list(MODELS)
    chosen = [m.strip() for m in raw.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MODELS]
    if unknown:
        raise StackError(f"LAB_SERVERS names unknown servers {unknown}; choose from {', '.join(MODELS)}")
    return chosen


def knobs(env: Mapping[str, str] = os.environ, allow_extra_cpu: bool = False) -> dict[str, str]:
    """The server knobs set in `env`; a lab-only one only with its opt-in (else StackError)."""
    try:
        asked = lab_only_asked(env, allow_extra_cpu)
    except ValueError as exc:
        raise StackError(str(exc)) from None
    return {**{k: env[k] for k in SERVER_KNOBS if env.get(k)}, **asked}


# --- state ----------------------------------------------------------------------------------


@dataclass
class ServerRecord:
    model: str
    pid: int
    port: int
    started: float  # process create_time, so a reused pid is never mistaken for ours
    log: str
    knobs: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return abs(proc.create_time() - self.started) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


@dataclass
class State:
    backend: str = ""
    database: str = ""  # "embedded", "external" or "compose"
    database_url: str = ""
    servers: dict[str, ServerRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> State:
        path = folder / "state.json"
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        servers = {m: ServerRecord(**r) for m, r in data.pop("servers", {}).items()}
        return cls(servers=servers, **data)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        files.write_json(folder / "state.json", asdict(self), indent=2)


# --- backend choice -------------------------------------------------------------------------


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def choose_backend(env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(backend, why) where backend is native or compose."""
    forced = env.get("LAB_BACKEND", "").strip()
    if forced not in ("", "native", "compose"):
        raise StackError(f"LAB_BACKEND={forced!r}: use native or compose (or leave it unset to choose)")
    if forced == "compose":
        if not docker_answers():
            raise StackError("LAB_BACKEND=compose but no Docker engine answers (`docker info` failed); "
                             "start Docker, or unset LAB_BACKEND to run natively")
        return "compose", "LAB_BACKEND=compose"
    if forced == "native":
        return "native", "LAB_BACKEND=native"
    if env.get("LAB_DATABASE_URL"):
        return "native", "LAB_DATABASE_URL is set: your PostgreSQL, servers as local processes"
    if docker_answers():
        return "compose", "a Docker engine answers"
    return "native", "no Docker engine answers: embedded PostgreSQL and servers as local processes"


# --- up -------------------------------------------------------------------------------------


def up(env: Mapping[str, str] = os.environ, allow_extra_cpu: bool = False) -> int:
    wanted = knobs(env, allow_extra_cpu)  # refuses a lab-only knob before anything starts
    if env.get("LAB_ABLATE", "").strip():
        raise StackError(f"LAB_ABLATE={env['LAB_ABLATE']!r} switches the servers' guarantees off, for "
                         "`make bench --ablation` only; `make up` starts servers with all of them: "
                         "unset LAB_ABLATE and run it again")
    backend, why = choose_backend(env)
    say(f"backend: {backend} ({why})")
    models = selected(env)
    if backend == "compose":
        if set(wanted) - set(SERVER_KNOBS):
            raise StackError("the compose stack does not pass lab-only knobs to its servers; run natively "
                             "(LAB_BACKEND=native) to start servers with them")
        return _compose_up(models, env)
    return _native_up(models, env, wanted)


def _native_up(models: list[str], env: Mapping[str, str], wanted: dict[str, str]) -> int:
    folder = state_dir(env)
    logs = folder / "logs"
    state = State.load(folder)
    external = bool(env.get("LAB_DATABASE_URL"))
    db_was_running = external or database.is_running()
    started: list[procs.ServerProcess] = []
    _check_ports(models, state, env)
    try:
        url = database.provision()
        state.backend, state.database_url = "native", url
        state.database = "external" if external else "embedded"
        state.save(folder)
        for model in models:
            port = port_of(model, env)
            record = state.servers.get(model)
            if record and record.alive():
                if record.knobs == wanted and record.port == port and _healthy(record.url):
                    say(f"{model}: already running and healthy (pid {record.pid}), left as is")
                    continue
                say(f"{model}: settings changed since it started ({_diff(record.knobs, wanted)}), restarting")
                stop_record(record)
                del state.servers[model]
                state.save(folder)
            say(f"{model}: starting on 127.0.0.1:{port} (log {logs / (model + '.log')}) ...")
            proc = procs.start_server(model, port=port, database_url=url, log_dir=logs, env=wanted)
            started.append(proc)
            state.servers[model] = ServerRecord(model, proc.pid, port, psutil.Process(proc.pid).create_time(),
                                                str(proc.log_path), wanted)
            state.save(folder)
    except (procs.StartError, pg_config.PostgresError, StackError) as exc:
        print(f"\nmake up failed: {exc}", file=sys.stderr)
        _undo(started, state, folder, stop_db=not db_was_running)
        return 1
    except BaseException:
        _undo(started, state, folder, stop_db=not db_was_running)
        raise
    print()
    print(table(state, models))
    print(f"\nlogs: {logs}/<server>.log (make logs); state: {folder}/state.json; stop with `make down`")
    return 0


def _check_ports(models: list[str], state: State, env: Mapping[str, str]) -> None:
    """Fail before starting anything when a port is held by something that is not our server."""
    for model in models:
        port = port_of(model, env)
        record = state.servers.get(model)
        if record and record.alive() and record.port == port:
            continue
        if procs.port_in_use(port):
            raise StackError(f"{model}: port {port} on 127.0.0.1 is already in use{procs.port_user(port)}; "
                             f"set LAB_{model.upper()}_PORT to a free port, or stop the program holding it")


def _undo(started: list[procs.ServerProcess], state: State, folder: Path, stop_db: bool) -> None:
    """After a failed up: stop what this call started, so nothing is left half-running."""
    for proc in started:
        say(f"stopping {proc.model} (pid {proc.pid}) started by this failed up")
        procs.stop_server(proc)
        state.servers.pop(proc.model, None)
    if stop_db and state.database != "external":
        try:
            database.stop()
        except pg_config.PostgresError as exc:
            print(f"also: {exc}", file=sys.stderr)
    if not state.servers:
        state = State()
    state.save(folder)


def _diff(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    keys = sorted(set(old) | set(new))
    changes = [f"{k} {old.get(k, 'default')} -> {new.get(k, 'default')}"
               for k in keys if old.get(k) != new.get(k)]
    return ", ".join(changes) or "port or health"


def _healthy(url: str) -> bool:
    try:
        return procs.get(url + "/health", timeout=2.0)[0] == 200
    except OSError:
        return False


def _config(url: str) -> dict[str, Any]:
    try:
        status, body = procs.get(url + "/config", timeout=2.0)
        return json.loads(body) if status == 200 else {}
    except (OSError, ValueError):
        return {}


def table(state: State, models: Sequence[str] | None = None) -> str:
    """One line per server: model, URL, pid, pool size, max in-flight, workers (from /config)."""
    rows = [("server", "model", "url", "pid", "pool size", "max in-flight", "workers", "health")]
    models = models or list(state.servers)
    for model in models:
        rec = state.servers.get(model)
        if rec is None:
            rows.append((model, "", "", "", "", "", "", "not started"))
            continue
        alive = rec.alive() if state.backend == "native" else True
        cfg = _config(rec.url) if alive else {}
        health = ("healthy" if _healthy(rec.url) else "UNHEALTHY") if alive else "NOT RUNNING"
        rows.append((model, _MODEL_TEXT[model], rec.url, str(rec.pid) if rec.pid else "-",
                     str(cfg.get("pool_size", "?")), str(cfg.get("max_inflight", "?")),
                     str(cfg.get("workers", "?")), health))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    db = f"database: {state.database} {redact(state.database_url) if state.database_url else ''}"
    return "\n".join([*lines, db.rstrip()])


_MODEL_TEXT = {
    "threaded": "thread per connection",
    "gevent": "greenlet per connection",
    "asyncio": "one event loop",
    "multiproc": "processes x event loops",
}


# --- down, status, logs, clean --------------------------------------------------------------


def stop_record(record: ServerRecord, timeout: float | None = None) -> None:
    if timeout is None:
        timeout = float(os.environ.get("LAB_STOP_TIMEOUT", "15"))
    if not record.alive():
        return
    procs.stop_pid(record.pid, record.model, timeout)
    say(f"{record.model}: stopped (pid {record.pid})")


def down(env: Mapping[str, str] = os.environ) -> int:
    folder = state_dir(env)
    state = State.load(folder)
    if state.backend == "compose":
        _compose(["down"], env)
    else:
        for record in list(state.servers.values()):
            stop_record(record)
        if state.database != "external" and not env.get("LAB_DATABASE_URL"):
            database.stop()
    if not state.servers and not state.backend:
        say("nothing of the lab was running")
    State().save(folder)
    return 0


def status(env: Mapping[str, str] = os.environ) -> int:
    state = State.load(state_dir(env))
    if not state.backend:
        say("nothing is running: start the stack with `make up`")
        return 3
    say(f"backend: {state.backend}")
    print(table(state))
    if state.database == "embedded":
        print(database.status().describe())
    healthy = all(r.alive() and _healthy(r.url) for r in state.servers.values())
    return 0 if healthy else 1


def logs(env: Mapping[str, str] = os.environ, follow: bool = True, lines: int = 50) -> int:
    folder = state_dir(env)
    state = State.load(folder)
    if state.backend == "compose":
        return _compose(["logs", "--tail", str(lines), *(["-f"] if follow else [])], env)
    files = sorted((folder / "logs").glob("*.log"))
    pg_log = pg_config.PgConfig.from_env().log_path
    if pg_log.exists():
        files.append(pg_log)
    if not files:
        say(f"no logs in {folder / 'logs'} yet: start the stack with `make up`")
        return 3
    cmd = ["tail", "-n", str(lines), *(["-F"] if follow else []), *map(str, files)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def clean(env: Mapping[str, str] = os.environ) -> int:
    """Stop everything, then remove the database data and the run folder (never reports/)."""
    down(env)
    folder = state_dir(env)
    try:
        removed = database.clean(pg_config.PgConfig.from_env(env))
    except pg_config.PostgresError as exc:
        raise StackError(str(exc)) from None
    for path in removed:
        say(f"removed {path}")
    if folder.exists():
        shutil.rmtree(folder)
        say(f"removed {folder}")
    return 0


# --- compose --------------------------------------------------------------------------------


def _compose(args: Sequence[str], env: Mapping[str, str]) -> int:
    cmd = ["docker", "compose", "-f", str(COMPOSE_FILE), *args]
    say("$ " + " ".join(cmd))
    return subprocess.call(cmd, env=dict(env), cwd=REPO)


def _compose_up(models: list[str], env: Mapping[str, str]) -> int:
    code = _compose(["up", "-d", "--build", "--wait", "postgres", *models], env)
    if code != 0:
        print(f"docker compose up failed (exit {code}); see `docker compose logs`, or force the native "
              "backend with LAB_BACKEND=native", file=sys.stderr)
        return code
    folder = state_dir(env)
    pg_port = env.get("LAB_PG_PORT", str(pg_config.DEFAULT_PORT))
    state = State("compose", "compose", f"postgresql://serverlab@127.0.0.1:{pg_port}/serverlab")
    for model in models:
        port = port_of(model, env)
        state.servers[model] = ServerRecord(model, 0, port, time.time(), "docker compose logs " + model)
    state.save(folder)
    print(table(state, models))
    return 0
